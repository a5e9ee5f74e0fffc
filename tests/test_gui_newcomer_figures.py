"""Issue 24, round three of a newcomer's first hour: the figures keep a readable size and say what is true.

Each test repeats the user's steps in the real window (offscreen) at the two screen sizes of the report, and checks
pixel sizes, texts shown and values against the core's numbers: the Forward tab's histogram with the latent view on
(bug 3), the Schedule dock's comparison (bug 4), a fixed schedule error leaving the status bar (bug 8), the Likelihood
tab while running, stopped and done (bug 9), a grey image noised as one channel, and the Images dock naming what is
open, what the Training tab will train on, and builtin:mnist.
"""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(1280, 800), (1024, 700)]


def _settle(qtbot, ms: int = 60) -> None:
    QApplication.processEvents()
    qtbot.wait(ms)
    QApplication.processEvents()


def _sized_window(window, qtbot, size):
    window.resize(*size)
    qtbot.waitUntil(lambda: window.width() == size[0] and window.height() == size[1], timeout=30_000)
    _settle(qtbot)
    return window


def _tick_rects(axis):
    """The tick labels the axis draws, as (text, rect in scene coordinates)."""
    from PySide6.QtGui import QImage, QPainter

    img = QImage(4, 4, QImage.Format.Format_RGB32)
    painter = QPainter(img)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [(text, axis.mapRectToScene(rect)) for rect, _flags, text in specs[2]]


def _overlapping(rects) -> list:
    """Pairs of tick labels whose drawn text overlaps (a pixel of slack)."""
    out = []
    for i, (a_text, a) in enumerate(rects):
        for b_text, b in rects[i + 1:]:
            if a.adjusted(1, 1, -1, -1).intersects(b.adjusted(1, 1, -1, -1)):
                out.append((a_text, b_text))
    return out


def _inside(outer, inner, slack: float = 1.0) -> bool:
    return outer.adjusted(-slack, -slack, slack, slack).contains(inner)


# ---- bug 3: Forward ▸ "Noise in latent space" leaves the pixel histogram readable -------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_latent_view_leaves_the_pixel_histogram_readable(qtbot, window, size):
    from diffusion_studio.gui.panels.forward.extras import PixelHistogram

    win = _sized_window(window, qtbot, size)
    fwd = win.forward
    win.show_panel(fwd)
    qtbot.waitUntil(lambda: win.state.image is not None, timeout=30_000)
    assert fwd.latent.combo.itemData(0), "an autoencoder ships with the app (builtin:shapes-ae)"
    fwd.latent.check.setChecked(True)
    qtbot.waitUntil(lambda: fwd.latent.z_pane.current is not None, timeout=30000)
    fwd.set_paper_t(300)
    _settle(qtbot, 150)
    hist = fwd.extras.histogram
    plot = hist.getPlotItem()
    vb = plot.vb
    try:  # the layout settles through queued events: wait for it (a loaded machine is slow), then check
        qtbot.waitUntil(lambda: vb.height() >= PixelHistogram.MIN_VIEW - 2, timeout=30_000)
    except Exception:  # noqa: BLE001 - the assertion below says what was measured
        pass
    assert vb.height() >= PixelHistogram.MIN_VIEW - 2, (size, vb.height())  # the report: ~20 px of plot
    # the legend (x₀, xₜ, N(0, 1)) lies inside the plot, not clipped at its edge
    assert _inside(vb.sceneBoundingRect(), plot.legend.sceneBoundingRect()), (plot.legend.sceneBoundingRect(),
                                                                                vb.sceneBoundingRect())
    assert plot.legend.sceneBoundingRect().bottom() <= hist.viewport().height()
    # the y tick labels do not run into each other; the x tick labels stay clear of "pixel value"
    left, bottom = _tick_rects(plot.getAxis("left")), _tick_rects(plot.getAxis("bottom"))
    assert len(left) >= 2 and not _overlapping(left), left
    assert not _overlapping(bottom), bottom
    label = plot.getAxis("bottom").label
    label_rect = label.mapRectToScene(label.boundingRect())
    assert not any(r.adjusted(1, 1, -1, -1).intersects(label_rect) for _t, r in bottom), (label_rect, bottom)
    # and the images keep their room too: x₀ | ε | xₜ, the latent panes and the filmstrip
    for pane in (fwd.x0_pane, fwd.xt_pane, fwd.latent.z_pane, fwd.latent.dec_pane, fwd.film_pane):
        assert pane.height() >= 90 and pane.view.height() >= 40, (pane.objectName(), pane.height())


