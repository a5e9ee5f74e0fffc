"""The Sampling view's fourth quadrant: a tab widget other views plug into, and its first tab, the run curves."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Signal
from PySide6.QtWidgets import (QButtonGroup, QSizePolicy, QStackedWidget, QToolButton, QVBoxLayout,
                               QWidget)

from ....core.diffusion.run_stats import StepStats
from ...widgets.plot_theme import apply_plot_theme

# key → (legend name, colour, tooltip). Every value is a StepStats field computed in the worker (core/run_stats.py).
RUN_CURVES: dict[str, tuple[str, str, str]] = {
    "x0_change": ("‖Δx̂₀‖", "#29c4ff",
                  "How much the predicted x̂₀ changed since the previous step (root mean square per pixel): "
                  "large early, when the model is still guessing, near 0 at the end."),
    "eps_std": ("std ε̂", "#ff9f1c", "Standard deviation of the predicted ε over every pixel: about 1 while x_t is "
                "mostly noise, as ε ~ N(0, I) has."),
    "sigma": ("σ_t", "#5fd35f", "The standard deviation of the fresh noise σ_t z this step added (0 for DDIM with "
              "η = 0 and at DDPM's last step)."),
}


class RunCurves(pg.PlotWidget):
    """Per-step curves of the run so far against the t at which ε_θ ran (T on the left, 0 on the right), with a
    cursor at the frame shown."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("runCurves")
        self.setMinimumSize(120, 100)
        plot = self.getPlotItem()
        plot.showGrid(x=True, y=True, alpha=0.25)
        plot.setLabel("bottom", "t at which ε<sub>θ</sub> ran")
        plot.invertX(True)   # sampling runs from T down to 0: time flows left to right
        # the key is the title, each name in its curve's colour: a legend box covered the curves of a small pane
        plot.setTitle(" · ".join(f"<span style='color:{c}'>{n}</span>" for n, c, _t in RUN_CURVES.values()),
                      size="9pt")
        self.curves = {key: plot.plot(pen=pg.mkPen(color, width=2), name=name)
                       for key, (name, color, _tip) in RUN_CURVES.items()}
        self.cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#e8e8e8", width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
        plot.addItem(self.cursor, ignoreBounds=True)
        self.cursor.hide()
        self.setToolTip("<br>".join(f"<b>{name}</b>: {tip}" for name, _c, tip in RUN_CURVES.values()))
        apply_plot_theme(self)  # the app's one plot theme
        self.reset()

    def resizeEvent(self, event) -> None:
        # wrap the title (the key) to the pane's width rather than letting it run past a narrow pane's edge
        plot = self.getPlotItem()
        if plot is not None and event is not None:  # pyqtgraph resizes once while building, before the plot exists
            item = plot.titleLabel.item
            item.setTextWidth(-1)
            # the title sits over the view box only, right of the left axis
            width = event.size().width() - int(plot.getAxis("left").width()) - 16
            if item.boundingRect().width() > width > 20:
                item.setTextWidth(width)
            plot.titleLabel.updateMin()
            # pyqtgraph fixes the title row at 30 px: a key wrapped onto a second line lost its last name (σ_t)
            height = max(30, int(item.boundingRect().height()) + 4)
            plot.titleLabel.setMaximumHeight(height)
            plot.layout.setRowFixedHeight(0, height)
        super().resizeEvent(event)

    def reset(self) -> None:
        self.t: list[int] = []
        self.values: dict[str, list[float]] = {key: [] for key in RUN_CURVES}
        for c in self.curves.values():
            c.setData([], [])
        self.cursor.hide()

    def add(self, stats: StepStats) -> None:
        self.t.append(stats.paper_t)
        for key in RUN_CURVES:
            self.values[key].append(float(getattr(stats, key)))
        self._redraw()

    def _redraw(self) -> None:
        t = np.asarray(self.t, dtype=np.float64)
        for key, curve in self.curves.items():
            # NaN (no previous x̂₀ at the first step) is left out rather than drawn as a gap-making zero
            curve.setData(t, np.asarray(self.values[key], dtype=np.float64), connect="finite")

    def set_cursor(self, paper_t: int | None) -> None:
        if paper_t is None or not math.isfinite(paper_t):
            self.cursor.hide()
        else:
            self.cursor.setValue(paper_t)
            self.cursor.show()


