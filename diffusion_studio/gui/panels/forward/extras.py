"""Additions to the Forward panel: one stated colour mapping for x_0, ε and x_t with a colour bar, the histogram of
x_t's pixel values against x_0's and N(0, 1), a clickable filmstrip, and a warning when x_T is not noise."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QLinearGradient, QPainter
from PySide6.QtWidgets import QComboBox, QLabel, QLayout, QVBoxLayout, QWidget

from ....core.diffusion.pixel_stats import (
    HIST_RANGE, bin_edges, normal_pdf, pixel_density, pixel_sample, prior_mismatch,
)
from ...widgets.plot_theme import apply_plot_theme

SCALES = ((1.0, "[−1, 1]"), (2.0, "[−2, 2]"), (3.0, "[−3, 3]"))
XT_COLOR, X0_COLOR, NORMAL_COLOR = "#29c4ff", "#9a9a9a", "#ffd23f"


class ColourBar(QWidget):
    """The shared mapping drawn as a bar: −L black, 0 mid-grey, +L white; values beyond ±L are clipped."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("colourBar")
        self.value_range = 1.0
        self.setFixedWidth(52)
        self.setMinimumHeight(80)
        self._tip()

    def set_range(self, value: float) -> None:
        self.value_range = float(value)
        self._tip()
        self.update()

    def _tip(self) -> None:
        L = self.value_range
        self.setToolTip(f"One colour mapping for x₀, ε and xₜ: a value v is drawn as grey level 255·(v + {L:g})/"
                        f"{2 * L:g}, clipped outside [−{L:g}, {L:g}]. So xₜ at t = T, which is almost exactly ε, "
                        "looks like ε.")

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        fm = p.fontMetrics()
        top, bottom = fm.height() + fm.ascent() // 2 + 6, self.height() - fm.ascent() // 2 - 4
        bar = QRectF(4, top, 14, max(10, bottom - top))
        g = QLinearGradient(bar.topLeft(), bar.bottomLeft())
        g.setColorAt(0.0, QColor(255, 255, 255))
        g.setColorAt(1.0, QColor(0, 0, 0))
        p.fillRect(bar, g)
        p.setPen(self.palette().windowText().color())
        p.drawRect(bar)
        p.drawText(QPointF(2, fm.ascent() + 1), "value")
        L = self.value_range
        for frac, text in ((0.0, f"{L:+g}"), (0.5, "0"), (1.0, f"{-L:+g}")):
            y = bar.top() + frac * bar.height()
            p.drawLine(QPointF(bar.right(), y), QPointF(bar.right() + 4, y))
            p.drawText(QPointF(bar.right() + 6, y + fm.ascent() / 2 - 1), text.replace("-", "−"))
        p.end()


class PixelHistogram(pg.PlotWidget):
    """Density of x_t's pixel values (moving with t) over x_0's and the N(0, 1) density: the data distribution
    turning into the prior. The numbers come from core.pixel_stats; this only draws them."""

    MIN_VIEW = 80  # px of plot area it never goes below (the Forward tab's layout gives the rest to the images)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("pixelHistogram")
        # title, the pixel-value axis and at least MIN_VIEW px of plot: below that the y ticks ran into each other
        self.setMinimumSize(160, self.MIN_VIEW + 72)
        self.edges = bin_edges()
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        plot = self.getPlotItem()
        plot.showGrid(x=True, y=False, alpha=0.2)
        plot.setLabel("bottom", "pixel value")
        plot.setXRange(*HIST_RANGE, padding=0)
        plot.setMouseEnabled(False, False)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.addLegend(offset=(-4, 2), labelTextSize="8pt", colCount=3)  # one row: three rows overflowed a short plot
        self.x0_curve = plot.plot(stepMode="center", fillLevel=0, brush=pg.mkBrush(154, 154, 154, 90),
                                  pen=pg.mkPen(X0_COLOR, width=1), name="x₀")
        self.xt_curve = plot.plot(stepMode="center", pen=pg.mkPen(XT_COLOR, width=2), name="xₜ")
        v = np.linspace(*HIST_RANGE, 241)
        self.normal_curve = plot.plot(v, normal_pdf(v), pen=pg.mkPen(NORMAL_COLOR, width=1.5,
                                                                      style=Qt.PenStyle.DashLine), name="N(0, 1)")
        self.clip_lines = [pg.InfiniteLine(angle=90, pen=pg.mkPen("#666666", width=1, style=Qt.PenStyle.DotLine))
                           for _ in range(2)]
        for line in self.clip_lines:
            plot.addItem(line, ignoreBounds=True)
        self.centres = centres
        self.x0_density: np.ndarray | None = None
        self.xt_density: np.ndarray | None = None
        apply_plot_theme(self, grid=False)  # the app's one plot theme; only vertical grid lines, set above
        plot.showGrid(x=True, y=False, alpha=0.2)
        self.setToolTip("How often each pixel value occurs (a density: the area is 1). Grey: x₀, the data; blue: xₜ "
                        "at the t on the slider; dashed: the N(0, 1) density that x_T should match. Dotted: the ends "
                        "of the colour scale, beyond which the panes clip.")

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name): its minimum; the Forward tab's stretch gives it more
        return QSize(320, self.minimumHeight())

    def set_x0(self, x0) -> None:
        self.x0_density = None if x0 is None else pixel_density(pixel_sample(x0), self.edges)
        self.x0_curve.setData(self.edges, self.x0_density if x0 is not None else np.zeros(len(self.centres)))

    def set_xt(self, x_t, paper_t: int | None) -> None:
        self.xt_density = None if x_t is None else pixel_density(x_t, self.edges)
        self.xt_curve.setData(self.edges, self.xt_density if x_t is not None else np.zeros(len(self.centres)))
        self.setTitle("" if paper_t is None else f"pixel values: xₜ at t = {paper_t}, x₀ and N(0, 1)", size="9pt")

    def set_clip(self, value: float) -> None:
        for line, x in zip(self.clip_lines, (-value, value)):
            line.setValue(x)