# ---- bug 4: Schedule ▸ "Compare with…" keeps the three plots readable -----------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_comparing_schedules_keeps_the_plots_readable_and_the_images_alike(qtbot, window, size, tmp_path):
    from PySide6.QtGui import QImage

    from diffusion_studio.gui.panels.schedule.plots import SchedulePlots

    win = _sized_window(window, qtbot, size)
    qtbot.waitUntil(lambda: win.state.image is not None, timeout=30_000)
    sp = win.schedule
    sp.compare.setChecked(True)
    win.state.set_reverse_t(0, win.state.schedule.T)  # a sampling run's last frame: the orange "sampling t = 0"
    win.state.set_t(299)
    _settle(qtbot, 150)
    plots = sp.plots
    try:
        qtbot.waitUntil(lambda: all(p.vb.height() >= SchedulePlots.MIN_VIEW - 1 for p in plots.plot_items),
                        timeout=30_000)
    except Exception:  # noqa: BLE001 - the assertion below says what was measured
        pass
    for plot in plots.plot_items:
        assert plot.vb.height() >= SchedulePlots.MIN_VIEW - 1, (size, [p.vb.height() for p in plots.plot_items])
    # the sampling cursor's label is drawn whole inside the first plot
    line = sp.sampling_cursor.lines[0]
    assert line.isVisible() and line.label.format.startswith("sampling t = 0")
    assert _inside(plots.plot_items[0].vb.sceneBoundingRect(), line.label.sceneBoundingRect()), \
        (line.label.sceneBoundingRect(), plots.plot_items[0].vb.sceneBoundingRect())
    # log SNR's tick labels do not overlap, nor do any plot's
    for plot in plots.plot_items:
        ticks = _tick_rects(plot.getAxis("left"))
        assert len(ticks) >= 2 and not _overlapping(ticks), ticks
    # the plots are no wider than the dock, and the T field is not cut at the dock's edge
    assert plots.width() <= win.schedule_dock.width()
    t_spin = sp.form.T
    assert t_spin.mapTo(sp, QPoint(t_spin.width(), 0)).x() <= sp.width()
    # the comparison images are reachable (the dock scrolls) and drawn the same size, whatever their titles
    sp.scroll.ensureWidgetVisible(sp.compare_images)
    _settle(qtbot)
    images = sp.compare_images
    top_left = images.mapTo(sp.scroll.viewport(), QPoint(0, 0))
    assert top_left.y() >= 0 and top_left.y() + images.height() <= sp.scroll.viewport().height() + 1
    rects = [p.item.sceneBoundingRect() for p in (images.solid_pane, images.dashed_pane)]
    shown = [p.view.mapRectToScene(p.item.mapRectToView(p.item.boundingRect())) for p in
             (images.solid_pane, images.dashed_pane)]
    assert rects[0].isValid() and rects[1].isValid()
    assert abs(shown[0].width() - shown[1].width()) <= 1.5 and abs(shown[0].height() - shown[1].height()) <= 1.5, shown
    assert shown[0].height() >= 60
    titles = [p.label.text for p in (images.solid_pane, images.dashed_pane)]
    assert "t = 300" in titles[0] and "t = 300" in titles[1]
    # Export ▸ Schedule plot: the exported picture is this unsquashed scene
    out = sp.export_png(tmp_path / "compare.png", scale=1.0)
    img = QImage(str(out))
    ratio = img.width() / plots.viewport().width()
    assert abs(img.height() - plots.viewport().height() * ratio) <= 2 + ratio
    assert img.height() / ratio >= 3 * SchedulePlots.MIN_VIEW