class TabHeader(QWidget):
    """The tabs' titles as a row of checkable buttons that wraps onto more rows when the quadrant is narrow: a tab
    bar hid its last titles behind scroll arrows (or cut them to "At…") in a 1024-px window."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("samplingTabHeader")
        self.buttons: list[QToolButton] = []
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(24)

    def add(self, title: str) -> QToolButton:
        b = QToolButton(self)
        b.setText(title)
        b.setCheckable(True)
        b.setAutoRaise(True)
        b.setObjectName(f"samplingTab_{title.replace(' ', '_')}")
        b.setStyleSheet("QToolButton { padding: 1px 3px; border: none; border-bottom: 2px solid transparent; }"
                        "QToolButton:checked { border-bottom: 2px solid palette(highlight); }")
        self.group.addButton(b)
        b.show()  # shown explicitly: a button added to a header not yet on screen would read as hidden
        self.buttons.append(b)
        self.relayout()
        return b

    def relayout(self, width: int | None = None) -> None:
        """Place the visible buttons left to right, starting a new row where the next would not fit."""
        width = self.width() if width is None else width
        x = y = row_h = 0
        for b in self.buttons:
            if b.isHidden():
                continue
            size = QSize(b.fontMetrics().horizontalAdvance(b.text()) + 10, b.sizeHint().height())  # tight: 2 a row
            if x and x + size.width() > width:
                x, y = 0, y + row_h + 1
                row_h = 0
            b.setGeometry(x, y, size.width(), size.height())
            x += size.width() + 1
            row_h = max(row_h, size.height())
        height = max(1, y + row_h + 2)
        if height != self.height():
            self.setFixedHeight(height)

    def minimumSizeHint(self) -> QSize:
        return QSize(max([40, *(b.fontMetrics().horizontalAdvance(b.text()) + 10 for b in self.buttons)]),
                     self.height())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.relayout(event.size().width())


class SamplingTabs(QWidget):
    """Tabs other views add with one line: ``panel.tabs.add_tab(widget, "Attention", tip)``. It answers the part of
    QTabWidget's API the app uses (addTab, indexOf, setTabVisible, currentIndex, tabText …), but its titles wrap
    onto a second row rather than hide behind scroll arrows."""

    currentChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("samplingTabs")
        self.setMinimumSize(120, 100)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.header = TabHeader()
        self.stack = QStackedWidget()
        lay.addWidget(self.header)
        lay.addWidget(self.stack, 1)
        self._applies: dict = {}
        self.wanted = "Run curves"  # the tab the user chose last: it comes back when a model shows it again
        self.run_curves = RunCurves()
        self.add_tab(self.run_curves, "Run curves", "Per-step numbers of the run so far")

    def hasHeightForWidth(self) -> bool:
        # A page's wrapped label must not make the pane grid trade the image rows' height for this quadrant's:
        # with it, the Latent and Compare tabs shrank the decoded samples above them to a dozen pixels each.
        return False

    # ---- the QTabWidget subset ------------------------------------------------------------------------------------
    def addTab(self, widget: QWidget, title: str) -> int:
        i = self.stack.addWidget(widget)
        b = self.header.add(title)
        b.clicked.connect(lambda _=False, w=widget: self._user_pick(w))
        if self.stack.count() == 1:
            self.setCurrentIndex(0)
        return i

    def count(self) -> int:
        return self.stack.count()

    def widget(self, i: int) -> QWidget | None:
        return self.stack.widget(i)

    def indexOf(self, widget: QWidget) -> int:
        return self.stack.indexOf(widget)

    def tabText(self, i: int) -> str:
        return self.header.buttons[i].text() if 0 <= i < self.count() else ""

    def setTabToolTip(self, i: int, tip: str) -> None:
        self.header.buttons[i].setToolTip(tip)

    def tabToolTip(self, i: int) -> str:
        return self.header.buttons[i].toolTip()

    def tabButton(self, i: int) -> QToolButton:
        return self.header.buttons[i]

    def setTabVisible(self, i: int, visible: bool) -> None:
        self.header.buttons[i].setHidden(not visible)
        self.header.relayout()

    def isTabVisible(self, i: int) -> bool:
        return 0 <= i < self.count() and not self.header.buttons[i].isHidden()

    def currentIndex(self) -> int:
        return self.stack.currentIndex()

    def currentWidget(self) -> QWidget | None:
        return self.stack.currentWidget()

    def setCurrentIndex(self, i: int) -> None:
        if not 0 <= i < self.count():
            return
        self.header.buttons[i].setChecked(True)
        if i != self.stack.currentIndex():
            self.stack.setCurrentIndex(i)
            self.currentChanged.emit(i)

    def setCurrentWidget(self, widget: QWidget) -> None:
        self.setCurrentIndex(self.indexOf(widget))

    # ---- what the panel calls -------------------------------------------------------------------------------------
    def add_tab(self, widget: QWidget, title: str, tip: str = "", applies=None) -> int:
        """Add a tab; ``applies(loaded_model) -> bool``, if given, shows it only for the models it concerns (the
        Latent tab for latent models, Attention for text models) — see ``set_model``."""
        i = self.addTab(widget, title)
        if tip:
            self.setTabToolTip(i, tip)
        if applies is not None:
            self._applies[widget] = applies
            self.setTabVisible(i, False)  # no model yet
        return i

    def _user_pick(self, widget: QWidget) -> None:
        self.wanted = self.tabText(self.indexOf(widget))
        self.setCurrentWidget(widget)

    def set_model(self, loaded) -> None:
        """Show the tabs that concern ``loaded`` and hide the others; the tab chosen last comes back when it shows,
        and a hidden current tab gives way to Run curves."""
        for widget, applies in self._applies.items():
            i = self.indexOf(widget)
            self.setTabVisible(i, bool(loaded is not None and applies(loaded)))
        wanted = self.indexOf(self.tab(self.wanted)) if self.tab(self.wanted) is not None else -1
        if wanted >= 0 and self.isTabVisible(wanted):
            self.setCurrentIndex(wanted)
        elif not self.isTabVisible(self.currentIndex()):
            self.setCurrentWidget(self.run_curves)

    def tab(self, title: str) -> QWidget | None:
        for i in range(self.count()):
            if self.tabText(i) == title:
                return self.widget(i)
        return None

    def show_tab(self, title: str) -> bool:
        """Show the tab called ``title`` (the tour, a restored session); it becomes the one chosen last, and shows
        when a model it concerns is in use (a hidden tab is not shown now)."""
        w = self.tab(title)
        if w is not None:
            self.wanted = title
            if self.isTabVisible(self.indexOf(w)):
                self.setCurrentWidget(w)
        return w is not None
