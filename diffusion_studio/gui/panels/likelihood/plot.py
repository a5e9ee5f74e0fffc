"""The Likelihood view's displays: the per-t terms on log axes with L_T and L_0 marked, their running sum, and the
hover probe that shows q's and p_θ's Gaussians at one t for one image."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QScrollArea, QWidget

from ....data.convert import to_uint8
from ...widgets.imageview import ImagePane
from ...widgets.plot_theme import TEXT, apply_plot_theme, set_title
from ....jobs.likelihood import Frame

COLOURS = {"A": (90, 160, 255), "B": (255, 150, 40)}
PENS = {"A": pg.mkPen(COLOURS["A"], width=2), "B": pg.mkPen(COLOURS["B"], width=2, style=pg.QtCore.Qt.DashLine)}
BRUSH = {k: pg.mkBrush(*c) for k, c in COLOURS.items()}
SYM = {"beta": "β", "beta_tilde": "β̃"}


class LogAxis(pg.AxisItem):
    """A log axis labelled at the decades only (and at 2· and 5· when fewer than two decades are in view); the other
    ticks are marked, unlabelled. pyqtgraph labelled every minor tick of a short range: "4·10¹5·10¹6789 10²"."""

    def logTickValues(self, minVal, maxVal, size, stdTicks):  # noqa: N802, N803 (pyqtgraph's names)
        lo, hi = math.floor(minVal), math.ceil(maxVal)
        decades = [float(v) for v in range(lo, hi + 1) if minVal <= v <= maxVal]
        minor = [v + math.log10(k) for v in range(lo, hi) for k in range(2, 10) if minVal < v + math.log10(k) < maxVal]
        labelled = decades
        if len(decades) < 2:
            labelled = sorted(decades + [x for x in minor if round(10 ** (x % 1)) in (2, 5)])
        return [(1.0, labelled), (None, [x for x in minor if x not in labelled])]


def log_axes(*names: str) -> dict[str, LogAxis]:
    return {name: LogAxis(name) for name in names}


def _style(plot: pg.PlotWidget, title: str) -> None:
    item = plot.getPlotItem()
    set_title(item, title)
    apply_plot_theme(plot)  # the app's one plot theme
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        # minor ticks marked, but on a log axis only the decades labelled: "2 3 4 … 9" between them ran together
        axis.setStyle(maxTickLevel=1, maxTextLevel=0 if isinstance(axis, LogAxis) else 1)
        axis.enableAutoSIPrefix(False)  # "(x0.001)" on a log axis only confused the decades
    item.vb.setDefaultPadding(0.06)  # room inside the view for the L₀ and L_T labels beside the end points
    item.setMenuEnabled(False)


def fit_title(plot: pg.PlotWidget, width: float | None = None) -> None:
    """Wrap the title at the plot's width: pyqtgraph gives a title its whole text as minimum width, which made the
    plot's scene wider than a narrow (1024 px) window's room and cut the plot off on the right."""
    pi = plot.getPlotItem()
    label = pi.titleLabel
    item = label.item
    # the title sits over the view box only, right of the left axis
    room = (plot.width() if width is None else width) - pi.getAxis("left").width() - 12
    item.setTextWidth(-1)
    if item.boundingRect().width() > room > 40:
        item.setTextWidth(room)
    label.updateMin()
    label.resizeEvent(None)


class TermsPlot(pg.PlotWidget):
    """Lₜ₋₁ against t on log–log axes (L_0 at t = 1, L_T at t = T + 1), one curve per model; emits the t under
    the mouse (the paper's t) as ``hovered``."""

    hovered = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent, axisItems=log_axes("left", "bottom"))
        self.setObjectName("termsPlot")
        item = self.getPlotItem()
        item.setLabel("bottom", "paper t (log axis)")
        item.setLabel("left", "L<sub>t−1</sub>, bits/dim")
        item.setLogMode(x=True, y=True)
        item.addLegend(offset=(8, -8))  # bottom left, the corner the falling curve leaves free (top right hid L₀)
        _style(self, "Terms of the bound: L<sub>t−1</sub> per t (log–log)")
        self.setMinimumSize(160, 150)  # below that the decades of the y axis run into each other
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.names: dict[str, str] = {}
        self.ends: dict[str, pg.ScatterPlotItem] = {}
        self.labels: list[pg.TextItem] = []
        self.cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((120, 120, 120), width=1))
        self.cursor.setVisible(False)
        item.addItem(self.cursor, ignoreBounds=True)
        self._moved = pg.SignalProxy(self.scene().sigMouseMoved, rateLimit=30, slot=self._on_move)
        self.T = 1000
        self.setToolTip("Each point is one KL term Lₜ₋₁ = KL(q(xₜ₋₁ | xₜ, x₀) ‖ p_θ(xₜ₋₁ | xₜ)) averaged over the "
                        "images, in bits per dimension; the big dot at t = 1 is the decoder term L₀ = −log p_θ(x₀|x₁), "
                        "the square at t = T + 1 the prior term L_T. Hover a t to see both Gaussians there.")

    def resizeEvent(self, ev) -> None:  # noqa: N802 (Qt's name)
        if ev is not None:
            fit_title(self, ev.size().width())
        super().resizeEvent(ev)

    def _curve(self, key: str, name: str) -> pg.PlotDataItem:
        if key in self.curves and self.names.get(key) != name:
            self.remove(key)  # another model under this key: a fresh legend entry
        if key not in self.curves:
            self.curves[key] = self.getPlotItem().plot([], [], pen=PENS[key], name=name)
            ends = pg.ScatterPlotItem(size=10, brush=BRUSH[key], pen=pg.mkPen("w"))
            self.getPlotItem().addItem(ends)
            self.ends[key] = ends
            self.names[key] = name
        return self.curves[key]

    def show_frame(self, frame: Frame, variance: str) -> None:
        t, y = frame.curves[variance]
        keep = y > 0  # a log axis: a term can only be 0 when p_θ equals q exactly
        curve = self._curve(frame.key, frame.name)
        curve.setData(t[keep], y[keep])
        if frame.estimate:
            curve.setSymbol("o")
            curve.setSymbolSize(3)
            curve.setSymbolBrush(BRUSH[frame.key])
        else:
            curve.setSymbol(None)
        spots = []
        if t.size and t[0] == 1 and y[0] > 0:
            spots.append({"pos": (0.0, math.log10(y[0])), "symbol": "o"})
        if frame.prior_bits > 0:
            spots.append({"pos": (math.log10(frame.T + 1), math.log10(frame.prior_bits)), "symbol": "s"})
        self.ends[frame.key].setData(spots)
        self.T = frame.T
        self._mark_ends(frame, variance)

    def _mark_ends(self, frame: Frame, variance: str) -> None:
        if frame.key != "A":
            return
        for lab in self.labels:
            self.getPlotItem().removeItem(lab)
        self.labels = []
        t, y = frame.curves[variance]
        marks = []
        # each label beside its point, towards the inside of the plot (L₀ right of the first point, L_T left of the
        # last): centred over them, half of L_T lay beyond the x range's end and was cut to "L_I"
        if t.size and t[0] == 1 and y[0] > 0:
            marks.append(("L₀", 0.0, math.log10(y[0]), (-0.35, 0.5)))
        if frame.prior_bits > 0:
            marks.append(("L_T", math.log10(frame.T + 1), math.log10(frame.prior_bits), (1.25, 0.5)))
        for text, x, yy, anchor in marks:
            lab = pg.TextItem(text, color=TEXT, anchor=anchor)
            lab.setPos(x, yy)
            self.getPlotItem().addItem(lab, ignoreBounds=True)
            self.labels.append(lab)

    def remove(self, key: str) -> None:
        if key in self.curves:
            self.getPlotItem().removeItem(self.curves.pop(key))
            self.getPlotItem().removeItem(self.ends.pop(key))
            self.names.pop(key, None)
        if key == "A":
            for lab in self.labels:
                self.getPlotItem().removeItem(lab)
            self.labels = []

    def set_cursor(self, t: int | None) -> None:
        self.cursor.setVisible(t is not None)
        if t is not None:
            self.cursor.setValue(math.log10(max(1, t)))

    def _on_move(self, event) -> None:
        pos = event[0]
        vb = self.getPlotItem().vb
        if not self.sceneBoundingRect().contains(pos) or not vb.sceneBoundingRect().contains(pos):
            return
        x = vb.mapSceneToView(pos).x()
        t = int(round(10 ** x)) if math.isfinite(x) and x < 6 else self.T
        self.hovered.emit(max(1, min(self.T, t)))


