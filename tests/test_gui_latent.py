"""The app with latent models: the Sampling view decodes the frames it shows and its Latent tab shows z_t."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from diffusion_studio import resources
from diffusion_studio.core.nets.autoencoder import Autoencoder, AutoencoderConfig
from diffusion_studio.core.io.autoencoder_io import fingerprint
from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.runtime.calibrate import resolve_precision
from diffusion_studio.core.io.space import LatentSpace, space_from_checkpoint
from diffusion_studio.core.diffusion.samplers import sample_frames
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.nets.unet import UNet, preset_config
from diffusion_studio.data.convert import make_grid, to_uint8

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 60_000


def latent_checkpoint(path):
    """An untrained tiny UNet on 4x4x4 latents of a random 16 px autoencoder (f = 4), embedded as a latent model."""
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(image_size=16, factor=4, latent_channels=4, base_channels=8, groups=4)).eval()
    space = LatentSpace(ae, 0.7, fingerprint(ae.config, ae.state_dict(), 0.7), "test-ae")
    cfg = preset_config("tiny", 4, 4)
    unet = UNet(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(unet.out[-1].weight, std=0.05)
    meta = {"step": 1, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 40).to_dict(),
            "data": {"spec": "test"}, "latent": space.to_meta()}
    return save_checkpoint(path, {"ema": dict(unet.state_dict()), **space.tensors()}, meta)


@pytest.fixture(autouse=True)
def no_builtin_models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: root)


@pytest.fixture
def panel(qtbot, settings):
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=10_000)


def test_sampling_a_latent_model_shows_decoded_frames_and_the_latent(panel, qtbot, tmp_path):
    from diffusion_studio.jobs.frames import LatentFrame, channel_grid

    path = latent_checkpoint(tmp_path / "latent.json")
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(path)
    c = panel.controls
    # a latent has no [−1, 1] range: clipping x̂₀ is off and greyed out for a latent model (the run below is compared
    # with an unclipped core run), and the user's choice for pixel models is kept
    assert c.clip_check.isChecked() is False and c.clip_check.isEnabled() is False and c.pixel_clip is True
    assert c.job().clip_x0 is False
    c.select_sampler("ddim", "beta_tilde")
    c.steps_spin.setValue(3)
    c.n_spin.setValue(4)
    c.seed_spin.setValue(5)
    c.every_spin.setValue(1)
    c.eta_spin.setValue(0.0)
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "done"
    assert len(panel.frames) == 4 and all(isinstance(f, LatentFrame) for f in panel.frames)

    # the same run, independently: core sampler on latents, then the checkpoint's own decoder
    ckpt = load_checkpoint(path)
    space = space_from_checkpoint(ckpt)
    fn = model_fn(ckpt.build_model("cpu"), "cpu", resolve_precision("auto", torch.device("cpu")))
    frames = list(sample_frames(fn, ckpt.schedule, (4, 4, 4, 4), "ddim", steps=3, eta=0.0, seed=5, include_start=True))
    final = frames[-1]
    expected_x = to_uint8(make_grid(space.decode(final.x)))
    shown = panel.frames[-1]
    assert shown.x.shape == expected_x.shape and shown.x.ndim == 3 and shown.x.shape[2] == 3  # 16 px RGB pictures
    assert int(np.abs(shown.x.astype(int) - expected_x.astype(int)).max()) <= 2
    expected_x0 = to_uint8(make_grid(space.decode(frames[-1].x0_pred)))
    assert int(np.abs(shown.x0.astype(int) - expected_x0.astype(int)).max()) <= 2
    assert np.array_equal(shown.latent.shape, channel_grid(final.x).shape)

    # the Latent tab shows z_t of the frame on screen; the panes say they are decoded
    tabs = panel.tabs  # a latent class model: its Latent tab shows, the Attention tab (text models) does not
    assert tabs.isTabVisible(tabs.indexOf(panel.latent_view))
    assert not tabs.isTabVisible(tabs.indexOf(panel.attention_view))
    panel.tabs.show_tab("Latent")
    panel.player_bar.show_index(1)
    qtbot.waitUntil(lambda: panel.latent_view.pane.current is not None, timeout=30_000)
    assert np.array_equal(panel.latent_view.pane.current, panel.frames[1].latent)
    assert "decoded" in panel.x_pane.label.text and "decoded" in panel.x0_pane.label.text
    assert "decoder" in panel.latent_view.note.text()


def test_forward_view_noises_the_latent_and_shows_the_decoders_picture(qtbot, settings, tmp_path):
    """The toggle shows z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε (ε from the panel's seed) and D(z_t / scale), beside x_t."""
    import math

    from diffusion_studio.core.io.autoencoder_io import save_autoencoder
    from diffusion_studio.gui.panels.forward.panel import ForwardPanel
    from diffusion_studio.gui.state import AppState, SelectedImage
    from diffusion_studio.gui.workers import WorkerPool

    torch.manual_seed(1)
    ae = Autoencoder(AutoencoderConfig(image_size=16, factor=4, latent_channels=4, base_channels=8, groups=4)).eval()
    save_autoencoder(tmp_path / "ae", ae, 0.5)
    state, pool = AppState(device="cpu"), WorkerPool()
    rng = np.random.default_rng(0)
    display = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    x0 = torch.from_numpy(display).permute(2, 0, 1).float() / 127.5 - 1.0
    state.set_image(SelectedImage("test", x0.contiguous(), display, "test"))
    p = ForwardPanel(state, pool, settings)
    qtbot.addWidget(p)
    p.resize(1000, 760)
    p.show()
    qtbot.waitExposed(p)
    try:
        view = p.latent
        assert view.load(str(tmp_path / "ae"))
        view.check.setChecked(True)
        assert view.row.isVisible()
        p.set_paper_t(300)
        qtbot.waitUntil(lambda: "t = 300" in view.dec_pane.label.text, timeout=30_000)
        # independently: encode, noise with the seed's ε at ᾱ from the β's, decode
        with torch.no_grad():
            z0 = ae.encode(x0[None]) * 0.5
        eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(p.seed))
        ab = float(torch.prod(1.0 - state.schedule.betas[:300]))
        z_t = math.sqrt(ab) * z0 + math.sqrt(1 - ab) * eps
        with torch.no_grad():
            picture = ae.decode(z_t / 0.5).clamp(-1, 1)
        expected = to_uint8(make_grid(picture))
        assert int(np.abs(view.dec_pane.current.astype(int) - expected.astype(int)).max()) <= 1
        assert view.z_pane.current.shape[1] > view.z_pane.current.shape[0]  # 4 channel tiles side by side
        # a bad autoencoder is refused in one line and the working one stays
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "autoencoder.json").write_text("{")
        assert not view.load(str(tmp_path / "bad"))
        assert "autoencoder.json" in view.info.text() and view.space is not None
    finally:
        p.shutdown()
        assert pool.shutdown(10000)


