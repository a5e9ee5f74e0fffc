"""The Likelihood tab: the curve fills from a worker, Stop ends it, the β/β̃ toggle redraws, hover shows the probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion import vlb
from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, UNetConfig
from diffusion_studio.gui.panels.likelihood.panel import LikelihoodPanel
from diffusion_studio.jobs.likelihood import load_images
from diffusion_studio.gui.state import AppState
from diffusion_studio.gui.workers import WorkerPool

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = UNetConfig(image_size=8, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,), groups=8, num_heads=2, preset=None)


def micro_ckpt(folder, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    m = UNet(MICRO)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    meta = {"step": seed, "model": MICRO.to_dict(), "schedule": NoiseSchedule.create("linear", T).to_dict(),
            "data": {"spec": "builtin:digits"}}
    return save_checkpoint(folder / f"m{seed}", {"ema": m.state_dict()}, meta)


@pytest.fixture
def panel(qtbot, settings):
    state = AppState(device="cpu")
    pool = WorkerPool()
    p = LikelihoodPanel(state, pool, settings)
    qtbot.addWidget(p)
    p.resize(1100, 700)
    yield p
    p.shutdown()
    pool.shutdown()


def load(panel, chooser, path, qtbot):
    with qtbot.waitSignal(chooser.model_selected, timeout=30000):
        chooser.open_checkpoint(path)


def test_curve_fills_from_the_worker_matches_the_core_and_the_toggle_redraws(panel, qtbot, tmp_path):
    path = micro_ckpt(tmp_path, 40, 1)
    load(panel, panel.chooser, path, qtbot)
    panel.data_edit.setText("builtin:digits")
    panel.n_spin.setValue(3)
    panel.every_combo.setCurrentIndex(panel.every_combo.findData(1))
    panel.set_variance("beta")
    frames = []
    worker = panel.start()
    assert worker is not None and panel.is_running
    worker.yielded.connect(lambda item: frames.append(item))
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: not panel.is_running, timeout=30_000)
    got = [f for f in frames if hasattr(f, "curves")]
    assert len(got) == 40 and [f.t for f in got] == list(range(40, 0, -1))  # one frame per t, T down to 1
    # what the plot shows is the core's bound for these images
    ckpt = load_checkpoint(path)
    x0, _ = load_images(panel.chooser.loaded, "builtin:digits", 3, 0)
    ref = vlb.vlb_total(model_fn(ckpt.build_model("cpu"), "cpu", "fp32", schedule=ckpt.schedule), ckpt.schedule, x0)
    for v in vlb.VARIANCES:
        t, y = ref.curve_bits(v)
        assert got[-1].summary[v]["bits_per_dim"] == pytest.approx(ref.bits_per_dim(v)["bits_per_dim"], rel=1e-6)
    y_beta = panel.terms_plot.curves["A"].yData  # the data as given (getData() is log10 on a log axis)
    t, y = ref.curve_bits("beta")
    assert np.allclose(y_beta, y[y > 0], rtol=1e-6)
    assert "bits/dim" in panel.result.text() and "own training images" in panel.result.text()
    panel.set_variance("beta_tilde")  # no recomputation: the curve changes at once
    y_bt = panel.terms_plot.curves["A"].yData
    t2, y2 = ref.curve_bits("beta_tilde")
    assert np.allclose(y_bt, y2[y2 > 0], rtol=1e-6) and not np.allclose(y_bt, y_beta)
    assert "β̃" in panel.result.text()
    assert "λ_t" in panel.explanation.text() and "%" in panel.explanation.text()
    # hover at t = 3: the probe shows that t's Gaussians for the first image
    panel.show_probe(3)
    assert panel.probe.t == 3
    pr = panel.probes["A"][3]
    assert pr.q_var == pytest.approx(float(ckpt.schedule.posterior_variance[2]))
    assert "σ_t² = β̃_t" in panel.probe.text.text() and f"{pr.q_var:.3g}" in panel.probe.text.text()
    assert panel.probe.panes[1].current is not None


def test_stop_ends_the_run_early_and_a_second_model_overlays(panel, qtbot, tmp_path):
    load(panel, panel.chooser, micro_ckpt(tmp_path, 1000, 2), qtbot)
    panel.compare_box.setChecked(True)
    load(panel, panel.chooser_b, micro_ckpt(tmp_path, 1000, 3), qtbot)
    panel.data_edit.setText("builtin:digits")
    panel.n_spin.setValue(2)
    panel.every_combo.setCurrentIndex(panel.every_combo.findData(1))
    worker = panel.start()
    qtbot.waitUntil(lambda: "A" in panel.frames and panel.frames["A"].done >= 3, timeout=60000)
    with qtbot.waitSignal(worker.aborted, timeout=30000):
        panel.stop()
    qtbot.waitUntil(lambda: not panel.is_running, timeout=30_000)
    assert panel.frames["A"].done < panel.frames["A"].total  # stopped long before T = 1000
    assert "Stopped" in panel.status.text() and "B" not in panel.frames
    # a quick look for both models: two curves
    panel.every_combo.setCurrentIndex(panel.every_combo.findData(50))
    worker = panel.start()
    with qtbot.waitSignal(worker.finished, timeout=120000):
        pass
    qtbot.waitUntil(lambda: not panel.is_running, timeout=30_000)
    assert set(panel.terms_plot.curves) == {"A", "B"}
    assert panel.frames["B"].estimate and panel.frames["B"].done == panel.frames["B"].total == 69
    assert "≈" in panel.result.text() and panel.result.text().count("bits/dim") == 2
