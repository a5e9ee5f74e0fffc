"""The Schedule panel's plots: β/β̃, the ᾱ family and log SNR against t, a linked t cursor and a dashed overlay."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsItem

from ....core.diffusion.schedule import NoiseSchedule
from ...widgets.plot_theme import apply_plot_theme

# key → (NoiseSchedule attribute, legend name, colour, plot row, tooltip). Every number plotted is a core tensor.
CURVES: dict[str, tuple[str, str, str, int, str]] = {
    "beta": ("betas", "β_t", "#ff9f1c", 0, "β_t: the variance of the noise added at step t, q(x_t|xₜ₋₁)."),
    "beta_tilde": ("posterior_variance", "β̃_t", "#f06bc8", 0,
                   "β̃_t = β_t (1−ᾱₜ₋₁)/(1−ᾱ_t): the variance of the true posterior q(xₜ₋₁|x_t, x_0)."),
    "alpha": ("alphas", "α_t", "#9a9aff", 1, "α_t = 1 − β_t: how much of xₜ₋₁ one step keeps."),
    "alpha_bar": ("alpha_bars", "ᾱ_t", "#29c4ff", 1, "ᾱ_t = α_1·…·α_t: how much of x_0's variance survives to x_t."),
    "sqrt_alpha_bar": ("sqrt_alpha_bars", "√ᾱ_t", "#5fd35f", 1,
                       "√ᾱ_t: the weight of x_0 in x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε."),
    "sqrt_one_minus_alpha_bar": ("sqrt_one_minus_alpha_bars", "√(1−ᾱ_t)", "#ff5a5a", 1,
                                 "√(1−ᾱ_t): the weight of the noise ε in x_t."),
    "log_snr": ("log_snr", "log SNR", "#ffd23f", 2,
                "log SNR_t = log(ᾱ_t/(1−ᾱ_t)): signal over noise; 0 where they match."),
}
PLOT_TITLES = ("noise added per step", "signal kept", "")
NOISE_SHARE = ("sqrt_one_minus_alpha_bar",)  # drawn with the signal curves, but it is the noise's share, not signal


def _title(row: int) -> str:
    """The plot's title with each curve's name in its colour, so the exported PNG carries its own key."""
    def names(keys) -> str:
        return ", ".join(f"<span style='color:{CURVES[k][2]}'>{CURVES[k][1]}</span>" for k in keys)

    keys = [k for k, (_a, _n, _c, r, _t) in CURVES.items() if r == row]
    signal = [k for k in keys if k not in NOISE_SHARE]
    noise = [k for k in keys if k in NOISE_SHARE]
    lead = f"{PLOT_TITLES[row]}: " if PLOT_TITLES[row] else ""
    text = f"<span style='color:#bbbbbb'>{lead}</span>" + names(signal)
    if noise:
        text += "<span style='color:#bbbbbb'> · noise's share: </span>" + names(noise)
    return text


def wrap_label(label: pg.LabelItem, width: float) -> None:
    """Let a LabelItem wrap at ``width`` px when its text is wider, so it never makes the layout wider than the view
    (pyqtgraph gives a label a minimum width of its whole text: a long key pushed the plots past the dock's edge)."""
    item = label.item
    item.setTextWidth(-1)
    if item.boundingRect().width() > width > 20:
        item.setTextWidth(width)
    label.updateMin()
    label.resizeEvent(None)


def curve_icon(color: str, dashed: bool = False, size: int = 18) -> QIcon:
    """A short line in the curve's colour, used as the show/hide checkbox's icon (the checkboxes double as key)."""
    pix = QPixmap(size, size)
    pix.fill(QColor(0, 0, 0, 0))
    p = QPainter(pix)
    pen = QPen(QColor(color), 3)
    if dashed:
        pen.setStyle(Qt.PenStyle.DashLine)
    p.setPen(pen)
    p.drawLine(1, size // 2, size - 1, size // 2)
    p.end()
    return QIcon(pix)


class SchedulePlots(pg.GraphicsLayoutWidget):
    """Three stacked plots with linked x axes. One PlotDataItem per curve (solid: the app's schedule, dashed: the
    comparison) updated with setData, and one movable vertical cursor per plot; dragging any moves them all and
    emits ``cursor_moved(x)`` (programmatic moves through ``set_cursor`` emit nothing)."""

    cursor_moved = Signal(float)
    cursor_released = Signal()
    MIN_VIEW = 85  # px of plot area each of the three keeps (its minimum height follows the wrapped titles and key)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(240, 300)
        self.ci.layout.setContentsMargins(2, 2, 16, 2)  # room for half of the last tick's text ("1000") on the right
        self.ci.layout.setVerticalSpacing(2)
        self.plot_items: list[pg.PlotItem] = []
        for row in range(len(PLOT_TITLES)):
            plot = self.addPlot(row=row, col=0)
            plot.setTitle(_title(row), size="9pt")
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMenuEnabled(True)
            plot.getAxis("left").setWidth(42)
            # the T end's label ("1000") reaches past the axis by half its width; the right margin has room for it
            plot.getAxis("bottom").setStyle(hideOverlappingLabels=False)
            if row:
                plot.setXLink(self.plot_items[0])
            if row < len(PLOT_TITLES) - 1:  # the x axes are linked: only the lowest plot writes out the t values
                plot.getAxis("bottom").setStyle(showValues=False)
            self.plot_items.append(plot)
        self.plot_items[-1].setLabel("bottom", "t")
        self.plot_items[1].setYRange(-0.05, 1.08, padding=0)
        self.plot_items[1].enableAutoRange(axis="y", enable=False)
        self.key = self.addLabel("", row=len(PLOT_TITLES), col=0, size="8pt", color="#cccccc")

        self.curves: dict[str, pg.PlotDataItem] = {}
        self.compare_curves: dict[str, pg.PlotDataItem] = {}
        for key, (_attr, name, color, row, _tip) in CURVES.items():
            plot = self.plot_items[row]
            # β is drawn wider than β̃ because the two nearly coincide beyond the first steps
            self.curves[key] = plot.plot(pen=pg.mkPen(color, width=3.5 if key == "beta" else 2), name=name)
            dashed = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine)
            # connect="finite": one path even where log β̃_1 = log 0 is missing, so the dashes stay dashes
            cmp = pg.PlotDataItem(pen=dashed, name=f"{name} (compare)", connect="finite")
            cmp.setVisible(False)
            plot.addItem(cmp)
            self.compare_curves[key] = cmp
        # Scrubbing t moves only the cursors, yet every move repainted the axes' grids and the 1000-point curves
        # (~25 ms of a ~35 ms slider move). Cached as pixmaps, they are re-rendered only when their data or range
        # change (bench/bench_scrub.py: a whole-window slider move 35 → 12 ms).
        for plot in self.plot_items:
            for name in ("left", "bottom", "top", "right"):
                plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        for item in (*self.curves.values(), *self.compare_curves.values()):
            item.curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

        self.cursors: list[pg.InfiniteLine] = []
        for plot in self.plot_items:
            line = pg.InfiniteLine(pos=0, angle=90, movable=True, pen=pg.mkPen("#e8e8e8", width=1.5),
                                   hoverPen=pg.mkPen("#ffffff", width=3))
            line.setZValue(10)
            line.setToolTip("Drag to choose t; the Forward panel follows (and moves this line when you scrub there).")
            line.sigPositionChanged.connect(self._on_cursor_moved)
            line.sigPositionChangeFinished.connect(lambda _line: self.cursor_released.emit())
            plot.addItem(line, ignoreBounds=True)
            self.cursors.append(line)
        apply_plot_theme(self)  # the app's one plot theme (titles keep their coloured curve names)
        self._moving = False
        self._visible = {key: True for key in CURVES}
        self._compare_on = False

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """Its minimum: in the dock's scroll area the layout's preferred height decides when it scrolls, and the
        view's own hint (480 px) made it scroll at 1280×800 with room to spare; the plots expand into what is left."""
        return QSize(300, self.minimumHeight())

    # ---- fitting the view --------------------------------------------------------------------------------------------
    def labels(self) -> list[pg.LabelItem]:
        return [self.key, *(plot.titleLabel for plot in self.plot_items)]

    def fit_labels(self, width: float | None = None) -> None:
        """Wrap the titles and the key to the view's width (margins of the layout taken off)."""
        if not hasattr(self, "key"):
            return  # pyqtgraph resizes once while it builds the view, before the labels exist
        left, _top, right, _bottom = self.ci.layout.getContentsMargins()
        width = (self.viewport().width() if width is None else width) - left - right - 4
        wrap_label(self.key, width)
        for plot in self.plot_items:  # a title sits over the view box only, right of the left axis
            wrap_label(plot.titleLabel, width - plot.getAxis("left").width() - 6)
        self._keep_views_readable()

    def _keep_views_readable(self) -> None:
        """A minimum height that leaves every plot MIN_VIEW px of view under its (wrapped) title and over its x axis:
        squashed to ~45 px, the log-SNR ticks ran together and the sampling cursor's label was cut."""
        for plot in self.plot_items:
            if plot.vb.minimumHeight() != self.MIN_VIEW:
                plot.vb.setMinimumHeight(self.MIN_VIEW)
        self.ci.layout.invalidate()
        need = int(math.ceil(self.ci.effectiveSizeHint(Qt.SizeHint.MinimumSize).height())) + 2
        if need != self.minimumHeight():
            self.setMinimumHeight(need)

    def resizeEvent(self, ev) -> None:
        self.fit_labels(ev.size().width() if ev is not None else None)
        super().resizeEvent(ev)
        if getattr(self, "_x_auto", None) is not None and np.allclose(self.plot_items[0].viewRange()[0], self._x_auto):
            self._fit_x_range()  # still the range we set (not the user's zoom): keep room for the T label

    def _fit_x_range(self) -> None:
        """0..T with room at each end for half a tick label ("1000"): a label that does not fit is not drawn."""
        px = max(80.0, float(self.plot_items[0].vb.width() or self.width() or 300))
        pad = max(0.03, 18.0 / px)
        self.plot_items[0].setXRange(0.0, self._x_hi, padding=pad)
        self._x_auto = tuple(self.plot_items[0].viewRange()[0])

    # ---- data --------------------------------------------------------------------------------------------------------
    @staticmethod
    def x_for(schedule: NoiseSchedule, normalised: bool) -> np.ndarray:
        t = np.arange(1, schedule.T + 1, dtype=np.float64)  # the paper's t for index 0..T−1
        return t / schedule.T if normalised else t

    def set_schedule(self, schedule: NoiseSchedule, normalised: bool) -> None:
        x = self.x_for(schedule, normalised)
        for key, (attr, *_rest) in CURVES.items():
            self.curves[key].setData(x, getattr(schedule, attr).detach().cpu().numpy())
        self.set_x_extent(schedule.T, normalised)

    def set_compare(self, schedule: NoiseSchedule | None, normalised: bool) -> None:
        self._compare_on = schedule is not None
        for key, (attr, *_rest) in CURVES.items():
            item = self.compare_curves[key]
            if schedule is None:
                item.setData([], [])
            else:
                item.setData(self.x_for(schedule, normalised), getattr(schedule, attr).detach().cpu().numpy())
            item.setVisible(self._compare_on and self._visible[key])

    def set_log_beta(self, on: bool, T: int, normalised: bool) -> None:
        self.plot_items[0].setLogMode(y=on)
        self.set_x_extent(T, normalised)  # setLogMode turns autorange back on

    def set_key(self, solid: NoiseSchedule, dashed: NoiseSchedule | None) -> None:
        text = f"solid: {solid.describe()}"
        if dashed is not None:
            text += f"<br>dashed: {dashed.describe()}"
        self.key.setText(text)
        self.fit_labels()

    def set_curve_visible(self, key: str, visible: bool) -> None:
        self._visible[key] = visible
        self.curves[key].setVisible(visible)
        self.compare_curves[key].setVisible(visible and self._compare_on)

    def set_x_extent(self, T: int, normalised: bool) -> None:
        hi = 1.0 if normalised else float(T)
        self._moving = True  # new bounds may clamp the lines: that is not the user moving t
        try:
            for line in self.cursors:
                line.setBounds([0.0, hi])
        finally:
            self._moving = False
        self.plot_items[-1].setLabel("bottom", "t / T" if normalised else "t")
        self._x_hi = hi
        self._fit_x_range()
        for plot in self.plot_items:
            plot.enableAutoRange(axis="y", enable=plot is not self.plot_items[1])

    # ---- cursor ------------------------------------------------------------------------------------------------------
    @property
    def cursor_value(self) -> float:
        return float(self.cursors[0].value())

    def set_cursor(self, x: float) -> None:
        """Move every cursor to x without emitting ``cursor_moved``."""
        self._moving = True
        try:
            for line in self.cursors:
                line.setValue(x)
        finally:
            self._moving = False

    def _on_cursor_moved(self, line: pg.InfiniteLine) -> None:
        if self._moving:
            return
        x = float(line.value())
        self._moving = True
        try:
            for other in self.cursors:
                if other is not line:
                    other.setValue(x)
        finally:
            self._moving = False
        self.cursor_moved.emit(x)
