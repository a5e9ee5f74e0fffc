"""Diffusion Studio: see DDPM happen — forward noising, schedules, training and reverse sampling."""

import os as _os

__version__ = "0.1.0"

# Before torch loads OpenMP: idle worker threads sleep instead of spinning. Spinning threads made training 10-20x slower
# whenever another thread or process wanted the same cores (the GUI thread, a second app, a test runner).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
