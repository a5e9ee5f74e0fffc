"""GUI responsiveness: how late a 10 ms QTimer fires in the real window while nothing runs, while the Training panel
trains, and while the Sampling panel samples.

Run by hand (not a test):  python bench/bench_gui.py          (about 1.5 minutes; --seconds 5 to smoke-test)
A precise 10 ms QTimer on the GUI thread records when it fires; lateness = (interval between two firings) − 10 ms,
reported as p50 / p99 / max over ``--seconds`` per phase. Training: builtin:digits 16 px, tiny, batch 64, the form's
other defaults (preview every 100 steps), started with the Start button's slot. Sampling: the model the run just saved,
DDIM-50 for 16 images (the panel's defaults), restarted until the phase ends. Goal (issue "Fast"): p99 ≤ 50 ms.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (close_window, footer, header, make_window, save_json, start_gui_training, stats,  # noqa: E402
                    stop_gui_training, wait_until)

GOAL_P99_S = 0.050
INTERVAL_MS = 10


def timer_lateness(app, seconds: float, during=None) -> dict:
    """Run the event loop for ``seconds`` with a 10 ms PreciseTimer; ``during()`` is called on every tick."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    stamps: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(INTERVAL_MS)

    def tick():
        stamps.append(time.perf_counter())
        if during is not None:
            during()

    timer.timeout.connect(tick)
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    late = [max(0.0, (b - a) - INTERVAL_MS / 1000) for a, b in zip(stamps, stamps[1:])]
    s = stats(late)
    s["ticks"] = len(stamps)
    return s


def show(name: str, s: dict, extra: str = "") -> None:
    ok = "met" if s["p99"] <= GOAL_P99_S else "NOT met"
    print(f"   {name:34s} p50 {s['median'] * 1e3:6.1f} ms  p99 {s['p99'] * 1e3:6.1f} ms  max {s['max'] * 1e3:6.1f} ms"
          f"  ({s['ticks']} ticks) p99 ≤ 50 ms: {ok}{extra}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="of the training run")
    ap.add_argument("--json")
    args = ap.parse_args()
    info = header(f"bench_gui: lateness of a {INTERVAL_MS} ms QTimer in the real window (offscreen)")
    result: dict = {"machine": info}
    with tempfile.TemporaryDirectory() as tmp:
        app, win = make_window(Path(tmp))
        try:
            win.tabs.setCurrentWidget(win.training)
            app.processEvents()
            result["idle"] = s = timer_lateness(app, args.seconds)
            show("idle", s)

            events = start_gui_training(win, precision=args.precision)
            n0 = len(events)
            result["training"] = s = timer_lateness(app, args.seconds)
            steps = len(events) - n0
            s["steps"] = steps
            show("training (Training tab shown)", s, f"; {steps} steps, {steps * 64 / args.seconds:.0f} img/s")
            stop_gui_training(win)
            wait_until(lambda: win.state.model is not None, 60, "the trained model to load for sampling")

            panel = win.sampling
            win.tabs.setCurrentWidget(panel)
            wait_until(lambda: panel.loaded is not None, 60, "the Sampling panel to adopt the model")
            runs = [0]

            def keep_sampling():
                if not panel.running:
                    panel.start()
                    runs[0] += 1

            result["sampling"] = s = timer_lateness(app, args.seconds, during=keep_sampling)
            s["runs"] = runs[0]
            panel.stop()
            wait_until(lambda: not panel.running, 60, "sampling to stop")
            show("sampling (Sampling tab shown)", s, f"; {runs[0]} runs of DDIM-{panel.controls.job().steps}")
        finally:
            close_window(app, win)
    footer()
    save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
