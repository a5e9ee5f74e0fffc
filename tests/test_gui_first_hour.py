"""Issue 10's newcomer bugs, each driven as the user met it: schedule plots that fit their dock, glyphs every font
has, "Use as training data", the sampling tab's first look, and labels that fit the default window."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QApplication

from diffusion_studio.core.diffusion.schedule import NoiseSchedule


def _settle(qtbot, ms: int = 50) -> None:
    QApplication.processEvents()
    qtbot.wait(ms)


def _plots_fit(plots) -> None:
    """Every plot, title, tick label space and the key lie inside the visible viewport, and the x axis reaches T."""
    view = QRectF(plots.mapToScene(plots.viewport().rect()).boundingRect())
    inside = view.adjusted(-1, -1, 1, 1)
    assert plots.ci.geometry().width() <= view.width() + 1, (plots.ci.geometry(), view)
    for plot in plots.plot_items:
        assert inside.contains(plot.sceneBoundingRect()), (plot.sceneBoundingRect(), view)
        assert inside.contains(plot.titleLabel.sceneBoundingRect())
    assert inside.contains(plots.key.sceneBoundingRect()), (plots.key.sceneBoundingRect(), view)


def _tick_labels(axis) -> list[str]:
    """The tick labels the axis actually draws (pyqtgraph drops those that do not fit)."""
    from PySide6.QtGui import QImage, QPainter

    img = QImage(4, 4, QImage.Format.Format_RGB32)
    painter = QPainter(img)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in specs[2]]


# ---- bug 1: schedule plots cut off on the right -----------------------------------------------------------------
@pytest.mark.parametrize("size", [(1280, 800), (1024, 700), (1600, 1000)])
def test_schedule_plots_fit_their_dock_for_sigmoid_at_any_window_size(qtbot, window, tmp_path, size):
    window.resize(*size)
    _settle(qtbot)
    form = window.schedule.form
    form.kind.setCurrentIndex(form.kind.findData("sigmoid") if form.kind.findData("sigmoid") >= 0
                              else form.kind.findText("sigmoid"))
    _settle(qtbot)
    assert window.state.schedule.kind == "sigmoid"
    plots = window.schedule.plots
    _plots_fit(plots)
    # the x range reaches T and the T end is labelled on screen
    (x0, x1), _ = plots.plot_items[0].viewRange()
    assert x1 >= window.state.schedule.T
    assert str(window.state.schedule.T) in _tick_labels(plots.plot_items[-1].getAxis("bottom"))
    # the key, once wrapped, still says every parameter
    assert "sigmoid_range" in plots.key.text
    # maximise-like growth after the resize: still fits
    window.resize(size[0] + 300, size[1] + 100)
    _settle(qtbot)
    _plots_fit(plots)
    # Export → Schedule plot as PNG: the exported picture is the whole (fitting) scene
    from PySide6.QtGui import QImage

    out = window.schedule.export_png(tmp_path / "s.png", scale=1.0)
    img = QImage(str(out))
    ratio = img.width() / max(1, plots.viewport().width())
    assert img.width() >= 600 and abs(img.height() - plots.viewport().height() * ratio) <= 2 + ratio


def test_signal_kept_title_does_not_call_the_noise_share_signal(window):
    title = window.schedule.plots.plot_items[1].titleLabel.text
    signal_part = title.split("noise's share")[0]
    assert "signal kept" in signal_part and "√(1−ᾱ_t)" not in signal_part
    assert "√(1−ᾱ_t)" in title.split("noise's share")[1]


# ---- bug 2: glyphs every installed font has ----------------------------------------------------------------------
DEJAVU = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf",
          "/usr/share/fonts/dejavu/DejaVuSans.ttf")


def _dejavu():
    from pathlib import Path

    from PySide6.QtGui import QRawFont

    path = next((p for p in DEJAVU if Path(p).is_file()), None)
    assert path, "DejaVu Sans is missing: scripts/install.sh installs fonts-dejavu-core"
    font = QRawFont(path, 12.0)
    assert font.isValid()
    return font


def _window_texts(window) -> list[str]:
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel

    texts = [b.text() for b in window.findChildren(QAbstractButton)]
    texts += [lbl.text() for lbl in window.findChildren(QLabel)]
    for combo in window.findChildren(QComboBox):
        texts += [combo.itemText(i) for i in range(combo.count())]
    texts += [window.tabs.tabText(i) for i in range(window.tabs.count())]
    for menu_action in window.menuBar().actions():
        texts.append(menu_action.text())
        texts += [a.text() for a in menu_action.menu().actions()]
    return texts


def test_every_glyph_on_screen_is_in_dejavu_also_while_frames_play(qtbot, window):
    font = _dejavu()
    bar = window.sampling.player_bar
    bar.set_count(5)
    bar.play_button.click()  # the user presses Play: the button now offers Pause
    try:
        assert bar.player.playing and bar.play_button.text().endswith("Pause")
        assert not bar.play_button.icon().isNull()  # Qt's standard pause icon stands in for the glyph
        texts = _window_texts(window)
    finally:
        bar.player.pause()
        bar.set_count(0)
    missing = {ch: t for t in texts for ch in t if not ch.isspace() and not font.supportsCharacter(ord(ch))}
    assert not missing, {f"U+{ord(c):04X}": t for c, t in missing.items()}


# ---- bug 8: the Sampling tab's first look ---------------------------------------------------------------------------
def _trained_model(tmp_path):
    import torch

    from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
    from diffusion_studio.core.nets.unet import UNet, preset_config
    from diffusion_studio.core.io.models import LoadedModel

    torch.manual_seed(0)
    cfg = preset_config("tiny", 8, 1)
    model = UNet(cfg)
    meta = {"step": 3, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 30).to_dict(),
            "data": {"spec": "test"}}
    path = save_checkpoint(tmp_path / "trained" / "checkpoint.json", {"ema": dict(model.state_dict())}, meta)
    ckpt = load_checkpoint(path)
    return LoadedModel(name="trained · step 3", checkpoint=ckpt, model=ckpt.build_model("cpu"), device="cpu")


def test_sampling_first_look_is_a_quick_ddim_run_on_the_shipped_model_with_a_caption(qtbot, settings, tmp_path):
    from diffusion_studio.gui.main_window import MainWindow
    from diffusion_studio.gui.panels.sampling.models import TRAINED

    settings.setValue("sampling/sampler", 0)  # remembered from an earlier session: DDPM with all T steps
    settings.setValue("sampling/n_images", 4)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    panel = win.sampling
    win.state.set_model(_trained_model(tmp_path))  # a training run just finished: its model is still noise
    with qtbot.waitSignal(panel.run_finished, timeout=120_000):
        win.show_panel(panel)  # the newcomer opens the Sampling tab
    assert panel.loaded.name == "builtin:mnist"
    assert panel.job.sampler == "ddim" and panel.job.steps <= 20
    assert panel.controls.sampler == ("ddpm", "beta_tilde")  # the user's own choice is kept for ▶ Sample
    caption = panel.t_label.text()
    assert "builtin:mnist" in caption and "DDIM, 20 steps" in caption and "seed 0" in caption
    assert panel.x_pane.current is not None and panel.frames

    # Switching to the trained model: the MNIST model's frames leave the screen.
    panel.chooser.select(TRAINED)
    assert panel.loaded.name.startswith("trained")
    assert panel.frames == [] and panel.x_pane.current is None and "builtin:mnist" not in panel.t_label.text()
    win.close()


# ---- the default window truncates no label; bug 6: Continue's labels --------------------------------------------
def _truncated(window) -> list:
    """Every visible text that does not fit: a label or button narrower than its text, a combo whose field is
    narrower than its current item, a wrapped label lower than its text needs at its width."""
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QStyle, QStyleOptionComboBox

    out = []
    for w in window.findChildren(QLabel):
        if not w.isVisible() or not w.text():
            continue
        if w.wordWrap():
            need = w.heightForWidth(w.contentsRect().width())
            if w.height() + 1 < need:
                out.append(("wrapped label", w.objectName(), w.text()[:50], w.height(), need))
        elif w.sizeHint().width() > w.width() + 1:
            out.append(("label", w.objectName(), w.text()[:50], w.width(), w.sizeHint().width()))
    for w in window.findChildren(QAbstractButton):
        if not w.isVisible() or not w.text():
            continue
        icon = w.iconSize().width() + 4 if not w.icon().isNull() else 0
        box = 22 if w.metaObject().className() in ("QCheckBox", "QRadioButton") else 8
        need = w.fontMetrics().horizontalAdvance(w.text().replace("&", "")) + icon + box
        if need > w.width() + 1:
            out.append(("button", w.objectName(), w.text()[:50], w.width(), need))
    for w in window.findChildren(QComboBox):
        if not w.isVisible() or not w.currentText():
            continue
        opt = QStyleOptionComboBox()
        w.initStyleOption(opt)
        field = w.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, opt,
                                         QStyle.SubControl.SC_ComboBoxEditField, w)
        need = w.fontMetrics().horizontalAdvance(w.currentText())
        if need > field.width() + 1:
            out.append(("combo", w.objectName(), w.currentText()[:50], field.width(), need))
    return out


def test_the_default_window_truncates_no_label_also_after_continue(qtbot, settings, tmp_path):
    from diffusion_studio.cli import main as cli_main
    from diffusion_studio.gui.main_window import MainWindow

    settings.setValue("sampling/autostart", False)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    assert win.width() <= 1280 and win.height() <= 800  # the window fits the size it is given
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        _settle(qtbot)
        assert not _truncated(win), (win.tabs.tabText(i), _truncated(win))

    # Continue… a run: the Schedule label and "Start continues … (same weights, EMA, …)" are whole
    run = tmp_path / "run"
    assert cli_main(["train", "--data", "builtin:digits", "--size", "8", "--model", "tiny", "--T", "20", "--steps",
                     "2", "--batch", "4", "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    win.show_panel(win.training)
    with qtbot.waitSignal(win.training.checkpoint_loaded, timeout=60_000):
        win.training.load_checkpoint(run / "checkpoint.json")
    _settle(qtbot, 200)
    form = win.training.form
    assert form.resume_label.isVisible() and "streams" in form.resume_label.text()
    assert not _truncated(win), _truncated(win)
    win.resize(1600, 1000)
    _settle(qtbot, 200)
    assert not _truncated(win), _truncated(win)
    win.close()


# ---- the Images panel: drop target, centre crop --------------------------------------------------------------------
def test_dragging_files_over_the_images_panel_highlights_it(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent

    panel = window.images
    (tmp_path / "a.png").write_bytes(b"")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "a.png"))])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(panel, enter)
    assert enter.isAccepted()
    assert panel.thumbnails.property("dropTarget") is True and "dashed" in panel.thumbnails.styleSheet()
    assert panel.status_label.text() == "Drop to open these files"
    QApplication.sendEvent(panel, QDragLeaveEvent())
    assert not panel.thumbnails.property("dropTarget") and panel.thumbnails.styleSheet() == ""
    assert panel.status_label.text().startswith("sample photos")


def test_a_non_square_image_says_it_was_centre_cropped(qtbot, window):
    panel = window.images
    names = [e.name for e in panel.entries]
    for name in names:
        panel.load_builtin_sample(name)
        entry = panel.entries[names.index(name)]
        w, h = entry.source_size
        text = panel.crop_label.text()
        if w != h:
            side = min(w, h)
            assert panel.crop_label.isVisible() and f"{w}×{h}, centre-cropped to {side}×{side}" in text
        else:
            assert not panel.crop_label.isVisible()
    assert any(e.source_size[0] != e.source_size[1] for e in panel.entries)  # the samples include one


# ---- exports: a readable grid, t on GIF and filmstrip frames, dialogs in the last folder ---------------------------
def test_exports_are_readable_and_carry_their_t(qtbot, settings, tmp_path):
    import numpy as np
    from PIL import Image

    from diffusion_studio.gui.widgets.export_labels import STRIP
    from diffusion_studio.gui.main_window import MainWindow

    settings.setValue("sampling/n_images", 4)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    panel = win.sampling
    with qtbot.waitSignal(panel.run_finished, timeout=120_000):
        win.show_panel(panel)  # the first look samples 4 digits (28 px) with DDIM
    last = panel.frames[-1].x
    assert max(last.shape[:2]) < 256  # the grid itself is small (2×2 of 28 px + padding)
    assert panel.export_grid(tmp_path / "grid.png")
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    k = grid.shape[0] // last.shape[0]
    assert k >= 2 and grid.shape[0] == k * last.shape[0] and grid.shape[1] == k * last.shape[1]
    assert min(grid.shape[:2]) >= 256
    np.testing.assert_array_equal(grid[::k, ::k].reshape(last.shape), last)  # whole-factor nearest neighbour
    np.testing.assert_array_equal(grid[k - 1::k, k - 1::k].reshape(last.shape), last)

    assert panel.export_gif(tmp_path / "a.gif", with_x0=False)
    gif = Image.open(tmp_path / "a.gif")
    strips = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frame = np.asarray(gif.convert("L"))
        strips.append(frame[-STRIP:])
    assert all(s.max() > 128 for s in strips)  # every frame has white caption text under it
    assert not np.array_equal(strips[0], strips[-1])  # "t = 1000" is not "t = 0"

    fwd = win.forward
    out = fwd.export_filmstrip(tmp_path / "film.png")
    film = np.asarray(Image.open(out).convert("L"))
    assert film.shape[0] == fwd.filmstrip.shape[0] + STRIP and film.shape[1] == fwd.filmstrip.shape[1]
    n = len(fwd.film_pane.label.text.split("t = ", 1)[1].split(","))
    w = film.shape[1] // n
    for i in range(n):  # a caption under every frame
        assert film[-STRIP:, i * w + 2:(i + 1) * w - 2].max() > 128, i
    win.close()


def test_file_dialogs_start_in_the_last_folder_the_user_chose(qtbot, window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    chosen = tmp_path / "my exports"
    chosen.mkdir()
    starts = []

    def save_name(_parent, _caption, start, _filters):
        starts.append(start)
        return str(chosen / "out.png"), ""

    def open_names(_parent, _caption, start, _filters):
        starts.append(start)
        return [], ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_name))
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(open_names))
    window.schedule.export_png_dialog()  # the user saves the schedule plot into "my exports"
    assert (chosen / "out.png").exists()
    window.forward.export_filmstrip_dialog()
    window.images.open_files_dialog()
    from pathlib import Path

    assert Path(starts[1]).parent == chosen and Path(starts[2]) == chosen, starts


# ---- one plot theme across the app --------------------------------------------------------------------------------
def test_every_plot_in_the_app_has_the_one_theme(qtbot, window):
    import pyqtgraph as pg

    from diffusion_studio.gui.widgets import plot_theme

    views = [v for v in window.findChildren(pg.GraphicsView) if any(isinstance(i, pg.PlotItem)
                                                                     for i in v.scene().items())]
    assert len(views) >= 6  # schedule, loss, loss by t, FID, run curves, histogram …
    want_bg = pg.mkColor(plot_theme.BACKGROUND).name()
    want_text = pg.mkColor(plot_theme.TEXT).name()
    for view in views:
        assert view.backgroundBrush().color().name() == want_bg, view.objectName() or type(view).__name__
        for plot in (i for i in view.scene().items() if isinstance(i, pg.PlotItem)):
            axis = plot.getAxis("bottom")
            assert axis.textPen().color().name() == want_text, (view.objectName(), type(view).__name__)
