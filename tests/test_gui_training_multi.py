"""The Training tab's "Use all N GPUs": offered only with more than one GPU; runs the CLI's --nproc launch."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.trainer import TrainEvent
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.gui.panels.training import multi as training_multi
from diffusion_studio.jobs.training import RunHandle, RunRequest


@pytest.mark.parametrize("count", [0, 1, 4])
def test_offered_only_with_several_gpus(qtbot, monkeypatch, count):
    from PySide6.QtWidgets import QCheckBox

    from diffusion_studio.gui.panels.training.form import TrainingForm

    monkeypatch.setattr(training_multi, "gpu_count", lambda: count)
    form = TrainingForm()
    qtbot.addWidget(form)
    box = form.findChild(QCheckBox, "multiGpuCheck")
    if count <= 1:  # one device (or none): the form is exactly as before
        assert box is None and form.multi_gpu_check is None
        assert training_multi.chosen_nproc(form.multi_gpu_check) == 1
        return
    assert box is form.multi_gpu_check and box.text() == "Use all 4 GPUs"
    assert training_multi.chosen_nproc(box) == 1  # offered, not imposed
    box.setChecked(True)
    assert training_multi.chosen_nproc(box) == 4


def _request(out: Path, steps: int = 3) -> RunRequest:
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, ema_decay=0.99, device="cpu", precision="fp32",
                      checkpoint_every=0)
    return RunRequest("builtin:digits", 8, "tiny", NoiseSchedule.create("linear", 50, beta_end=0.03), cfg,
                      out=out / "checkpoint.json")


def test_the_launch_is_the_clis_train_with_the_forms_settings(tmp_path):
    cmd = training_multi.train_command(_request(tmp_path / "run"), 4, python="PY")
    assert cmd[:4] == ["PY", "-m", "diffusion_studio", "train"]
    args = dict(zip(cmd[4::1], cmd[5::1]))
    assert args["--nproc"] == "4" and args["--out"] == str(tmp_path / "run")
    assert args["--data"] == "builtin:digits" and args["--size"] == "8" and args["--model"] == "tiny"
    assert args["--batch"] == "4" and args["--steps"] == "3" and args["--log-every"] == "1"
    assert args["--schedule"] == "linear" and args["--T"] == "50" and float(args["--beta-end"]) == 0.03
    assert args["--lr-schedule"] == "constant" and args["--warmup"] == str(_request(tmp_path).config.warmup_steps)
    timed = _request(tmp_path / "run")
    timed.config.steps, timed.config.minutes = None, 2.5
    timed_cmd = training_multi.train_command(timed, 2)
    assert "--steps" not in timed_cmd and timed_cmd[timed_cmd.index("--minutes") + 1] == "2.5"
    from diffusion_studio.cli import build_parser

    parsed, _ = build_parser("train")[0].parse_known_args(cmd[3:])
    assert parsed.nproc == 4 and parsed.beta_end == 0.03  # the CLI accepts every option the GUI passes


@pytest.mark.slow
def test_two_process_run_streams_rank_0s_steps_and_hands_over_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    req = _request(tmp_path / "run")
    handle = RunHandle()
    events = list(training_multi.multi_gpu_run(req, handle, 2))
    assert all(isinstance(e, TrainEvent) for e in events)
    assert [e.step for e in events] == [1, 2, 3] and events[-1].done
    assert handle.saved_path == req.out and handle.saved_step == 3
    assert handle.model is not None and handle.checkpoint.step == 3


@pytest.mark.slow
def test_stop_interrupts_every_process_and_keeps_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    req = _request(tmp_path / "run", steps=100_000)
    handle = RunHandle()
    seen = []
    for ev in training_multi.multi_gpu_run(req, handle, 2):
        seen.append(ev.step)
        if len(seen) == 3:
            threading.Timer(0.0, handle.cancel.set).start()
    assert handle.saved_path == req.out and handle.saved_step >= 3
