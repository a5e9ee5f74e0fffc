"""`python -m diffusion_studio [COMMAND ...]`: the same as the `diffusion-studio` console script."""
from .cli import main

raise SystemExit(main())
