"""Long use keeps memory flat: 1,000 moves of the Forward slider at 256 px and 20 sampling runs in the real window.

RSS is read from /proc/self/status (VmRSS) after a warm-up (first-use caches, pyqtgraph's buffers, torch's allocator
pools); the bounds are generous on purpose — a leak of one frame per slider move would be ~200 MB, one run's frames
kept per sampling run ~10 MB × 17 — so they catch leaks, not allocator noise. `pytest -s` prints the numbers.
"""
from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest
import torch
from PySide6.QtWidgets import QApplication

from diffusion_studio import resources
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, preset_config

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc"),
              pytest.mark.usefixtures("one_torch_thread")]
WAIT_MS = 60_000
SLIDER_BOUND_MB = 60
SAMPLING_BOUND_MB = 80


def rss_mb() -> float:
    gc.collect()
    QApplication.processEvents()
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


@pytest.fixture
def win(qtbot, settings, tmp_path, monkeypatch):
    """The real window with no shipped model (so the Sampling tab does not start a run of its own when shown)."""
    from diffusion_studio.gui.main_window import MainWindow

    (tmp_path / "no-models").mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: tmp_path / "no-models")
    settings.setValue("sampling/autostart", False)
    w = MainWindow(settings, device="cpu")
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()


def test_a_thousand_slider_moves_keep_memory_flat(qtbot, win):
    forward, images = win.forward, win.images
    assert images.working_size == 256 and win.state.image is not None
    assert win.state.image.display.shape[:2] == (256, 256)
    win.tabs.setCurrentWidget(forward)
    slider = forward.slider
    T = slider.maximum()
    shown = []
    forward.frame_shown.connect(shown.append)

    def move(n: int, start: int) -> None:
        for i in range(n):
            slider.setValue(1 + (start + i * 37) % T)  # jumps all over 1..T, each value different from the last
            if i % 50 == 49:
                QApplication.processEvents()
        QApplication.processEvents()

    move(100, 0)  # warm-up
    before = rss_mb()
    frames_before = len(shown)
    move(1000, 100)
    after = rss_mb()
    growth = after - before
    print(f"\nForward slider, 1,000 moves at 256 px: RSS {before:.1f} → {after:.1f} MB (growth {growth:+.1f} MB)")
    assert len(shown) - frames_before >= 1000, "the slider did not redraw x_t on every move"
    t = win.state.t
    pixels = forward.xt_pane.current
    assert pixels.shape[:2] == (256, 256)
    np.testing.assert_array_equal(pixels, forward._scrubber.frame_u8(t).numpy())  # the last move is on screen
    assert growth < SLIDER_BOUND_MB, f"RSS grew {growth:.1f} MB over 1,000 slider moves"


def test_twenty_sampling_runs_keep_memory_flat_and_release_old_frames(qtbot, win, tmp_path):
    torch.manual_seed(0)
    cfg = preset_config("tiny", 16, 1)
    model = UNet(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(model.out[-1].weight, std=0.05)
    path = save_checkpoint(tmp_path / "tiny.json", {"ema": dict(model.state_dict())},
                           {"step": 1, "model": cfg.to_dict(),
                            "schedule": NoiseSchedule.create("linear", 50).to_dict()})
    panel = win.sampling
    win.tabs.setCurrentWidget(panel)
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(path)
    c = panel.controls
    c.select_sampler("ddim", "beta_tilde")
    c.steps_spin.setValue(5)
    c.n_spin.setValue(4)
    c.every_spin.setValue(1)

    def run_once() -> None:
        with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as done:
            panel.start()
        assert done.args[0] == "done"
        qtbot.waitUntil(lambda: not panel.pool.running, timeout=WAIT_MS)

    run_once()
    per_run = len(panel.frames)
    first_frames = [weakref.ref(f) for f in panel.frames]
    for _ in range(2):  # warm-up: 3 runs in all
        run_once()
    before = rss_mb()
    for _ in range(17):
        run_once()
        assert len(panel.frames) == per_run, "the panel keeps more than the current run's frames"
    after = rss_mb()
    growth = after - before
    print(f"\nSampling, 20 runs (DDIM 5 steps, 4 images of 16 px, {per_run} frames each): RSS after 3 runs "
          f"{before:.1f} → after 20 runs {after:.1f} MB (growth {growth:+.1f} MB)")
    assert per_run >= 5 and panel.frames[-1].is_final
    gc.collect()
    alive = sum(r() is not None for r in first_frames)
    assert alive == 0, f"{alive} frames of the first run are still referenced"
    assert growth < SAMPLING_BOUND_MB, f"RSS grew {growth:.1f} MB over 17 sampling runs"
