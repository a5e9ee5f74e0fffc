"""The Sampling tab with a text model (issue 11): prompt box and guidance slider drive real runs; attention maps;
the guidance sweep strip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio import resources
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet
from test_text_core import StubEncoder, tiny_text_config  # registers the stub encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    """An untrained tiny text UNet with randomised weights, so the prompt visibly changes ε_θ."""
    torch.manual_seed(0)
    cfg = tiny_text_config(8)
    model = UNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    meta = {"step": 1, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 50).to_dict(),
            "data": {"spec": "test", "captions": ["blue circle", "red square"],
                     "caption_words": ["blue", "circle", "red", "square"], "text_encoder": StubEncoder.name}}
    return save_checkpoint(tmp_path_factory.mktemp("text") / "text.json", {"ema": dict(model.state_dict())}, meta)


@pytest.fixture
def panel(qtbot, settings, tmp_path, monkeypatch):
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    (tmp_path / "models").mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: tmp_path / "models")
    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=10_000)


def _run(panel, qtbot, prompt: str, w: float):
    panel.prompt_box.set_prompt(prompt)
    panel.prompt_box.guidance_slider.setValue(int(w * 10))
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        panel.sample_button.click()
    assert blocker.args == ["done"]
    assert panel.frames[-1].is_final
    return panel.frames[-1]


def test_prompt_box_and_slider_drive_real_runs_with_attention_maps(panel, qtbot, text_ckpt):
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(text_ckpt)
    box = panel.prompt_box
    assert box.isVisible() and box.prompt == "blue circle"  # ready: its first caption ("a red star" needs "star")
    assert [box.prompt_combo.itemText(i) for i in range(box.prompt_combo.count())] == ["blue circle", "red square"]
    panel.controls.n_spin.setValue(3)
    panel.controls.steps_spin.setValue(6)

    red = _run(panel, qtbot, "red square", 4.5)
    assert (panel.job.prompt, panel.job.guidance) == ("red square", 4.5)
    att = red.attention
    assert att.words == ["red", "square"] and att.maps.shape == (3, 2, 8, 8) and att.maps.dtype == np.uint8
    assert all(f.attention is not None for f in panel.frames if f.t_model is not None)
    tab = panel.tabs.tab("Attention")
    assert tab is panel.attention_view
    tabs = panel.tabs  # a pixel-space text model: its Attention tab shows, the Latent tab does not
    assert tabs.isTabVisible(tabs.indexOf(tab)) and not tabs.isTabVisible(tabs.indexOf(panel.latent_view))
    panel.tabs.show_tab("Attention")
    panel.show_frame(len(panel.frames) - 1)
    shown = [cap.text() for img, cap in panel.attention_view.tiles if cap.isVisible()]
    assert shown == ["sample", "red", "square"]  # the sample itself, then each word's map over it
    assert not panel.attention_view.tiles[0][0].pixmap().isNull()

    blue = _run(panel, qtbot, "blue circle", 4.5)
    assert box.prompt_combo.itemText(0) == "blue circle"  # history first
    assert np.abs(red.x.astype(int) - blue.x.astype(int)).max() > 0  # same seed, another prompt: another image

    # w = 0 is the unconditional model: the prompt no longer matters.
    red0, blue0 = _run(panel, qtbot, "red square", 0.0), _run(panel, qtbot, "blue circle", 0.0)
    assert panel.job.guidance == 0.0
    assert np.abs(red0.x.astype(int) - blue0.x.astype(int)).max() <= 1


def test_unseen_words_are_named_and_the_sweep_fills_its_strip(panel, qtbot, text_ckpt):
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(text_ckpt)
    box = panel.prompt_box
    box.set_prompt("red dragon")
    assert box.notes_label.isVisible() and "'dragon'" in box.notes_label.text()
    box.set_prompt("red square")
    assert not box.notes_label.isVisible()
    panel.controls.steps_spin.setValue(5)
    with qtbot.waitSignal(panel.prompt_box.sweep_button.clicked, timeout=30_000):
        box.sweep_button.click()
    worker = panel.sweep_worker
    assert worker is not None
    qtbot.waitUntil(lambda: panel.sweep_worker is None, timeout=WAIT_MS)
    pixmaps = [img.pixmap() for img in box.sweep_images]
    assert all(not p.isNull() for p in pixmaps)
    images = [p.toImage() for p in pixmaps]
    assert images[0] != images[3]  # w = 0 and w = 7 from the same seed differ


def test_training_form_shows_captions_and_a_text_run_trains_on_them(qtbot, settings, tmp_path, monkeypatch):
    """The form's "Condition on captions" row, then the worker's run on a captioned folder (stub encoder)."""
    from PIL import Image

    from diffusion_studio.core.nets import text
    from diffusion_studio.core.io.checkpoint import load_checkpoint
    from diffusion_studio.core.train.config import TrainConfig
    from diffusion_studio.gui.panels.training.form import TrainingForm
    from diffusion_studio.gui.panels.training.text import attach_caption_row
    from diffusion_studio.jobs.training import RunHandle, RunNote, RunRequest, training_run

    form = TrainingForm()
    qtbot.addWidget(form)
    row = attach_caption_row(form)
    form.set_dataset_spec("builtin:shapes")
    row.check.setChecked(True)
    assert row.captions_label.isVisible() or not form.isVisible()
    assert "“a red star on the left”" in row.captions_label.text() and "colour, shape" in row.captions_label.text()

    root = tmp_path / "pics"
    root.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (220, 20, 20) if i % 2 else (20, 20, 220)).save(root / f"{i}.png")
    (root / "metadata.jsonl").write_text("".join(
        f'{{"file_name": "{i}.png", "text": "{"red" if i % 2 else "blue"}"}}\n' for i in range(7)) + "oops\n")
    form.set_dataset_spec(str(root))
    assert "caption problem" in row.captions_label.text() and "“blue”" in row.captions_label.text()

    monkeypatch.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    req = RunRequest(str(root), 8, "tiny", NoiseSchedule.create("linear", 20),
                     TrainConfig(steps=2, batch_size=4, device="cpu", precision="fp32", text=True),
                     out=tmp_path / "run" / "checkpoint.json")
    items = list(training_run(req, RunHandle(closing=True)))
    notes = [i.text for i in items if isinstance(i, RunNote)]
    assert any("line 8: not JSON" in n for n in notes) and any("7.png: no caption" in n for n in notes)
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.json")
    assert ck.model_config.text_encoder == StubEncoder.name and ck.meta["train"]["text"] is True
    assert ck.meta["data"]["caption_words"] == ["blue", "red"]
