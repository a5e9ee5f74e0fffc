"""The real app in a real X window (Xvfb + Qt's xcb plugin): it starts, draws, samples and closes cleanly."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.xvfb


def _xvfb_run() -> str:
    path = shutil.which("xvfb-run")
    if path is None:
        pytest.fail("xvfb-run is missing: install it with 'scripts/install.sh --test' (Debian package xvfb)")
    return path


@pytest.mark.timeout(240)
def test_real_window_under_xvfb_draws_and_closes(tmp_path):
    shot = tmp_path / "window.png"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY")}
    env["QT_QPA_PLATFORM"] = "xcb"
    env["DIFFUSION_STUDIO_RUNS"] = str(tmp_path / "runs")
    cmd = [_xvfb_run(), "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-m", "diffusion_studio",
           "--settings", str(tmp_path / "settings.ini"), "--demo", "--tab", "sampling",
           "--screenshot", str(shot), "--delay", "6000"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, f"app exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "platform xcb" in proc.stdout, proc.stdout  # a real X11 window, not the offscreen plugin
    img = np.asarray(Image.open(shot).convert("RGB"))
    h, w, _ = img.shape
    assert w >= 1000 and h >= 600, (w, h)
    # Not a blank grey window: the panels drew images and plots.
    assert img.std() > 20, img.std()
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500
    # The settings file was written where it was told to, so the user's settings were not touched.
    assert (tmp_path / "settings.ini").exists()