class CumulativePlot(pg.PlotWidget):
    """Σ of the terms from t = 1 up to t, in bits/dim: where the bound comes from; the dashed level is the total."""

    def __init__(self, parent=None):
        super().__init__(parent, axisItems=log_axes("bottom"))
        self.setObjectName("cumulativePlot")
        item = self.getPlotItem()
        item.setLabel("bottom", "paper t (log axis)")
        item.setLogMode(x=True, y=False)
        _style(self, "Running sum from t = 1, bits/dim")
        self.setMinimumSize(160, 110)
        item.getAxis("left").enableAutoSIPrefix(False)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.totals: dict[str, pg.InfiniteLine] = {}
        self.setToolTip("How the bound builds up: the sum of L₀, L₁, …, Lₜ₋₁. A curve that jumps early and then "
                        "flattens says the small t carry the bound. The dashed line is the total with L_T.")

    def resizeEvent(self, ev) -> None:  # noqa: N802 (Qt's name)
        if ev is not None:
            fit_title(self, ev.size().width())
        super().resizeEvent(ev)

    def show_frame(self, frame: Frame, variance: str) -> None:
        t, cum = frame.cumulative[variance]
        if frame.key not in self.curves:
            self.curves[frame.key] = self.getPlotItem().plot([], [], pen=PENS[frame.key])
            line = pg.InfiniteLine(angle=0, movable=False,
                                   pen=pg.mkPen(PENS[frame.key].color(), width=1, style=pg.QtCore.Qt.DotLine))
            self.getPlotItem().addItem(line)
            self.totals[frame.key] = line
        self.curves[frame.key].setData(t, cum)
        total = frame.summary[variance]["bits_per_dim"]
        self.totals[frame.key].setVisible(frame.done == frame.total and math.isfinite(total))
        if math.isfinite(total):
            self.totals[frame.key].setValue(total)

    def remove(self, key: str) -> None:
        if key in self.curves:
            self.getPlotItem().removeItem(self.curves.pop(key))
            self.getPlotItem().removeItem(self.totals.pop(key))


