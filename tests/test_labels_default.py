"""Labelled pixel images train class-conditional unless told otherwise (issue 25): the CLI and the Training tab both
condition a new run on builtin:digits' / builtin:mnist's / a class-folder's labels and say so; --unconditional (the
box unticked) ignores them; captions, latent runs and unlabelled data never get labels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.train.recipe import conditions_on_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT = ["--size", "8", "--T", "20", "--steps", "2", "--batch", "8", "--preview-every", "0", "--quiet"]


def test_the_rule():
    assert conditions_on_labels(10) and conditions_on_labels(2)
    assert not conditions_on_labels(None) and not conditions_on_labels(1)  # one class is no condition at all
    assert not conditions_on_labels(10, text=True) and not conditions_on_labels(10, latent=True)


def _train(tmp_path, capsys, name, *extra):
    code = cli.main(["train", *extra, *SHORT, "--out", str(tmp_path / name)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return load_checkpoint(tmp_path / name), out.out


def test_cli_conditions_on_labels_by_default(tmp_path, capsys):
    ckpt, said = _train(tmp_path, capsys, "digits", "--data", "builtin:digits")
    assert ckpt.model_config.num_classes == 10 and ckpt.meta["train"]["class_conditional"] is True
    assert "conditioned on the data's 10 classes" in said and "--unconditional ignores them" in said
    plain, said = _train(tmp_path, capsys, "plain", "--data", "builtin:digits", "--unconditional")
    assert plain.model_config.num_classes is None and "conditioned on" not in said
    # a resumed run keeps its choice: --unconditional on a class-conditional run is refused in one line
    code = cli.main(["train", "--out", str(tmp_path / "digits"), "--resume", "--steps", "3", "--unconditional"])
    assert code == 2 and "--unconditional: the run was trained with class conditioning" in capsys.readouterr().err
    code = cli.main(["train", "--data", "builtin:digits", "--class-conditional", "--unconditional", *SHORT,
                     "--out", str(tmp_path / "both")])
    assert code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_unlabelled_folders_stay_unconditional_and_class_folders_do_not(tmp_path, capsys):
    rng = np.random.default_rng(0)
    flat, classes = tmp_path / "flat", tmp_path / "classes"
    for k in range(8):
        picture = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        flat.mkdir(exist_ok=True)
        picture.save(flat / f"{k}.png")
        (classes / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        picture.save(classes / f"c{k % 2}" / f"{k}.png")
    ckpt, said = _train(tmp_path, capsys, "flat-run", "--data", str(flat))
    assert ckpt.model_config.num_classes is None and "conditioned on" not in said
    ckpt, said = _train(tmp_path, capsys, "class-run", "--data", str(classes))
    assert ckpt.model_config.num_classes == 2 and "2 classes" in said


def test_training_tab_conditions_on_labels_unless_unticked(tmp_path, qtbot, settings, monkeypatch):
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.core.io.space import PixelSpace
    from diffusion_studio.data import load_dataset
    from diffusion_studio.gui.panels.training.panel import TrainingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool
    from diffusion_studio.jobs.training import labels_to_condition_on

    monkeypatch.setenv("DIFFUSION_STUDIO_RUNS", str(tmp_path / "runs"))
    state = AppState(device="cpu")
    state.set_schedule(NoiseSchedule.create("linear", 20))
    pool = WorkerPool()
    panel = TrainingPanel(state, pool, settings)
    qtbot.addWidget(panel)
    try:
        f = panel.form
        f.set_dataset_spec("builtin:digits")
        row = f.labels_row
        assert row.check.isChecked() and "one of each class" in row.note.text()
        runs = []
        for ticked in (True, False):
            row.check.setChecked(ticked)
            req = panel.build_request()
            assert req.config.class_conditional is ticked
            runs.append(labels_to_condition_on(req, load_dataset("builtin:digits", 8), PixelSpace()))
        assert runs == [10, None]
        assert "no class" in row.note.text()
        f.set_dataset_spec("builtin:shapes")
        row.check.setChecked(True)
        assert "no labels" in row.note.text()
    finally:
        panel.shutdown()
        assert pool.shutdown(timeout_ms=20_000)