def test_schedule_dock_does_not_scroll_at_1280_without_a_comparison(qtbot, window):
    win = _sized_window(window, qtbot, (1280, 800))
    _settle(qtbot, 100)
    sp = win.schedule
    assert not sp.compare.isChecked()
    assert sp.scroll.verticalScrollBar().maximum() == 0  # all of it in view, the readout included
    assert sp.readout.mapTo(sp, QPoint(0, sp.readout.height())).y() <= sp.height()


# ---- bug 8: a fixed schedule error leaves the status bar -----------------------------------------------------------
def test_a_fixed_schedule_value_replaces_its_error_in_the_status_bar(qtbot, window):
    win = window
    edit = win.schedule.form.fields["beta_end"]
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Backspace)
    qtbot.keyClicks(edit, "0")
    bar = win.statusBar()
    assert re.search(r"beta_end must be in .*\(0, 1\), got 0\.0", bar.currentMessage()), bar.currentMessage()
    with qtbot.waitSignal(win.schedule.form.schedule_ready, timeout=30_000):  # the default 0.02 again: applied
        qtbot.keyClicks(edit, ".02")
    assert float(win.state.schedule.betas[-1]) == pytest.approx(0.02)
    message = bar.currentMessage()
    assert "must be" not in message and "not changed" not in message, message
    assert message.startswith("Schedule applied") and "beta_end=0.02" in message, message
    assert not win.schedule.form.error_label.isVisible()
    # a later valid edit says nothing more (no error to replace), and an unrelated message stays
    win.state.message.emit("something else")
    qtbot.keyClicks(edit, "5")
    assert bar.currentMessage() == "something else"


# ---- bug 9: the Likelihood tab while running, after Stop, and done ------------------------------------------------
def _likelihood_panel(qtbot, settings, size=(560, 640)):
    from diffusion_studio.gui.panels.likelihood.panel import LikelihoodPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    state, pool = AppState(device="cpu"), WorkerPool()
    panel = LikelihoodPanel(state, pool, settings)
    qtbot.addWidget(panel)
    panel.resize(*size)  # about the tab's room in a 1024×700 window
    panel.show()
    qtbot.waitExposed(panel)
    return panel, pool