def _u8(arr: np.ndarray) -> np.ndarray:
    return to_uint8(torch.from_numpy(np.ascontiguousarray(arr)))


class ProbeView(QWidget):
    """x_t, q's mean μ̃_t, p_θ's mean μ_θ and their gap (scaled to its own maximum) for one image, and the numbers."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("probeView")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        self.panes = [ImagePane(title, min_size=52) for title in
                      ("x<sub>t</sub>", "q: μ̃<sub>t</sub>", "p<sub>θ</sub>: μ<sub>θ</sub>", "|μ̃ − μ<sub>θ</sub>|")]
        for i, pane in enumerate(self.panes):
            grid.addWidget(pane, 0, i)
            grid.setColumnStretch(i, 1)  # the panes share the room with the text (they are Expanding: else all theirs)
        self.text = QLabel("Hover over the terms plot: q(xₜ₋₁ | xₜ, x₀) and p_θ(xₜ₋₁ | xₜ) at that t, for the "
                           "first image.")
        self.text.setObjectName("probeText")
        self.text.setWordWrap(True)
        # in a narrow (1024 px) window the text wraps into more lines than the row is high: it scrolls, not cut off
        text_scroll = QScrollArea()
        text_scroll.setWidget(self.text)
        text_scroll.setWidgetResizable(True)
        text_scroll.setFrameShape(QFrame.Shape.NoFrame)
        text_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        text_scroll.setMinimumWidth(40)
        self._grid, self._text_scroll, self._text_below = grid, text_scroll, None
        grid.setColumnStretch(4, 2)
        self._place_text(below=False)
        self.t: int | None = None

    NARROW = 420  # below this width the text goes under the panes: beside them it was a column of cut-off words

    def _place_text(self, below: bool) -> None:
        if below == self._text_below:
            return
        self._text_below = below
        self._grid.removeWidget(self._text_scroll)
        if below:
            self._grid.addWidget(self._text_scroll, 1, 0, 1, 4)
        else:
            self._grid.addWidget(self._text_scroll, 0, 4, 2, 1)
        self._grid.setRowStretch(0, 2 if below else 1)
        self._grid.setRowStretch(1, 1 if below else 0)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self._place_text(event.size().width() < self.NARROW)
        super().resizeEvent(event)

    def show_probe(self, t: int, probe, variance: str, name: str) -> None:
        self.t = t
        gap = np.abs(probe.q_mean - probe.p_mean)
        top = float(gap.max())
        scaled = gap / top * 2 - 1 if top > 0 else np.full_like(gap, -1.0)
        for pane, arr in zip(self.panes, (probe.x_t, probe.q_mean, probe.p_mean, scaled)):
            pane.show_u8(_u8(arr))
        self.panes[3].set_title(f"gap ≤ {top:.2g}")
        s2 = probe.p_var[variance]
        term = probe.terms.get(variance, math.nan) / math.log(2)
        if t == 1:
            self.text.setText(
                f"<b>t = 1</b> (decoder L₀, {name}): x₀ vs p_θ(x₀|x₁) = N(μ_θ, σ₁²I), "
                f"σ₁² = {'β₁' if variance == 'beta' else 'β̃₂'} = {s2:.3g}, over each 8-bit bin<br>"
                f"‖x₀ − μ_θ‖²/d = {probe.mean_gap:.3g} · −log p = <b>{term:.4g}</b> bits/dim (this image)")
            return
        self.text.setText(
            f"<b>t = {t}</b> ({name}) · q: N(μ̃_t, β̃_t I), β̃_t = {probe.q_var:.3g}<br>"
            f"p_θ: N(μ_θ, σ_t² I), σ_t² = {SYM[variance]}_t = {s2:.3g}<br>"
            f"‖μ̃_t − μ_θ‖²/d = {probe.mean_gap:.3g} · Lₜ₋₁ = <b>{term:.4g}</b> bits/dim (this image)")

    def clear(self) -> None:
        for pane in self.panes:
            pane.clear_image()
        self.t = None
