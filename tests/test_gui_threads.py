"""The training thread leaves a core to the GUI thread (bench/bench_gui.py) and gives it back when the run ends."""
from __future__ import annotations

import os
import sys
import threading

import torch

from diffusion_studio.core.schedule import NoiseSchedule
from diffusion_studio.core.training import TrainConfig
from diffusion_studio.gui.panels import training_worker
from diffusion_studio.gui.panels.training_worker import RunHandle, RunRequest, leave_a_core_to_the_gui, training_run


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
        def probe():
            torch.set_num_threads(4)
            before = leave_a_core_to_the_gui()
            return before, torch.get_num_threads(), sys.getswitchinterval()

        before, during, interval = in_thread(probe)
        assert (before, during) == (4, 3) and interval <= 0.001
        # a count the user (or a test) already lowered is kept, and nothing is to be restored
        assert in_thread(lambda: (torch.set_num_threads(2), leave_a_core_to_the_gui(), torch.get_num_threads())[1:]) \
            == (None, 2)
        monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one core: nothing to leave
        assert in_thread(lambda: (torch.set_num_threads(1), leave_a_core_to_the_gui())[1]) is None
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
