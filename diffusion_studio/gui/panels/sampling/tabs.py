"""The Sampling view's fourth quadrant: a tab widget other views plug into, and its first tab, the run curves."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QTabWidget, QWidget

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
            width = event.size().width() - 10
            if item.boundingRect().width() > width > 20:
                item.setTextWidth(width)
            plot.titleLabel.updateMin()
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


class SamplingTabs(QTabWidget):
    """A QTabWidget whose tabs other views add with one line: ``panel.tabs.add_tab(widget, "Attention", tip)``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("samplingTabs")
        self.setDocumentMode(True)
        self.setMinimumSize(120, 100)
        self._applies: dict = {}
        self.run_curves = RunCurves()
        self.add_tab(self.run_curves, "Run curves", "Per-step numbers of the run so far")

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

    def set_model(self, loaded) -> None:
        """Show the tabs that concern ``loaded`` and hide the others; a hidden current tab gives way to Run curves."""
        for widget, applies in self._applies.items():
            i = self.indexOf(widget)
            self.setTabVisible(i, bool(loaded is not None and applies(loaded)))
        if not self.isTabVisible(self.currentIndex()):
            self.setCurrentWidget(self.run_curves)

    def tab(self, title: str) -> QWidget | None:
        for i in range(self.count()):
            if self.tabText(i) == title:
                return self.widget(i)
        return None

    def show_tab(self, title: str) -> bool:
        w = self.tab(title)
        if w is not None:
            self.setCurrentWidget(w)
        return w is not None