def test_likelihood_says_only_what_it_has_computed_and_labels_fit(qtbot, settings, tmp_path):
    from test_gui_likelihood import load, micro_ckpt

    from diffusion_studio.jobs.likelihood import SMALL_T

    panel, pool = _likelihood_panel(qtbot, settings)
    try:
        load(panel, panel.chooser, micro_ckpt(tmp_path, 200, 1), qtbot)
        panel.data_edit.setText("builtin:digits")
        panel.n_spin.setValue(2)
        panel.every_combo.setCurrentIndex(panel.every_combo.findData(1))
        worker = panel.start()
        seen = []  # what the explanation said after each frame was drawn (this slot runs after the panel's)
        worker.yielded.connect(lambda item: seen.append((getattr(item, "done", 0), panel.explanation.text(),
                                                        threading.current_thread() is threading.main_thread())))
        # the user presses Stop after the third t; pressed from the worker's own thread, so however loaded the
        # machine, the run cannot reach the small t first
        worker.yielded.connect(lambda item: getattr(item, "done", 0) >= 3 and worker.abort(),
                               Qt.ConnectionType.DirectConnection)
        with qtbot.waitSignal(worker.finished, timeout=60000):
            pass
        qtbot.waitUntil(lambda: not panel.is_running, timeout=30_000)
        # running: from t = T down; the small t were not computed, so no share of them was claimed
        running = [text for done, text, _main in seen if done >= 1]
        assert running and all(main for _d, _t, main in seen), seen  # read on the GUI thread, after the redraw
        for text in running:
            assert "carry" not in text and "0%" not in text, text
            assert f"t ≤ {SMALL_T}" in text and "come last" in text, text
        frame = panel.frames["A"]
        assert 3 <= frame.done < frame.total and min(frame.curves["beta"][0]) > SMALL_T
        text = panel.explanation.text()  # after Stop
        assert "carry" not in text and "%" not in text.split("Near the data")[0], text
        assert f"{frame.done}/{frame.total}" in text
        assert "so far" not in panel.result.text() and "partial" in panel.result.text()
        assert "bits/dim" not in panel.result.text()  # no bound is claimed for a stopped run
        # a quick look run to the end: now the share is given, and it is the computed one
        panel.every_combo.setCurrentIndex(panel.every_combo.findData(10))
        worker = panel.start()
        with qtbot.waitSignal(worker.finished, timeout=120000):
            pass
        qtbot.waitUntil(lambda: not panel.is_running, timeout=30_000)
        frame = panel.frames["A"]
        assert frame.done == frame.total
        t, cum = frame.cumulative["beta"]
        share = cum[t <= SMALL_T][-1] / cum[-1]
        assert f"Terms at t ≤ {SMALL_T} carry {100 * share:.0f}% of the bound" in panel.explanation.text()
        # the result reads "bound ≈ 2.660 bits/dim": the number, then its unit
        result = panel.result.text()
        found = re.search(r"bound ([=≈]) <b>([\d.]+)</b> bits/dim", result)
        assert found, result
        assert found.group(1) == "≈" and float(found.group(2)) == pytest.approx(
            frame.summary["beta"]["bits_per_dim"], abs=6e-4)
        assert "= bits/dim" not in result and "≈ bits/dim" not in result
        _settle(qtbot, 100)
        # L₀ and L_T are drawn whole inside the terms plot; no tick labels overlap; nothing cut at the right
        terms = panel.terms_plot
        vb = terms.getPlotItem().vb
        texts = {lab.textItem.toPlainText(): lab for lab in terms.labels}
        assert set(texts) == {"L₀", "L_T"}, texts
        for text, lab in texts.items():
            assert _inside(vb.sceneBoundingRect(), lab.sceneBoundingRect()), (text, lab.sceneBoundingRect(),
                                                                               vb.sceneBoundingRect())
        for plot in (terms, panel.cum_plot):
            item = plot.getPlotItem()
            for name in ("left", "bottom"):
                ticks = _tick_rects(item.getAxis(name))
                assert ticks and not _overlapping(ticks), (plot.objectName(), name, ticks)
            assert item.sceneBoundingRect().right() <= plot.viewport().width() + 1, plot.objectName()
            assert item.titleLabel.sceneBoundingRect().right() <= plot.viewport().width() + 1
    finally:
        panel.shutdown()
        pool.shutdown()


@pytest.mark.parametrize("size", SIZES)
def test_likelihood_plots_fit_the_window(qtbot, window, size):
    win = _sized_window(window, qtbot, size)
    lp = win.likelihood
    win.show_panel(lp)
    _settle(qtbot, 100)
    for plot in (lp.terms_plot, lp.cum_plot):
        item = plot.getPlotItem()
        right = plot.mapTo(win, QPoint(plot.width(), 0)).x()
        assert right <= win.width(), (plot.objectName(), right)
        # the scene (title, axes, legend) is no wider than the widget: nothing cut on the right ("per t (")
        assert item.sceneBoundingRect().right() <= plot.viewport().width() + 1, (plot.objectName(),
                                                                                  item.sceneBoundingRect())
        assert item.titleLabel.sceneBoundingRect().right() <= plot.viewport().width() + 1
        assert plot.height() >= 100


# ---- gaps: a grey image is noised as one channel ------------------------------------------------------------------
def test_a_grey_image_file_is_noised_with_grey_noise(qtbot, window, tmp_path):
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgb_grey = np.repeat(grey[:, :, None], 3, axis=2)  # a grey picture saved as RGB counts as grey too
    Image.fromarray(rgb_grey, "RGB").save(tmp_path / "grey_rgb.png")
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[:, :, 0] = 200
    Image.fromarray(colour, "RGB").save(tmp_path / "red.png")
    win = window
    win.show_panel(win.forward)
    win.images.size_combo.setCurrentIndex(win.images.size_combo.findData(64))  # the files' own size: no resampling
    for name, channels in (("grey.png", 1), ("grey_rgb.png", 1), ("red.png", 3)):
        with qtbot.waitSignal(win.images.load_finished, timeout=30000):
            win.images.add_paths([str(tmp_path / name)])
        qtbot.waitUntil(lambda n=name: win.state.image is not None and win.state.image.name == n, timeout=30_000)
        image = win.state.image
        assert image.x0.shape[0] == channels, (name, tuple(image.x0.shape))
        eps = win.forward.noise_pane.current
        x_t = win.forward.xt_pane.current
        assert (eps.ndim == 2) == (channels == 1) and (x_t.ndim == 2) == (channels == 1), (name, eps.shape)
        if channels == 1:  # x₀ is the file's grey values, in [−1, 1]
            expect = torch.from_numpy(grey).float() / 127.5 - 1
            assert torch.allclose(image.x0[0], expect, atol=2 / 255 + 1e-6)