def test_autoencoder_view_trains_in_a_worker_shows_reconstructions_and_saves(qtbot, settings, tmp_path):
    from diffusion_studio.core.io.autoencoder_io import load_autoencoder
    from diffusion_studio.gui.panels.autoencoder.panel import AutoencoderPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    pool = WorkerPool()
    p = AutoencoderPanel(AppState(device="cpu"), pool, settings)
    qtbot.addWidget(p)
    p.resize(900, 600)
    p.show()
    qtbot.waitExposed(p)
    try:
        p.data_combo.setCurrentText("builtin:digits")
        p.size_spin.setValue(8)
        p.factor_combo.setCurrentIndex(0)  # f = 2
        p.minutes_spin.setValue(0.05)
        assert not p.save_button.isEnabled()
        qtbot.mouseClick(p.train_button, Qt.MouseButton.LeftButton)
        assert p.running and p.stop_button.isEnabled()
        qtbot.waitUntil(lambda: not p.running, timeout=WAIT_MS)
        r = p.result
        assert r is not None and r.scale_factor > 0 and math.isfinite(r.psnr_train)
        assert "PSNR train" in p.psnr_label.text() and p.save_button.isEnabled()
        orig, rec = p.orig_pane.current, p.rec_pane.current
        assert orig is not None and rec is not None and orig.shape == rec.shape
        assert p.latent_pane.current is not None
        # the panes show what the model does: reconstructions recomputed from the saved autoencoder agree
        path = p.save(tmp_path / "ae")
        ae = load_autoencoder(tmp_path / "ae")
        assert path.is_file() and ae.scale_factor == pytest.approx(r.scale_factor)
        from diffusion_studio.data import load_dataset

        x = load_dataset("builtin:digits", 8, 1).batch(torch.arange(8))
        with torch.no_grad():
            again = to_uint8(make_grid(ae.model.decode(ae.model.encode(x)).clamp(-1, 1), nrow=4))
        assert int(np.abs(again.astype(int) - rec.astype(int)).max()) <= 2
        p.inspect(str(tmp_path / "ae"))
        qtbot.waitUntil(lambda: not p.running, timeout=WAIT_MS)
        assert "PSNR" in p.psnr_label.text() and str(tmp_path / "ae") in p.psnr_label.text()
    finally:
        p.shutdown()
        assert pool.shutdown(10000)


