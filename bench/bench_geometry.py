"""The geometry lab (issue 22): how long the 2-D default recipe takes from the command line, how well its samples land
on toy:8gaussians' modes, and how long the 2-D tab takes to draw a frame.

    python bench/bench_geometry.py            # the three measurements
    python bench/bench_geometry.py --skip-gui

1. `diffusion-studio train --data toy:8gaussians --out RUN` (the whole command, imports included; the issue's target:
   ≤ 60 s on a 2-core CPU), then `sample --n 2000` from it (DDPM, all T steps);
2. the share of the 2,000 samples within 2σ and 3σ (per-axis σ of the modes, so a radius of kσ) of their nearest
   mode — for the data itself that share is 1 − e^{−k²/2}: 86.5 % at 2σ, 98.9 % at 3σ;
3. offscreen, the 2-D tab at 1280×800 with 2,000 points: the median and 95th-percentile milliseconds of a t change
   (the cloud and marginals redrawn) and of one replay frame of 2,000 particles' trails.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402


def cli(*argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffusion_studio.cli", *argv], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def within(points: np.ndarray) -> dict[str, float]:
    from diffusion_studio.data.points import EIGHT_GAUSSIANS_CENTRES, EIGHT_GAUSSIANS_SIGMA

    dist = np.linalg.norm(points[:, None, :] - EIGHT_GAUSSIANS_CENTRES[None], axis=2)
    d, mode = dist.min(1), dist.argmin(1)
    near = d <= 3 * EIGHT_GAUSSIANS_SIGMA
    out = {f"{k}σ": float((d <= k * EIGHT_GAUSSIANS_SIGMA).mean()) for k in (2, 3)}
    out["per mode (3σ)"] = np.bincount(mode[near], minlength=len(EIGHT_GAUSSIANS_CENTRES)).tolist()
    return out


def gui_frames() -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from diffusion_studio.gui.main_window import MainWindow

    settings = QSettings(tempfile.mktemp(suffix=".ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings, device="cpu")
    w.resize(1280, 800)
    w.show()
    g = w.geometry
    w.tabs.setCurrentWidget(g)
    g.source_combo.setCurrentIndex(g.source_combo.findData("toy:8gaussians"))
    app.processEvents()

    def timed(fn, n):
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            app.processEvents()
            g.plots.grab()  # the frame really drawn
            out.append((time.perf_counter() - t0) * 1000)
        return float(np.median(out)), float(np.percentile(out, 95))

    t_med, t_p95 = timed(lambda i: w.state.set_t(50 + 9 * i), 60)
    g.steps_spin.setValue(300)
    g.start_training()
    while g.worker is not None or g.model is None:
        app.processEvents()
        time.sleep(0.02)
    g.particles_spin.setValue(2000)
    g.start_paths()
    while g.path_worker is not None:
        app.processEvents()
        time.sleep(0.02)
    g.timer.stop()
    frames = max(len(r) for r in g.runs.values())

    def frame(i):
        for key, plot in (("sde", g.sde), ("ode", g.ode)):
            plot.show_frame(g.runs[key], i % len(g.runs[key]))
    f_med, f_p95 = timed(frame, min(60, frames))
    w.close()
    app.processEvents()
    return {"t change ms (median)": t_med, "t change ms (p95)": t_p95, "replay frame ms (median)": f_med,
            "replay frame ms (p95)": f_p95}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-gui", action="store_true")
    args = ap.parse_args()
    from common import footer, header

    header("bench_geometry: the 2-D recipe from the command line, its samples on toy:8gaussians, the tab's frames")
    with tempfile.TemporaryDirectory() as tmp:
        run, out = Path(tmp) / "run", Path(tmp) / "out"
        train_s = cli("train", "--data", "toy:8gaussians", "--out", str(run))
        sample_s = cli("sample", "--model", str(run), "--n", "2000", "--out", str(out))
        pts = np.loadtxt(out / "points.csv", delimiter=",", skiprows=1, usecols=(0, 1))
    share = within(pts)
    ref = {f"{k}σ": 1 - math.exp(-k * k / 2) for k in (2, 3)}
    print(f"train     {train_s:6.1f} s (whole command; target ≤ 60 s)")
    print(f"sample    {sample_s:6.1f} s for 2,000 points (DDPM, T steps)")
    for k in ref:
        print(f"within {k}  {share[k]:6.1%} of the samples (the data itself: {ref[k]:.1%})")
    print(f"per mode  {share['per mode (3σ)']} samples within 3σ of each of the 8 modes")
    if not args.skip_gui:
        for k, v in gui_frames().items():
            print(f"{k:26s} {v:7.1f}")
    footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
