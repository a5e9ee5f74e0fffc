"""`python -m diffusion_studio.cli [COMMAND ...]`: the same as the `diffusion-studio` console script."""
from . import main

raise SystemExit(main())