def test_the_apps_training_worker_trains_in_latent_space_and_hands_a_decodable_model(tmp_path):
    """Training ▸ space: latent — the run encodes the data, trains on latents, previews and hands over decoded."""
    from diffusion_studio.core.io.autoencoder_io import save_autoencoder
    from diffusion_studio.core.train.trainer import TrainEvent
    from diffusion_studio.core.train.config import TrainConfig
    from diffusion_studio.jobs.training import RunHandle, RunRequest, RunStarted, training_run

    torch.manual_seed(2)
    ae = Autoencoder(AutoencoderConfig(image_size=16, image_channels=1, factor=4, latent_channels=3,
                                       base_channels=8, groups=4)).eval()
    save_autoencoder(tmp_path / "ae", ae, 0.8)
    req = RunRequest("builtin:digits", 32, "tiny", NoiseSchedule.create("linear", 20),
                     TrainConfig(steps=2, batch_size=4, device="cpu", preview_every=2, preview_n=2),
                     out=tmp_path / "run" / "checkpoint.json")
    req.autoencoder = str(tmp_path / "ae")
    handle = RunHandle()
    items = list(training_run(req, handle))
    started = next(i for i in items if isinstance(i, RunStarted))
    assert started.image_size == 16 and started.channels == 1
    events = [i for i in items if isinstance(i, TrainEvent)]
    assert events[-1].step == 2 and events[-1].preview.shape == (2, 1, 16, 16)  # decoded pictures
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.json")
    assert ckpt.model_config.in_channels == 3 and ckpt.model_config.image_size == 4
    space = space_from_checkpoint(handle.checkpoint)  # what the Sampling view gets can be decoded
    assert space.is_latent and space.scale_factor == pytest.approx(0.8)


def test_training_form_space_row_fixes_the_size_to_the_autoencoders(qtbot, tmp_path):
    from diffusion_studio.core.io.autoencoder_io import save_autoencoder
    from diffusion_studio.gui.panels.training.form import TrainingForm
    from diffusion_studio.gui.panels.training.space import attach_space_row

    ae = Autoencoder(AutoencoderConfig(image_size=24, factor=4, base_channels=8, groups=4))
    save_autoencoder(tmp_path / "ae", ae, 1.0)
    form = TrainingForm()
    qtbot.addWidget(form)
    row = attach_space_row(form)
    assert row.autoencoder() is None and form.size_spin.isEnabled()
    row.add_autoencoder(str(tmp_path / "ae"))
    assert row.autoencoder() == str(tmp_path / "ae")
    assert form.size_spin.value() == 24 and not form.size_spin.isEnabled()
    row.setCurrentIndex(0)
    assert row.autoencoder() is None and form.size_spin.isEnabled()
