"""Issue 24, the Autoencoder tab: empty, it says what it is for and how to start; the latent-channel grid is labelled
(rows, columns, the channel count); while it trains, a loss curve grows and the time left counts down; the status bar
says it trains. The user's steps in the real window, at 1280×800 and 1024×700."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from diffusion_studio.core.nets.autoencoder import AutoencoderConfig
from diffusion_studio.core.train.autoencoder import AETrainConfig
from diffusion_studio.jobs.autoencoder import AEPicture, AEProgress, AEResult, train_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SLOW = 120_000


@pytest.mark.parametrize("size", [(1280, 800), (1024, 700)])
def test_the_empty_tab_explains_itself(qtbot, window, size):
    window.resize(*size)
    ae = window.autoencoder
    window.show_panel(ae)
    QApplication.processEvents()
    qtbot.waitUntil(lambda: ae.intro.isVisible(), timeout=30_000)
    text = ae.intro.text()
    for words in ("latent", "Train", "Open an autoencoder", "Save", "Training ▸ space"):
        assert words in text, words
    # all of it shows: wrapped to the tab's width, never cut at the bottom or the right
    assert ae.intro.wordWrap()
    qtbot.waitUntil(lambda: ae.intro.height() >= ae.intro.heightForWidth(ae.intro.width()), timeout=30_000)
    right = ae.intro.mapTo(ae, ae.intro.rect().bottomRight())
    assert right.x() <= ae.width() and right.y() <= ae.height()
    # the pictures still get most of the room
    assert ae.orig_pane.height() >= 100 and ae.orig_pane.width() >= 100, ae.orig_pane.size()
    assert ae.loss_plot.isVisible() and ae.latent_pane.isVisible()


def test_training_draws_a_loss_curve_counts_down_and_labels_the_latent_grid(qtbot, window):
    window.resize(1024, 700)
    ae = window.autoencoder
    window.show_panel(ae)
    ae.data_combo.setCurrentText("builtin:digits")
    ae.size_spin.setValue(8)
    ae.factor_combo.setCurrentIndex(ae.factor_combo.findData(2))
    ae.channels_spin.setValue(3)
    ae.minutes_spin.setValue(0.1)                      # 6 s of training
    etas, busy, lefts = [], [], []
    window.state.busy_changed.connect(busy.append)

    def watch(item):
        if isinstance(item, AEProgress):
            etas.append((item.step, item.elapsed_s, item.eta_s))
            lefts.append(ae.progress.format())

    qtbot.mouseClick(ae.train_button, Qt.MouseButton.LeftButton)
    ae.worker.yielded.connect(watch)
    qtbot.waitUntil(lambda: len(ae.loss_steps) >= 3, timeout=SLOW)
    assert "training the autoencoder" in window.busy_label.text()
    qtbot.waitUntil(lambda: ae.worker is None, timeout=SLOW)
    assert ae.result is not None, ae.psnr_label.text()
    assert not ae.intro.isVisible()                                   # the pictures took its place
    # the loss curve: one point per progress report, in step order, the same numbers it was sent, and falling
    x, y = ae.loss_curve.getData()
    assert len(x) == len(ae.loss_steps) >= 3 and list(x) == sorted(x)
    assert np.all(np.asarray(ae.loss_values) > 0)
    assert np.mean(ae.loss_values[-3:]) < ae.loss_values[0]
    # the time left: elapsed + left is the minutes asked for; it counts down to 0 and the bar says it
    budget = 0.1 * 60
    assert etas and all(eta is not None and eta == pytest.approx(max(0.0, budget - el), abs=1e-6)
                        for _s, el, eta in etas)
    assert [eta for _s, _e, eta in etas] == sorted((eta for _s, _e, eta in etas), reverse=True)
    assert any("left" in f for f in lefts) and any(":0" in f for f in lefts)
    assert any("autoencoder: step" in b and "left" in b for b in busy)
    assert window.busy_label.text() == "idle"
    # the latent grid names its rows and columns, with the channel count asked for and the latent's size (8 / 2)
    title = ae.latent_pane.label.text
    assert "rows" in title and "columns" in title and "channels 1 … 3" in title and "4×4" in title
    grid = ae.latent_pane.current
    assert grid is not None and grid.shape[:2] == (4 * (4 + 1) + 1, 3 * (4 + 1) + 1)   # 4 rows × 3 columns
    assert ae.loss_plot.getPlotItem().titleLabel.text.startswith("loss")


def test_the_job_reports_progress_with_the_time_left():
    config = AutoencoderConfig(image_size=8, factor=2, latent_channels=2)
    train = AETrainConfig(steps=12, minutes=None, batch_size=8, lr=2e-3, device="cpu", preview_every=6,
                          preview_n=8)
    gen = train_job("builtin:digits", config, train)
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    progress = [i for i in items if isinstance(i, AEProgress)]
    pictures = [i for i in items if isinstance(i, AEPicture)]
    assert isinstance(result, AEResult)
    assert progress and progress[-1].step == 12 and progress[-1].eta_s == pytest.approx(0.0, abs=1e-9)
    assert all(p.total_steps == 12 and math.isfinite(p.rec_loss) and p.rec_loss > 0 for p in progress)
    assert all(p.latent_shape == (2, 4, 4) and p.shown == 4 for p in pictures)
