"""Opens the Diffusion Studio app (the same as `diffusion-studio` with no arguments); arguments are passed on."""
import sys

from diffusion_studio.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
