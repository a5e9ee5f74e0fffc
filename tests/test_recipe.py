"""One training recipe (core/recipe.py) for the CLI and the GUI, with each dataset's natural size."""
from __future__ import annotations

from pathlib import Path

import pytest

from diffusion_studio.core.train.recipe import RECIPE, SMALL_SIDE, natural_size, recipe_for
from diffusion_studio.core.diffusion.schedule import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What both front ends must agree on: TrainConfig field → recipe key.
SHARED = {"minutes": "minutes", "lr": "lr", "warmup_steps": "warmup", "lr_schedule": "lr_schedule",
          "ema_decay": "ema_decay", "loss_weighting": "loss_weighting", "snr_gamma": "snr_gamma"}


def test_natural_sizes():
    assert natural_size("builtin:digits") == 8  # the 8×8 digits as they are (and the smallest side tiny takes)
    assert natural_size("builtin:shapes") == 32
    assert natural_size("mnist:/somewhere") == 28 and natural_size("cifar10:/x") == 32
    assert natural_size("some/folder", native=30) == 32 and natural_size("some/folder") == 32
    assert natural_size(None) == 32


def test_small_images_get_a_larger_batch_and_learning_rate():
    small, big = recipe_for(SMALL_SIDE), recipe_for(SMALL_SIDE * 2)
    assert big == RECIPE and (small["batch"], small["lr"]) == (2 * RECIPE["batch"], 1.5 * RECIPE["lr"])
    assert (small["model"], RECIPE["model"]) == ("micro", "tiny")
    assert {k: v for k, v in small.items() if k not in ("batch", "lr", "model")} == \
        {k: v for k, v in RECIPE.items() if k not in ("batch", "lr", "model")}


def cli_trainer(tmp_path: Path, *extra: str):
    from diffusion_studio.cli import build_parser
    from diffusion_studio.cli.train_setup import setup_fresh

    parser, _ = build_parser("train")
    args = parser.parse_args(["train", "--data", "builtin:digits", "--out", str(tmp_path / "run"), "--quiet",
                              "--device", "cpu", *extra])
    trainer, _ = setup_fresh(args, tmp_path / "run", tmp_path / "run" / "checkpoint.json")
    return trainer


def form_batch(panel) -> tuple[str, int]:
    """What the Batch box shows, and the batch a run would take."""
    return panel.form.batch_spin.text(), panel.build_request().config.batch_size


def test_cli_and_gui_defaults_are_the_same_recipe(tmp_path, qtbot, settings, monkeypatch):
    from diffusion_studio.gui.panels.training.panel import TrainingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    trainer = cli_trainer(tmp_path)
    cli = trainer.config
    mc = trainer.model.config
    assert cli.steps is None and mc.image_size == 8 and mc.prediction == "eps" and mc.preset == "micro"
    digits = recipe_for(8)
    for field, key in SHARED.items():
        assert getattr(cli, field) == digits[key], field

    state = AppState(device="cpu")
    state.set_schedule(NoiseSchedule.create("linear", 1000))
    pool = WorkerPool()
    panel = TrainingPanel(state, pool, settings)
    qtbot.addWidget(panel)
    try:
        panel.form.set_dataset_spec("builtin:digits")
        req = panel.build_request()
        gui = req.config
        assert gui.steps is None and req.image_size == 8 and req.prediction == "eps"
        for field in SHARED:
            assert getattr(gui, field) == getattr(cli, field), field
        assert req.auto_batch and cli.batch_size == gui.batch_size == digits["batch"] == 128
        assert req.preset == "micro"
        assert cli.class_conditional and gui.class_conditional  # labelled digits: conditioned on their classes
        # 28-px MNIST: its own recipe (micro, batch 128, lr 3e-3: bench/RESULTS.md §12)
        panel.form.set_dataset_spec("builtin:mnist")
        req = panel.build_request()
        assert (req.image_size, req.preset, req.config.batch_size, req.config.lr) == (28, "micro", 128, 0.003)
        # the batch and lr follow the recipe when the size changes, unless the user set their own
        form = panel.form
        assert form_batch(panel) == ("auto (128)", 128)
        form = panel.form
        form.set_dataset_spec("builtin:shapes")
        assert (form.size_spin.value(), form.lr_edit.text(), form_batch(panel)) == (32, "0.002", ("auto (64)", 64))
        assert form.preset_combo.currentData() == "tiny"
        form.lr_edit.setText("5e-4")
        form.set_dataset_spec("builtin:digits")
        assert (form.size_spin.value(), form.lr_edit.text(), form_batch(panel)) == (8, "5e-4", ("auto (128)", 128))
        form.lr_edit.setText("0.003")
        # typing a step count makes it a step-count run; the time budget comes back with its own box
        panel.form.steps_spin.setValue(300)
        req = panel.build_request()
        assert (req.config.steps, req.config.minutes) == (300, None)
        assert not panel.form.minutes_spin.isVisibleTo(panel) or panel.form.length.unit() == "steps"
        panel.form.minutes_spin.setValue(2.5)
        assert (panel.build_request().config.steps, panel.build_request().config.minutes) == (None, 2.5)
        # the seeds' L_simple is one choice away, and so is v-prediction
        combo = panel.form.objective_combo
        combo.setCurrentIndex(combo.findData("eps,uniform"))
        assert panel.build_request().config.loss_weighting == "uniform"
        combo.setCurrentIndex(combo.findData("v,min_snr"))
        assert panel.build_request().prediction == "v"
    finally:
        panel.shutdown()
        assert pool.shutdown(timeout_ms=20_000)


def test_cli_flags_reach_the_trainer(tmp_path):
    tr = cli_trainer(tmp_path, "--steps", "7", "--prediction", "v", "--loss-weighting", "uniform", "--layout", "nchw",
                     "--size", "8")
    assert tr.config.steps == 7 and tr.config.minutes is None
    assert tr.model.config.prediction == "v" and tr.config.loss_weighting == "uniform" and tr.channels_last is False
    assert tr.model.config.image_size == 8


def test_time_budget_decays_the_learning_rate_over_the_run():
    import torch

    from diffusion_studio.core.train.trainer import TensorImages, Trainer
    from diffusion_studio.core.train.config import TrainConfig
    from diffusion_studio.core.nets.unet import UNetConfig

    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                     attn_resolutions=(), groups=8, num_heads=2)
    tr = Trainer(cfg, NoiseSchedule.create("linear", 50), TensorImages(torch.zeros(8, 1, 8, 8)),
                 TrainConfig(steps=None, minutes=1.0, lr=1e-3, warmup_steps=0, lr_schedule="cosine", device="cpu",
                             batch_size=4))
    tr._time_total = 60.0
    lrs = []
    for elapsed in (0.0, 30.0, 60.0, 90.0):
        tr.elapsed_before = elapsed
        lrs.append(tr._lr_at(10))
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(0.55e-3) and lrs[2] == pytest.approx(1e-4)
    assert lrs[3] == pytest.approx(1e-4)  # past the budget it stays at lr/10