# ---- gaps: the Images dock says what is open and what the Training tab will use; builtin:mnist -------------------
def test_images_dock_names_the_open_folder_and_the_training_data(qtbot, window, tmp_path):
    folder = tmp_path / "cats"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / f"c{i}.png")
    win = window
    images, form = win.images, win.training.form
    trains_on = form.spec()
    assert trains_on and trains_on in images.dataset_label.text()  # the Training tab's own choice, named
    assert images.dataset_label.text().startswith("The Training tab will train on")
    with qtbot.waitSignal(images.load_finished, timeout=30000):
        images.add_paths([str(folder)])
    assert images.builtin_combo.currentText() == "Folder: cats"  # not "Built-in…"
    assert "Use as training data" in images.dataset_label.text() and str(folder) in images.dataset_label.text()
    qtbot.mouseClick(images.use_button, Qt.MouseButton.LeftButton)
    assert form.spec() == str(folder)
    text = images.dataset_label.text()
    assert str(folder) in text and "(chosen here)" in text and "Use as training data" not in text
    # the Training tab picks another set itself: the dock follows
    form.dataset_combo.setCurrentIndex(form.dataset_combo.findData("builtin:shapes"))
    assert "builtin:shapes" in images.dataset_label.text() and "(chosen here)" not in images.dataset_label.text()
    # a built-in set open again: the combo names it, no folder left in its first item
    images.load_builtin("digits")
    qtbot.waitUntil(lambda: not images.loading, timeout=30000)
    assert images.builtin_combo.itemText(0) == "Built-in…"


def test_builtin_mnist_is_offered_in_the_images_dock(qtbot, window):
    from diffusion_studio.jobs import images as jobs_images

    assert jobs_images._DATASET_SIZE["mnist"] == 28
    images = window.images
    index = images.builtin_combo.findData("mnist")
    assert index > 0 and "MNIST" in images.builtin_combo.itemText(index)
    assert "28×28" in images.builtin_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    with qtbot.waitSignal(images.load_finished, timeout=60000):
        images.builtin_combo.setCurrentIndex(index)
        images.builtin_combo.activated.emit(index)
    assert images.thumbnails.count() == jobs_images.DATASET_PREVIEW
    entry = images.entries[0]
    assert entry.pixels.shape == (28, 28, 1) and entry.source == "builtin:mnist#0"
    qtbot.waitUntil(lambda: window.state.image is not None and window.state.image.source == "builtin:mnist#0",
                    timeout=10000)
    size = images.working_size
    assert tuple(window.state.image.x0.shape) == (1, size, size)
    images.use_as_training_data()
    assert window.training.form.spec() == "builtin:mnist"


def test_likelihood_scores_builtin_mnist_on_its_held_out_split():
    from types import SimpleNamespace

    from diffusion_studio.data import load_dataset
    from diffusion_studio.jobs.likelihood import data_note, load_images

    model = SimpleNamespace(config=SimpleNamespace(image_size=28, in_channels=1))
    x0, available = load_images(model, "builtin:mnist", 6, 0)
    test = load_dataset("builtin:mnist", 28, channels=1, split="test")
    train = load_dataset("builtin:mnist", 28, channels=1, split="train")
    assert available == len(test) == 500 and len(train) == 4500
    held = test.batch(torch.arange(len(test))).reshape(len(test), -1)  # in [−1, 1], as load_images gives them
    for x in x0:  # every scored image is one of the held-out 500
        assert (held == x.reshape(1, -1)).all(dim=1).any()
    assert data_note("builtin:mnist", "builtin:mnist") == "test split: held out"
    assert data_note("builtin:digits", "builtin:digits").startswith("the model's own training images")
