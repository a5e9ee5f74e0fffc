"""The app fits a 1024×700 screen (every tab's main widgets get room), and exported caption strips are clean."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("width", [40, 64, 256, 300, 512])
def test_caption_strip_margins_are_background_for_every_width(qapp, width):
    from diffusion_studio.gui.widgets.export_labels import STRIP, caption_strip, labelled_filmstrip, with_caption

    for _ in range(3):  # the stray dots came from freed memory: repeat, with other allocations in between
        junk = [bytearray(b"\x7f" * (width * STRIP * 3)) for _ in range(4)]
        out = with_caption(np.full((width, width), 90, np.uint8), "t = 1000")
        strip = out[width:]
        assert strip.shape == (STRIP, width, 3)
        assert strip[:2].max() == 0 and strip[-2:].max() == 0      # top and bottom margins: background
        assert strip[:, :1].max() == 0 and strip[:, -1:].max() == 0  # left and right margins: background
        assert strip.max() > 200                                       # and the caption itself is there
        del junk
    lone = caption_strip(width, [])
    assert lone.max() == 0                                             # nothing drawn: all background
    # narrow frames: "t = 1000" shrinks to its column, so nothing is drawn in the gaps between frames
    gap, n = 2, 4
    film = np.full((width, n * width + (n - 1) * gap), 90, np.uint8)
    labelled = labelled_filmstrip(film, [1000, 500, 10, 1], gap)[width:]
    for i in range(1, n):
        x = i * (width + gap) - gap
        assert labelled[:, x:x + gap].max() == 0, f"text spilled into the gap before frame {i}"


# ---- the window fits a 1024×700 screen -----------------------------------------------------------------------------
def _main_widgets(win):
    """The widgets a learner looks at: every image pane and plot of the current tab and of the open docks."""
    import pyqtgraph as pg
    from PySide6.QtWidgets import QDockWidget, QListWidget

    docks = [d for d in win.findChildren(QDockWidget) if d.isVisible() and not d.visibleRegion().isEmpty()]
    roots = [win.tabs.currentWidget()] + docks  # a dock behind another's tab is not on screen
    out = []
    for root in roots:
        for w in root.findChildren(pg.GraphicsView) + root.findChildren(QListWidget):
            if w.isVisible():
                out.append(w)
    return out


def _clipped(win) -> list:
    """Main widgets squeezed to (almost) nothing or reaching outside the window."""
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QScrollArea

    bad = []
    for w in _main_widgets(win):
        if w.width() < 40 or w.height() < 40:
            bad.append(("squeezed", type(w).__name__, w.objectName(), w.width(), w.height()))
            continue
        area = w.parentWidget()
        while area is not None and not isinstance(area, QScrollArea):
            area = area.parentWidget()
        if area is not None:  # in a scroll area (the Schedule dock): scrolled into view, the area must be in the window
            w = area.viewport()
        top_left = w.mapTo(win, QPoint(0, 0))
        if top_left.x() < 0 or top_left.y() < 0 or top_left.x() + w.width() > win.width() + 1 \
                or top_left.y() + w.height() > win.height() + 1:
            bad.append(("outside", type(w).__name__, w.objectName(), top_left.toTuple(), w.size().toTuple()))
    return bad


@pytest.mark.parametrize("size", [(1024, 700), (1280, 800)])
def test_every_tab_fits_a_small_screen(qtbot, settings, size):
    from PySide6.QtWidgets import QApplication

    from diffusion_studio.gui.main_window import MainWindow
    from test_gui_first_hour import _truncated

    settings.setValue("sampling/autostart", False)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    hint = win.minimumSizeHint()
    assert hint.width() <= 1024 and hint.height() <= 700, hint  # else the window cannot be made that small
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    assert win.width() == size[0] and win.height() == size[1]
    win.schedule.compare.setChecked(True)  # the second schedule form must fit the dock too
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        qtbot.wait(30)
        widgets = _main_widgets(win)
        assert len(widgets) >= 3, win.tabs.tabText(i)  # the thumbnails, the schedule plots and this tab's views
        assert not _clipped(win), (win.tabs.tabText(i), _clipped(win))
        # also no label cut at 1024×700, once the layout has settled (a model summary arrives as the model loads)
        qtbot.waitUntil(lambda: not _truncated(win), timeout=30_000)
    assert win.schedule.plots.width() <= win.schedule_dock.width()
    win.sampling.player_bar.frame_label.setText("frame 1000 / 1000")  # a long run's frame count
    QApplication.processEvents()
    assert win.minimumSizeHint().width() <= 1024 and win.width() == size[0]
    if win.learn_dock is not None:  # Help ▸ Tour: the Learn dock, in front of the Images dock
        from diffusion_studio.gui.tour.panel import start_tour

        start_tour(win)
        QApplication.processEvents()
        qtbot.wait(30)
        assert win.learn_dock.width() >= 200 and win.learn_dock.panel.height() >= 200
        assert not _clipped(win), _clipped(win)
        qtbot.waitUntil(lambda: not _truncated(win), timeout=30_000)
        assert win.learn_dock.panel.width() <= win.learn_dock.width()  # nothing of the step cut off at the right
        assert win.width() == size[0]
    win.close()
