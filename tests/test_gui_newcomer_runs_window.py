"""The user study's window-level rough edges, repeated in the real window: the mouse wheel over the Training form
scrolls it instead of changing "FID every 500"; a long status message ends before the "idle" label instead of running
into it; runs trained in the app are offered in the Sampling and Likelihood model lists after a restart; the status
bar says the autoencoder trains; the Autoencoder and Sampling tabs keep their choices across a restart; the run-curves
key keeps σ_t and the Training tab keeps every number readable in a 1024×700 window."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pyqtgraph as pg
import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QScrollArea

from diffusion_studio import resources
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.nets.unet import UNet, preset_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SLOW = 120_000


def wheel(widget, notches: int = -1) -> None:
    """One notch of the mouse wheel (down for a negative count) over the middle of ``widget``."""
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


# ---- 15: the wheel over the Training form ---------------------------------------------------------------------------
def test_the_wheel_scrolls_the_training_form_and_leaves_its_values_alone(qtbot, window):
    window.resize(1024, 700)
    panel = window.training
    window.show_panel(panel)
    qtbot.wait(50)
    f = panel.form
    scroll = next(w for w in panel.findChildren(QScrollArea) if w.widget() is not None and
                  w.widget().isAncestorOf(f))
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0, "the form fits: nothing to scroll at 1024×700"
    assert f.fid_spin.text() == "every 500 steps"
    before = bar.value()
    for w in (f.fid_spin, f.save_every_spin, f.objective_combo, f.preset_combo, f.batch_spin, f.space_row):
        value = w.currentIndex() if hasattr(w, "currentIndex") else w.value()
        wheel(w)
        assert (w.currentIndex() if hasattr(w, "currentIndex") else w.value()) == value, w.objectName()
        assert w.focusPolicy() == Qt.FocusPolicy.StrongFocus
    assert f.fid_spin.text() == "every 500 steps" and bar.value() > before  # the form scrolled instead
    # Clicked into, a spin box takes the wheel as usual.
    scroll.ensureWidgetVisible(f.save_every_spin)
    qtbot.mouseClick(f.save_every_spin, Qt.MouseButton.LeftButton, pos=QPoint(10, f.save_every_spin.height() // 2))
    f.save_every_spin.setFocus()
    qtbot.waitUntil(f.save_every_spin.hasFocus, timeout=30_000)
    wheel(f.save_every_spin, notches=1)
    assert f.save_every_spin.value() == 600


# ---- 19: long status-bar messages -------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [1024, 1280])
def test_a_long_status_message_is_elided_before_the_idle_label(qtbot, window, width):
    window.resize(width, 700)
    qtbot.wait(50)
    bar = window.statusBar()
    window.state.set_busy("training", "training step 1,234/100,000")
    long = ("Training: a run was interrupted at step 1,355 of 100,000 (20261207-210518-digits-tiny-16px-text); the "
            "Training tab offers to continue it from its checkpoint, with its captions and its own schedule")
    window.state.message.emit(long)
    qtbot.wait(50)
    assert bar.currentMessage() == long and bar.toolTip() == long  # the whole message stays readable
    shown = bar.shown_message()
    assert shown.endswith("…") and shown[:-1] in long
    busy_x = window.busy_label.x()
    assert window.busy_label.text() == "training step 1,234/100,000" and window.busy_label.isVisible()
    assert bar.message_rect().right() < busy_x - 8
    # Drawn, the text stops before the label: the columns just left of "training step …" are bare background.
    img = bar.grab().toImage()
    ratio = img.devicePixelRatio()
    bg = img.pixelColor(int(2 * ratio), int(2 * ratio)).lightness()
    columns = range(int((busy_x - 8) * ratio), int((busy_x - 1) * ratio))
    ink = [abs(img.pixelColor(x, y).lightness() - bg) for x in columns for y in range(int(bar.height() * ratio))]
    assert max(ink) < 40, "the message is drawn into the busy label's margin"
    # Its text begins where a message begins, and a short message is shown whole.
    window.state.message.emit("Loaded digits")
    assert bar.shown_message() == "Loaded digits"


# ---- the runs folder in the model lists ----------------------------------------------------------------------------
def _run(folder, name: str, step: int, mtime: float, text: bool = False):
    cfg = preset_config("tiny", 8, 1)
    torch.manual_seed(step)
    model = UNet(cfg)
    meta = {"step": step, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 20).to_dict(),
            "data": {"spec": "builtin:digits", "name": "digits", "size": 8, "channels": 1, "n": 1797},
            "train": {"steps": step, "text": text}}
    path = save_checkpoint(folder / name / "checkpoint.json", {"ema": dict(model.state_dict())}, meta)
    os.utime(path, (mtime, mtime))
    return path


def test_runs_trained_in_the_app_are_listed_newest_first_after_a_restart(qtbot, settings, runs, tmp_path,
                                                                        monkeypatch):
    from diffusion_studio.gui.main_window import MainWindow
    from diffusion_studio.jobs.session import MAX_LISTED_RUNS

    (tmp_path / "models").mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: tmp_path / "models")  # no built-ins: only the runs
    now = time.time()
    paths = [_run(runs, f"20261201-1000{k:02d}-digits-tiny-8px", 10 + k, now - 3600 * (20 - k))
             for k in range(MAX_LISTED_RUNS + 3)]
    newest = paths[-1]
    # Broken weights are not read while listing: the run is still offered (choosing it says what is wrong).
    broken = _run(runs, "20261202-090000-digits-tiny-8px", 99, now)
    weights = broken.parent / json.loads(broken.read_text())["weights"]
    weights.write_bytes(b"\0" * 64)
    (runs / "an-empty-folder").mkdir()
    (runs / "junk").mkdir()
    (runs / "junk" / "checkpoint.json").write_text("{not json")
    (runs / "an-autoencoder").mkdir()
    (runs / "an-autoencoder" / "autoencoder.json").write_text("{}")

    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    try:
        for chooser in (win.sampling.chooser, win.likelihood.chooser):
            combo = chooser.combo
            items = [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())]
            listed = [(t, d) for t, d in items if t.startswith("Run: ")]
            assert len(listed) == MAX_LISTED_RUNS  # bounded
            assert listed[0][1] == f"file:{broken.resolve()}" and listed[1][1] == f"file:{newest.resolve()}"
            assert listed[1][0].startswith("Run: digits · tiny · 8 px · step 24 · ")  # readable, newest first
            assert [d for _t, d in listed][2:] == [f"file:{p.resolve()}" for p in paths[::-1][1:MAX_LISTED_RUNS - 1]]
            assert not any("junk" in str(d) or "autoencoder" in str(d) for _t, d in items)
            assert items[-1][1] == "open"
        # Chosen in the Sampling tab's list, the run loads and is the model in use.
        sampling = win.sampling
        combo = sampling.chooser.combo
        i = combo.findData(f"file:{newest.resolve()}")
        with qtbot.waitSignal(sampling.model_loaded, timeout=SLOW):
            combo.setCurrentIndex(i)
            combo.activated.emit(i)
        assert sampling.loaded.path == newest and sampling.loaded.checkpoint.step == 24
        assert combo.currentData() == f"file:{newest.resolve()}"
        with qtbot.waitSignal(sampling.chooser.load_failed, timeout=SLOW):
            j = combo.findData(f"file:{broken.resolve()}")
            combo.setCurrentIndex(j)
            combo.activated.emit(j)
        assert sampling.loaded.path == newest  # a broken run changes nothing
        qtbot.waitUntil(lambda: not win.pool.running, timeout=SLOW)
    finally:
        win.close()


def test_a_missing_runs_folder_lists_nothing_and_costs_nothing(tmp_path):
    from diffusion_studio.jobs.session import recent_runs

    assert recent_runs(tmp_path / "nowhere") == []
    (tmp_path / "file").write_text("x")
    assert recent_runs(tmp_path / "file") == []
    np.testing.assert_equal(len(recent_runs(tmp_path)), 0)


# ---- 13: the status bar while the autoencoder trains ----------------------------------------------------------------
def test_the_status_bar_says_the_autoencoder_trains_and_idle_after(qtbot, window):
    panel = window.autoencoder
    window.show_panel(panel)
    panel.data_combo.setCurrentText("builtin:digits")
    panel.size_spin.setValue(8)
    panel.factor_combo.setCurrentIndex(panel.factor_combo.findData(2))
    panel.minutes_spin.setValue(0.05)  # 3 s
    assert window.busy_label.text() == "idle"
    seen = []
    window.state.busy_changed.connect(seen.append)
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "training the autoencoder" in window.busy_label.text(), timeout=SLOW)
    assert window.busy_label.text() != "idle" and window.busy_label.isVisible()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=SLOW)
    assert window.busy_label.text() == "idle", panel.psnr_label.text()
    assert panel.result is not None, panel.psnr_label.text()
    assert any("autoencoder: step" in s for s in seen)  # its progress, step by step, while it ran


# ---- the Autoencoder and Sampling tabs across a restart -------------------------------------------------------------
def test_the_autoencoder_and_sampling_tabs_keep_their_state_across_a_restart(qtbot, settings, runs):
    from PySide6.QtCore import QSettings
    from diffusion_studio.gui.main_window import MainWindow
    from diffusion_studio.gui.panels.sampling.models import builtin_models

    assert "shapes" in builtin_models(), "the shipped shapes model is missing"
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    ae = win.autoencoder
    ae.data_combo.setCurrentText("builtin:photos")
    ae.size_spin.setValue(48)
    ae.factor_combo.setCurrentIndex(ae.factor_combo.findData(8))
    ae.channels_spin.setValue(6)
    ae.minutes_spin.setValue(7.5)
    sampling = win.sampling
    sampling.settings.setValue("sampling/autostart", False)
    combo = sampling.chooser.combo
    win.show_panel(sampling)
    i = combo.findData("builtin:shapes")
    with qtbot.waitSignal(sampling.model_loaded, timeout=SLOW):
        combo.setCurrentIndex(i)
        combo.activated.emit(i)  # the user picks the shapes model
    sampling.controls.seed_spin.setValue(1234)
    qtbot.waitUntil(lambda: not win.pool.running, timeout=SLOW)
    win.close()

    again = MainWindow(QSettings(settings.fileName(), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(again)
    again.show()
    try:
        ae = again.autoencoder
        assert (ae.data_combo.currentText(), ae.size_spin.value(), ae.factor_combo.currentData(),
                ae.channels_spin.value(), ae.minutes_spin.value()) == ("builtin:photos", 48, 8, 6, 7.5)
        sampling = again.sampling
        assert sampling.controls.seed_spin.value() == 1234
        with qtbot.waitSignal(sampling.model_loaded, timeout=SLOW):
            again.show_panel(sampling)  # shown, the tab loads the model chosen before the restart
        assert sampling.loaded.name.endswith("shapes") and sampling.chooser.combo.currentData() == "builtin:shapes"
        qtbot.waitUntil(lambda: not again.pool.running, timeout=SLOW)
    finally:
        again.close()


# ---- 16: the run-curves key at 1024×700 -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1024, 700), (1280, 800)])
def test_the_run_curves_key_shows_sigma_t_in_a_small_window(qtbot, window, size):
    from PySide6.QtGui import QColor
    from diffusion_studio.gui.panels.sampling.tabs import RUN_CURVES

    window.resize(*size)
    window.sampling.settings.setValue("sampling/autostart", False)
    window.show_panel(window.sampling)
    curves = window.sampling.findChild(pg.PlotWidget, "runCurves")
    window.sampling.tabs.show_tab("Run curves")
    qtbot.waitUntil(lambda: curves.isVisible() and curves.width() > 50, timeout=SLOW)
    qtbot.wait(50)
    plot = curves.getPlotItem()
    title = plot.titleLabel.item
    text_box = title.mapRectToScene(title.boundingRect())
    row = plot.titleLabel.mapRectToScene(plot.titleLabel.boundingRect())
    view_top = plot.vb.mapToScene(plot.vb.rect().topLeft()).y()
    # The whole key, however many lines it wraps to, lies in the title row, above the plot: none of it clipped.
    assert row.top() - 1 <= text_box.top() and text_box.bottom() <= row.bottom() + 1 <= view_top + 2, \
        (text_box, row, view_top)
    img = curves.grab().toImage()
    ratio = img.devicePixelRatio()
    axis_top = view_top * ratio
    # Each name of the key is drawn in its curve's colour above the plot (no curve is drawn before a run).
    for name, colour, _tip in RUN_CURVES.values():
        want = QColor(colour)
        hits = sum(1 for y in range(int(axis_top)) for x in range(img.width())
                   if abs(img.pixelColor(x, y).red() - want.red()) < 40
                   and abs(img.pixelColor(x, y).green() - want.green()) < 40
                   and abs(img.pixelColor(x, y).blue() - want.blue()) < 40)
        assert hits >= 6, f"{name} is not drawn in the key at {size}"


# ---- the Training tab at 1024×700 while a run fills it in -------------------------------------------------------------
def test_a_run_in_a_1024_window_keeps_the_window_and_every_number_readable(qtbot, window, runs):
    from test_gui_newcomer_runs import configure, run_to_end

    window.resize(1024, 700)
    panel = window.training
    window.show_panel(panel)
    configure(panel, steps=3, batch=8)
    assert run_to_end(qtbot, panel).reason == "finished", panel.error_label.text()
    qtbot.wait(50)
    view = panel.view
    assert window.width() == 1024, "the filled-in numbers widened the window"
    assert view.time_label.text().startswith("elapsed ") and view.lr_label.text().startswith("lr ")
    for label in (view.lr_label, view.grad_label, view.time_label):  # each shown whole, inside the view
        assert label.width() >= label.fontMetrics().horizontalAdvance(label.text()), label.text()
        assert label.geometry().right() <= view.width()
    # The plots' titles wrap inside the plots, which end where the view does (not cut off on the right).
    for plot in (view.loss_plot, view.bucket_plot):
        assert plot.geometry().right() <= view.width()
        item = plot.getPlotItem().titleLabel.item
        box = item.mapRectToScene(item.boundingRect())
        assert 0 <= box.left() and box.right() <= plot.width() + 1, (plot.objectName(), box, plot.width())
    assert "Min-SNR-5-weighted" in plain_text(view.loss_plot)


def plain_text(plot) -> str:
    return plot.getPlotItem().titleLabel.text