def film_index_at(film_shape: tuple[int, ...], x: float, n: int) -> int:
    """Which of the n filmstrip frames (square, separated by gaps of max(2, H // 32) px) the image column x is in;
    a click in a gap counts for the nearer frame."""
    h, total = film_shape[0], film_shape[1]
    gap = max(2, h // 32)
    w = (total - (n - 1) * gap) / n
    i = int((x + gap / 2) // (w + gap))
    return max(0, min(n - 1, i))


def _layout_of(root: QLayout, widget: QWidget) -> QLayout | None:
    """The (nested) layout that holds widget."""
    if root.indexOf(widget) >= 0:
        return root
    for i in range(root.count()):
        sub = root.itemAt(i).layout()
        if sub is not None and (found := _layout_of(sub, widget)) is not None:
            return found
    return None


class ForwardExtras:
    """Wires the additions into a ForwardPanel (built after its setup_ui)."""

    def __init__(self, panel):
        from .ui import film_paper_ts, share_height

        self.panel, self._film_ts = panel, film_paper_ts
        self._sample_of = self._x0_sample = self._eps_sample = None
        lay = panel.layout()
        self.colour_bar = ColourBar()
        self.scale_combo = QComboBox()
        self.scale_combo.setObjectName("colourScaleCombo")
        for value, text in SCALES:
            self.scale_combo.addItem(text, value)
        self.scale_combo.setToolTip("The colour scale shared by x₀, ε and xₜ: values in this range go black…white "
                                    "(the bar above); [−3, 3] shows ε's ±3σ unclipped.")
        column = QVBoxLayout()  # the bar with its range chooser under it, beside the three panes
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.colour_bar, 1, Qt.AlignmentFlag.AlignHCenter)
        column.addWidget(self.scale_combo)
        _layout_of(lay, panel.x0_pane).addLayout(column)
        self.prior_warning = QLabel("")
        self.prior_warning.setObjectName("priorWarning")
        self.prior_warning.setWordWrap(True)
        self.prior_warning.setStyleSheet("color: #ff8c1a;")
        self.prior_warning.hide()
        lay.insertWidget(lay.indexOf(panel.hint_label) + 1, self.prior_warning)
        self.histogram = PixelHistogram()
        share_height(self.histogram)
        lay.insertWidget(lay.indexOf(panel.film_pane), self.histogram, 2)
        panel.film_pane.setToolTip(panel.film_pane.toolTip() + " Click a frame to jump to its t.")
        panel.film_pane.setCursor(Qt.CursorShape.PointingHandCursor)
        panel.film_pane.scene().sigMouseClicked.connect(self._on_film_click)

        saved = panel.setting("display_range", 1.0, float)
        idx = max(0, self.scale_combo.findData(saved))
        self.scale_combo.setCurrentIndex(idx)
        panel.display_range = float(self.scale_combo.currentData())
        self.colour_bar.set_range(panel.display_range)
        self.histogram.set_clip(panel.display_range)
        self.scale_combo.currentIndexChanged.connect(self._on_scale)
        panel.frame_shown.connect(self._on_frame_shown)
        panel.state.image_changed.connect(self._on_image)
        panel.state.schedule_changed.connect(self._on_schedule)
        self._on_image(panel.state.image)
        self._on_schedule(panel.state.schedule)

    def _on_scale(self, _i: int) -> None:
        value = float(self.scale_combo.currentData())
        self.colour_bar.set_range(value)
        self.histogram.set_clip(value)
        self.panel.set_setting("display_range", value)
        self.panel.set_display_range(value)

    def _on_image(self, image) -> None:
        self.histogram.set_x0(None if image is None else image.x0)
        if image is None:
            self.histogram.set_xt(None, None)

    def _on_schedule(self, schedule) -> None:
        msg = prior_mismatch(schedule)
        self.prior_warning.setText(f"x_T is not noise: {msg}." if msg else "")
        self.prior_warning.setVisible(bool(msg))

    def _on_frame_shown(self, paper_t: int) -> None:
        p = self.panel
        sc = p._scrubber
        if sc is None:
            return
        if p.using_chain and paper_t > 0:
            values = pixel_sample(p.x_t())
        else:  # the closed form on a fixed sample of the pixels: ~1 ms a slider move, also at 512²
            if self._sample_of is not sc:
                self._sample_of, self._x0_sample, self._eps_sample = sc, pixel_sample(sc.x0), pixel_sample(sc.noise)
            a, b = sc.coefficients(min(paper_t, sc.schedule.T) - 1)
            values = np.float32(a) * self._x0_sample + np.float32(b) * self._eps_sample
        self.histogram.set_xt(values, paper_t)

    def _on_film_click(self, event) -> None:
        film = self.panel.filmstrip
        item = self.panel.film_pane.item
        if film is None or event.button() != Qt.MouseButton.LeftButton:
            return
        pos = item.mapFromScene(event.scenePos())
        if not (0 <= pos.x() < film.shape[1] and 0 <= pos.y() < film.shape[0]):
            return
        ts = self._film_ts(self.panel.state.schedule.T)  # as many frames as distinct t (fewer when T is small)
        i = film_index_at(film.shape, pos.x(), len(ts))
        self.panel.set_paper_t(ts[i])
        event.accept()


def attach_extras(panel) -> None:
    panel.extras = ForwardExtras(panel)
