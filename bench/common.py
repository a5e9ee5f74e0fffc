"""Shared helpers for the hand-run benchmarks: warm-up + repeats, median/p99, and a description of the machine.

Benchmarks compare figures taken in ONE run on ONE machine (ratios), never absolute times in a test suite. A figure
taken while other processes compete for the cores is worthless, so every script prints the load average it started
and ended with, and ``quiet_check`` warns when the machine is busy.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---- timing ----------------------------------------------------------------------------------------------------------
def timeit(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls, after ``warmup`` untimed ones. ``sync`` (e.g.
    torch.cuda.synchronize) is called before each clock read, so asynchronous work is counted."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t0)
    return out


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation, as numpy's default."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def stats(xs: list[float]) -> dict[str, float]:
    """median, p99, mean, min, max and n of a list of samples (any unit)."""
    return {"median": statistics.median(xs), "p99": percentile(xs, 99), "mean": statistics.fmean(xs),
            "min": min(xs), "max": max(xs), "n": len(xs)}


def ms(x: float) -> str:
    return f"{x * 1e3:.3f} ms" if x < 0.01 else f"{x * 1e3:.1f} ms"


# ---- the machine -----------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_avg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine() -> dict[str, Any]:
    """What a figure needs next to it: date, CPU, cores, accelerator, library versions, threads, load average."""
    import torch

    flags = cpu_flags()
    info: dict[str, Any] = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "amx": "amx_tile" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg": tuple(round(x, 2) for x in load_avg()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def describe(info: dict[str, Any] | None = None) -> str:
    i = info or machine()
    gpu = f", GPU {i['gpu']}" if i.get("gpu") else ", no GPU"
    bf16 = "bf16 instructions" + (" + AMX" if i.get("amx") else "") if i.get("cpu_bf16") else "no bf16 instructions"
    la = ", ".join(f"{x:.2f}" for x in i["load_avg"])
    return (f"{i['date']} · {i['cpu']} ({i['cores']} cores, {bf16}){gpu} · Python {i['python']}, torch {i['torch']}, "
            f"{i['torch_threads']} threads · load average {la}")


def header(title: str) -> dict[str, Any]:
    info = machine()
    print(f"== {title}")
    print(f"   {describe(info)}")
    quiet_check(info)
    return info


def quiet_check(info: dict[str, Any] | None = None, limit: float = 0.5) -> bool:
    """Warn (and return False) when the 1-minute load average says other work competes for the cores."""
    la1 = (info or machine())["load_avg"][0]
    if la1 == la1 and la1 >= limit:  # NaN-safe
        print(f"   WARNING: 1-min load average {la1:.2f} ≥ {limit}: the machine is busy, figures are not comparable")
        return False
    return True


def footer() -> None:
    la = ", ".join(f"{x:.2f}" for x in load_avg())
    print(f"   load average at the end: {la}")


def save_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"   figures written to {path}")


def set_threads(n: int | None) -> None:
    """Use ``n`` intra-op threads (None: torch's default, one per core)."""
    import torch

    if n:
        torch.set_num_threads(int(n))


# ---- the real window, offscreen (bench_scrub, bench_gui) ---------------------------------------------------------------
def qt_app():
    """The QApplication, offscreen unless a display is given (QT_QPA_PLATFORM=xcb under xvfb-run works too)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    def quiet(_mode, _context, message):  # the offscreen plugin's "does not support propagateSizeHints()" spam
        if "propagateSizeHints" not in message:
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(quiet)
    return QApplication.instance() or QApplication([])


def make_window(tmp: Path, width: int = 1600, height: int = 1000):
    """The real MainWindow with its settings and training runs kept under ``tmp`` (never the user's own)."""
    app = qt_app()
    from PySide6.QtCore import QSettings

    os.environ["DIFFUSION_STUDIO_SETTINGS"] = str(tmp / "settings.ini")
    os.environ["DIFFUSION_STUDIO_RUNS"] = str(tmp / "runs")
    from diffusion_studio.gui.main_window import MainWindow

    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("sampling/autostart", False)
    win = MainWindow(settings, device="cpu")
    win.resize(width, height)
    win.show()
    app.processEvents()
    return app, win


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
    """Process Qt events until ``cond()`` holds; raise TimeoutError after ``timeout_s``."""
    from PySide6.QtCore import QCoreApplication, QEventLoop

    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.002)


def start_gui_training(win, steps: int = 1_000_000, size: int = 16, batch: int = 64, precision: str = "auto",
                       preview_every: int = 100, save_every: int = 0, min_events: int = 3, timeout_s: float = 300):
    """Start a run in the Training panel as a user would (builtin:digits, tiny) and wait for its first steps.
    Returns the list the panel's TrainEvents are appended to."""
    panel = win.training
    f = panel.form
    f.set_dataset_spec("builtin:digits")
    f.size_spin.setValue(size)
    f.preset_combo.setCurrentIndex(f.preset_combo.findData("tiny"))
    f.batch_spin.setValue(batch)
    f.steps_spin.setValue(steps)
    f.device_combo.setCurrentIndex(f.device_combo.findData("cpu"))
    f.precision_combo.setCurrentIndex(f.precision_combo.findData(precision))
    f.preview_spin.setValue(preview_every)
    f.save_every_spin.setValue(save_every)
    events: list = []
    panel.event_received.connect(events.append)
    if not panel.start():
        raise RuntimeError(f"the Training panel did not start: {panel.error_label.text()}")
    wait_until(lambda: len(events) >= min_events or not panel.running, timeout_s, "the first training steps")
    if not panel.running:
        raise RuntimeError(f"training ended early: {panel.error_label.text()}")
    return events


def stop_gui_training(win, timeout_s: float = 120) -> None:
    panel = win.training
    if panel.running:
        panel.stop()
        wait_until(lambda: not panel.running, timeout_s, "training to stop")


def close_window(app, win) -> None:
    win.close()
    app.processEvents()
