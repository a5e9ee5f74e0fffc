"""A diffusers DDPM folder in the Sampling tab: opened from its model_index.json, animated like any model, and
the frames are what diffusers' own UNet gives as ε_θ; at 256 px on a CPU the run says how long it will take."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

pytest.importorskip("diffusers", reason="diffusers is the oracle of these tests ([test] extra)")

from diffusion_studio.core.runtime import calibrate  # noqa: E402
from diffusion_studio.core.diffusion.samplers import sample  # noqa: E402
from diffusion_studio.data.convert import make_grid, to_uint8  # noqa: E402
from diffusion_studio.jobs import sampling as sampling_frames  # noqa: E402
from test_convert_diffusers import make_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 120_000


@pytest.fixture
def panel(qtbot, settings, monkeypatch):
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    # fp32 and NCHW, as the oracle runs: what is checked here is the conversion, not the CPU's fastest path.
    fixed = calibrate.FastPath(False, "fp32", {}, "fixed")
    monkeypatch.setattr(sampling_frames, "for_sampling", lambda *a, **k: fixed)
    monkeypatch.setattr(calibrate, "choose", lambda *a, **k: calibrate.FastPath(False, "fp32", {}, "fixed"))
    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=10_000)


def _open_and_run(panel, qtbot, folder, steps, n, seed):
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(folder / "model_index.json")  # what File → Open Checkpoint… hands over
    if panel.worker is not None:  # a freshly opened model starts animating at once: stop that run first
        with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS):
            panel.stop()
    c = panel.controls
    c.select_sampler("ddim")
    c.steps_spin.setValue(steps)
    c.n_spin.setValue(n)
    c.seed_spin.setValue(seed)
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "done"


def test_frames_are_diffusers_unet_sampled(panel, qtbot, tmp_path):
    folder, unet, _ = make_folder(tmp_path, "ddpm-cifar10-32", {"clip_sample": False, "variance_type": "fixed_small"})
    _open_and_run(panel, qtbot, folder, steps=4, n=4, seed=5)
    assert panel.chooser.combo.currentText() == "File: ddpm-cifar10-32"
    assert "32×32×3" in panel.chooser.summary.text()
    assert not panel.controls.clip_check.isChecked()  # the scheduler's clip_sample: false became the default

    def eps(x, t):  # diffusers' own network as ε_θ: the oracle
        with torch.no_grad():
            return unet(x, t).sample

    schedule = panel.loaded.schedule
    expected = sample(eps, schedule, (4, 3, 32, 32), "ddim", steps=4, seed=5)
    got, want = panel.frames[-1].x, to_uint8(make_grid(expected.clamp(-1, 1)))
    assert got.shape == want.shape
    assert int(np.abs(got.astype(int) - want.astype(int)).max()) <= 1
    assert want.std() > 5  # a picture with content, not two flat grids agreeing


def test_a_256_px_model_says_how_long_before_it_starts(panel, qtbot, tmp_path):
    folder, _, _ = make_folder(tmp_path, "ddpm-church-256", sample_size=256)
    messages = []
    panel.state.message.connect(messages.append)
    _open_and_run(panel, qtbot, folder, steps=2, n=1, seed=0)
    note = next(m for m in messages if m.startswith("DDIM-2 at 256x256: about "))
    assert "on this CPU" in note and "s a step, timed just now" in note
