"""The Training panel's Qt-free worker logic: helpers, a run with Qt blocked, and the thread count it leaves the GUI."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.jobs import training as training_worker
from diffusion_studio.jobs.training import (
    LossHistory, RunHandle, RunRequest, bucket_edges, format_duration, leave_a_core_to_the_gui, progress_text,
    runs_dir, training_run,
)


def in_thread(fn):
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(result=fn()))
    th.start()
    th.join()
    return out["result"]


def test_one_thread_fewer_than_the_cores_and_a_short_switch_interval(monkeypatch):
    switch = sys.getswitchinterval()
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    try:
        sys.setswitchinterval(0.005)

        def probe():
            torch.set_num_threads(4)
            restore = leave_a_core_to_the_gui()
            during = torch.get_num_threads(), sys.getswitchinterval()
            restore()
            return during, torch.get_num_threads(), sys.getswitchinterval()

        (during, interval), after, restored = in_thread(probe)
        assert during == 3 and interval <= 0.001
        assert after == 4 and restored == 0.005  # both put back when the run ends
        # a count the user (or a test) already lowered is kept, and stays after
        assert in_thread(lambda: (torch.set_num_threads(2), leave_a_core_to_the_gui()(), torch.get_num_threads())[2]) \
            == 2
        monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one core: nothing to leave
        assert in_thread(lambda: (torch.set_num_threads(1), leave_a_core_to_the_gui(), torch.get_num_threads())[2]) == 1
    finally:
        sys.setswitchinterval(switch)


def test_a_training_run_restores_the_thread_count(monkeypatch, tmp_path):
    switch = sys.getswitchinterval()
    seen: list[int] = []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    real_step = training_worker.Trainer.train_step

    def spy(self):
        seen.append(torch.get_num_threads())
        return real_step(self)

    monkeypatch.setattr(training_worker.Trainer, "train_step", spy)
    req = RunRequest("builtin:digits", 8, "tiny", NoiseSchedule.create("linear", 20),
                     TrainConfig(steps=2, batch_size=4, device="cpu"), out=tmp_path / "checkpoint.json")

    def run():
        torch.set_num_threads(2)
        list(training_run(req, RunHandle()))
        return torch.get_num_threads()

    try:
        assert in_thread(run) == 2 and seen == [1, 1]
    finally:
        sys.setswitchinterval(switch)


@pytest.mark.parametrize("T, nb", [(50, 10), (1000, 10), (7, 3), (5, 10)])
def test_bucket_edges_match_the_trainers_bucketing(T, nb):
    edges = bucket_edges(T, nb)
    assert edges[0] == 0 and edges[-1] == T and len(edges) == nb + 1
    for i in range(T):  # schedule index i is the paper's t = i + 1, in bucket (i * nb) // T
        b = (i * nb) // T
        assert edges[b] < i + 1 <= edges[b + 1]


def test_loss_history_grows_and_smooths():
    h = LossHistory(weight=0.5)
    for k in range(1, 3000):
        h.append(k, 1.0)
    assert len(h) == 2999 and h.steps[-1] == 2999 and np.allclose(h.smooth, 1.0)
    h2 = LossHistory(weight=0.5)
    h2.append(1, 4.0)
    h2.append(2, 2.0)
    assert h2.smooth[0] == 4.0 and h2.smooth[1] == pytest.approx((0.25 * 4 + 0.5 * 2) / 0.75)


def test_runs_dir_and_new_run_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFUSION_STUDIO_RUNS", raising=False)
    assert runs_dir(str(tmp_path / "s")) == tmp_path / "s"
    assert runs_dir("") == Path.home() / "DiffusionStudio" / "runs"
    monkeypatch.setenv("DIFFUSION_STUDIO_RUNS", str(tmp_path / "e"))
    assert runs_dir(str(tmp_path / "s")) == tmp_path / "e"
    import datetime as dt

    from diffusion_studio.jobs.session import new_named_run_dir

    now = dt.datetime(2024, 5, 6, 7, 8, 9)
    a, b = new_named_run_dir(tmp_path / "r", "digits", now), new_named_run_dir(tmp_path / "r", "digits", now)
    assert a.name == "20240506-070809-digits" and b.name == "20240506-070809-digits-2" and a.is_dir() and b.is_dir()
    assert format_duration(75) == "01:15" and format_duration(3725) == "1:02:05" and format_duration(None) == "—"
    assert progress_text(5, 10, 123.4, 61) == "step 5 / 10 · 123 img/s · ETA 01:01"


QT_FREE_RUN = r"""
import sys
for blocked in ("PySide6", "shiboken6", "pyqtgraph"):
    sys.modules[blocked] = None  # any import of these now raises ImportError
import torch
torch.set_num_threads(1)
from pathlib import Path
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.trainer import TrainConfig, TrainEvent
from diffusion_studio.jobs.training import RunHandle, RunRequest, RunStarted, training_run

out = Path(sys.argv[1]) / "checkpoint.json"
req = RunRequest("builtin:digits", 8, "tiny", NoiseSchedule.create("linear", 20),
                 TrainConfig(steps=2, batch_size=4, device="cpu"), out=out)
handle = RunHandle()
items = list(training_run(req, handle))
assert isinstance(items[0], RunStarted) and [e.step for e in items[1:]] == [1, 2]
assert all(isinstance(e, TrainEvent) for e in items[1:])
assert handle.saved_path == out and handle.saved_step == 2 and handle.model is not None
print("ok")
"""


def test_the_training_generator_runs_without_qt(tmp_path):
    """The worker's logic is Qt-free: it imports and trains with PySide6/pyqtgraph unavailable."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", QT_FREE_RUN, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert load_checkpoint(tmp_path / "checkpoint.json").step == 2
