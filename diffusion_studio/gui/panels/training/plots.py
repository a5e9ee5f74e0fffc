"""The Training panel's live displays: loss curve (raw + smoothed), loss per t bucket, progress, preview grid, FID."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QSizePolicy, QVBoxLayout, QWidget

from ....core.train.trainer import TrainEvent
from ....data.convert import make_grid, to_uint8
from ...widgets.imageview import ImagePane
from ...widgets.plot_theme import LEGEND_BRUSH, TEXT, apply_plot_theme, set_title
from ....jobs.training import FIDPoint, LossHistory, bucket_edges, format_duration, progress_text
from .length import objective_title

RAW_PEN = pg.mkPen((110, 160, 255, 110), width=1)
SMOOTH_PEN = pg.mkPen((90, 170, 255), width=2.5)
FID_PEN = pg.mkPen((200, 90, 30), width=2)


def _style(plot: pg.PlotWidget) -> None:
    apply_plot_theme(plot)  # the app's one plot theme (widgets/plot_theme.py)
    item = plot.getPlotItem()
    for name in ("left", "bottom"):
        ax = item.getAxis(name)
        # Grid lines at major and minor ticks only: the third level's lines made each redraw ~2× slower (~45 ms at
        # 650×500 px), which held the GUI thread up while training competed for the CPU (bench/bench_gui.py).
        ax.setStyle(maxTickLevel=1)
    item.setMenuEnabled(False)


def fit_title(widget: pg.PlotWidget, width: int | None = None) -> None:
    """Wrap a plot's title to the width over its view box, and give the title row the wrapped lines' height: a title
    wider than a narrow pane (1024-px window) otherwise set the plot's minimum width, and the pane cut the plot off on
    the right ("Loss: Min-SNR-5-weigh", the t axis ending at 500)."""
    plot = widget.getPlotItem()
    if plot is None:
        return
    label = plot.titleLabel
    item = label.item
    item.setTextWidth(-1)
    axis = plot.getAxis("left")
    room = (widget.width() if width is None else width) - int(axis.width() if axis.isVisible() else 0) - 12
    if item.boundingRect().width() > room > 20:
        item.setTextWidth(room)
    label.updateMin()
    label.setMinimumWidth(0)  # the pane, not the title, decides the width
    height = max(30, int(item.boundingRect().height()) + 4)
    label.setMaximumHeight(height)
    plot.layout.setRowFixedHeight(0, height)


class _FittedTitle:
    """A plot whose title wraps to its width (fit_title) whenever it is resized or retitled."""

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event is not None and getattr(self, "plotItem", None) is not None:
            fit_title(self, event.size().width())
        super().resizeEvent(event)

    def retitle(self, text: str) -> None:
        item = self.getPlotItem()
        set_title(item, text)
        if not getattr(self, "_title_hooked", False):  # tick labels widen the left axis: the room changes
            self._title_hooked = True
            item.getAxis("left").geometryChanged.connect(lambda: fit_title(self))
        fit_title(self)


class LossPlot(_FittedTitle, pg.PlotWidget):
    """The run's training loss against the step (every step thin and faint, its moving average bold), titled with
    the objective it is: e.g. Min-SNR-5-weighted ‖ε − ε_θ(x_t, t)‖², or the seeds' L_simple."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("lossPlot")
        _style(self)
        item = self.getPlotItem()
        item.setLabel("bottom", "step")
        self.objective = ""
        item.addLegend(offset=(-8, 8), labelTextColor=TEXT, brush=pg.mkBrush(*LEGEND_BRUSH))
        self.raw_curve = item.plot([], [], pen=RAW_PEN, name="every step")
        self.smooth_curve = item.plot([], [], pen=SMOOTH_PEN, name="smoothed")
        for c in (self.raw_curve, self.smooth_curve):
            c.setClipToView(True)
            c.setDownsampling(auto=True, method="peak")
        self.set_objective("eps", "uniform")

    def set_objective(self, prediction: str, weighting: str, snr_gamma: float = 5.0) -> None:
        """Title, axis and tooltip name the loss the run minimises (what it predicts, how each t counts)."""
        self.objective = objective_title(prediction, weighting, snr_gamma)
        item = self.getPlotItem()
        self.retitle(f"Loss: {self.objective}")
        item.setLabel("left", "weighted loss" if weighting != "uniform" else "loss")
        target = {"eps": "the noise ε added to x₀", "x0": "the clean image x₀",
                  "v": "v = √ᾱ_t ε − √(1 − ᾱ_t) x₀"}.get(prediction, prediction)
        if weighting == "uniform":
            how = ("every t counts alike: the seeds' L_simple (Ho et al., Algorithm 1). It starts near 1 (the variance "
                   "of ε) and falls as the network learns to see the noise." if prediction == "eps" else
                   "every t counts alike.")
        else:
            how = (f"each example's error is weighted by min(SNR_t, {snr_gamma:g}) in x₀ units (Min-SNR-{snr_gamma:g}, "
                   "Hang et al. 2023), so the easy low-noise steps stop dominating; its values are smaller than "
                   "the plain ‖ε − ε_θ‖² that \"Loss by t\" shows.")
        self.setToolTip(f"The training loss of this run: the mean squared error between {target} and the network's "
                        f"prediction; {how}")

    def show_history(self, h: LossHistory) -> None:
        self.raw_curve.setData(h.steps, h.raw)
        self.smooth_curve.setData(h.steps, h.smooth)

    def clear_data(self) -> None:
        self.raw_curve.setData([], [])
        self.smooth_curve.setData([], [])


class BucketPlot(_FittedTitle, pg.PlotWidget):
    """The trainer's smoothed loss per bucket of t, as bars; x ticks are the buckets' paper-t edges."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("bucketPlot")
        _style(self)
        item = self.getPlotItem()
        self.retitle("Loss by t (unweighted)")
        item.setLabel("bottom", "paper t")
        item.setLabel("left", "MSE")  # (a longer label outgrew the short plot of a 700-px window)
        item.setMouseEnabled(x=False, y=False)
        item.getAxis("left").enableAutoSIPrefix(False)
        self.bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=0.85)
        item.addItem(self.bars)
        self.heights = np.zeros(0)
        self.edges: list[int] = []
        self.setToolTip("Each bar is the (smoothed) plain mean squared error of the network's prediction, without the "
                        "objective's weights, over the training examples whose t fell in that range. "
                        "Predicting ε is hardest at small t, where x_t is nearly clean and the noise is faint, so the "
                        "left bars stay highest; at large t, x_t is almost pure noise and ε is easy to read off.")

    def reset(self, T: int, buckets: int) -> None:
        """Bar b spans its paper-t range (E_b, E_(b+1)] on a plain t axis, so the axis's own ticks label it."""
        self.edges = bucket_edges(T, buckets)
        e = np.array(self.edges, dtype=float)
        colors = [pg.mkBrush(pg.colormap.get("viridis").map(0.15 + 0.7 * b / max(1, buckets - 1), mode="qcolor"))
                  for b in range(buckets)]
        self.heights = np.zeros(buckets)
        self.bars.setOpts(x=(e[:-1] + e[1:]) / 2, width=(e[1:] - e[:-1]) * 0.9, height=self.heights,
                          brushes=colors, pens=[pg.mkPen(None)] * buckets)
        # Ends and middle always labelled, quarters when there is room ("1000" is wide and the plot narrow).
        quarters = [(T * k // 4, str(T * k // 4)) for k in range(5)]
        self.getPlotItem().getAxis("bottom").setTicks([quarters[::2], quarters[1::2]])
        self.getPlotItem().setLabel("bottom", f"paper t (1…{T})")  # the T tick can be clipped at the edge
        self.getPlotItem().setXRange(0, T, padding=0.04)

    def show_buckets(self, losses: list[float | None]) -> None:
        if len(losses) != len(self.heights):
            return
        self.heights = np.array([0.0 if v is None else float(v) for v in losses])
        self.bars.setOpts(height=self.heights)
        top = float(np.nanmax(self.heights)) if len(self.heights) else 0.0
        if np.isfinite(top) and top > 0:
            self.getPlotItem().setYRange(0, top * 1.08, padding=0)


class FIDPlot(_FittedTitle, pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("fidPlot")
        _style(self)
        item = self.getPlotItem()
        self.retitle("FID (lower is better)")
        item.setLabel("bottom", "step")
        self.curve = item.plot([], [], pen=FID_PEN, symbol="o", symbolSize=5, symbolBrush=(200, 90, 30))
        self.steps: list[int] = []
        self.values: list[float] = []
        self.setToolTip("Fréchet distance between Gaussians fitted to features of real and generated images "
                        "(‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½)); computed in the training thread.")

    def add(self, p: FIDPoint) -> None:
        self.steps.append(p.step)
        self.values.append(p.fid)
        self.curve.setData(self.steps, self.values)

    def clear_data(self) -> None:
        self.steps, self.values = [], []
        self.curve.setData([], [])


class TrainingView(QWidget):
    """Progress bar and numbers on top, the loss curve, then buckets and the preview grid side by side."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.history = LossHistory()
        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setTextVisible(True)
        self.progress.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setToolTip("Optimisation steps done, images per second (a moving average) and the time left")
        self.loss_label = QLabel("loss —")
        self.lr_label = QLabel("lr —")
        self.grad_label = QLabel("‖∇L‖ —")
        self.time_label = QLabel("elapsed —")
        self.loss_label.setObjectName("lossLabel")
        self.lr_label.setObjectName("lrLabel")
        self.grad_label.setObjectName("gradLabel")
        self.lr_label.setToolTip("Learning rate of this step: it ramps up linearly over the warm-up steps, then stays")
        self.grad_label.setToolTip("Size ‖∇L‖ of the gradient before clipping; spikes often come before a divergence")
        self.log_check = QCheckBox("log y")
        self.log_check.setObjectName("logYCheck")
        self.log_check.setToolTip("Plot the loss on a logarithmic axis (late, small improvements become visible)")
        self.loss_plot = LossPlot()
        self.bucket_plot = BucketPlot()
        self.fid_plot = FIDPlot()
        self.fid_plot.setMaximumHeight(170)
        self.fid_plot.hide()
        self.preview = ImagePane("Preview")
        self.preview.setObjectName("previewPane")
        self.preview.setToolTip("Samples from the EMA weights with DDIM from the same seed every time, so you can "
                                "watch the same noise turn into better images as training goes on")
        self.preview_captions = QLabel()
        self.preview_captions.setObjectName("previewCaptions")
        self.preview_captions.setWordWrap(True)
        self.preview_captions.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.preview_captions.setToolTip("A text run's preview draws each image from one caption (with guidance "
                                         "w = 3): these, row by row")
        self.preview_captions.hide()
        self.captions: list[str] = []
        self.log_check.toggled.connect(lambda on: self.loss_plot.getPlotItem().setLogMode(y=on))

        row0 = QHBoxLayout()
        # lr, ‖∇L‖ and elapsed: one line, or two when the pane is narrow (side by side their texts set the pane's
        # minimum width, and the window grew past 1024 px once training filled them in)
        self.row1 = row1 = QGridLayout()
        row1.setHorizontalSpacing(14)
        row1.setVerticalSpacing(0)
        row0.addWidget(self.loss_label, 1)
        row0.addWidget(self.log_check)
        for w in (self.lr_label, self.grad_label, self.time_label):
            w.setMinimumWidth(1)  # their texts' widths are what they prefer, not a minimum the pane must keep
        self._numbers_wrapped: bool | None = None
        self._place_numbers(False)
        self.loss_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens
        self.loss_label.setWordWrap(True)  # … and wraps "(smoothed …)" onto a second line in a narrow pane
        numbers = QVBoxLayout()
        numbers.setContentsMargins(2, 0, 2, 0)
        numbers.setSpacing(2)
        numbers.addLayout(row0)
        numbers.addLayout(row1)
        self.grid = grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.loss_plot, 0, 0, 1, 2)
        grid.addWidget(self.fid_plot, 1, 0, 1, 2)  # a short strip under the loss, shown only when FID is on
        self._stacked: bool | None = None
        self._place_bottom(stacked=False)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 0)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.progress)
        lay.addLayout(numbers)
        lay.addLayout(grid, 1)

    NARROW = 400  # below this width "Loss by t" and the preview stack (side by side the plot was ~80 px wide)

    def _place_bottom(self, stacked: bool) -> None:
        if stacked == self._stacked:
            return
        self._stacked = stacked
        for w in (self.bucket_plot, self.preview, self.preview_captions):
            self.grid.removeWidget(w)
        if stacked:
            self.grid.addWidget(self.bucket_plot, 2, 0, 1, 2)
            self.grid.addWidget(self.preview, 3, 0, 1, 2)
            self.grid.addWidget(self.preview_captions, 4, 0, 1, 2)
        else:
            self.grid.addWidget(self.bucket_plot, 2, 0, 2, 1)
            self.grid.addWidget(self.preview, 2, 1)
            self.grid.addWidget(self.preview_captions, 3, 1)
        self.grid.setRowStretch(2, 2)
        self.grid.setRowStretch(3, 2 if stacked else 0)

    def _numbers_width(self) -> int:
        """Pixels lr, ‖∇L‖ and elapsed need on one line."""
        return sum(w.fontMetrics().horizontalAdvance(w.text()) + 4 for w in
                   (self.lr_label, self.grad_label, self.time_label)) + 2 * self.row1.horizontalSpacing() + 8

    def _place_numbers(self, wrapped: bool) -> None:
        if wrapped == self._numbers_wrapped:
            return
        self._numbers_wrapped = wrapped
        for w in (self.lr_label, self.grad_label, self.time_label):
            self.row1.removeWidget(w)
        self.row1.addWidget(self.lr_label, 0, 0)
        self.row1.addWidget(self.grad_label, 0, 1)
        self.row1.addWidget(self.time_label, 1 if wrapped else 0, 0 if wrapped else 2, 1, 2 if wrapped else 1)
        for c in range(3):
            self.row1.setColumnStretch(c, 0)
        self.row1.setColumnStretch(2 if not wrapped else 1, 1)

    def _fit_numbers(self, width: int | None = None) -> None:
        self._place_numbers((self.width() if width is None else width) < self._numbers_width())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self._place_bottom(event.size().width() < self.NARROW)
        self._fit_numbers(event.size().width())
        super().resizeEvent(event)

    def reset(self, T: int, buckets: int, total: int | None, start_step: int = 0, fid: bool = False) -> None:
        self.history = LossHistory()
        self.loss_plot.clear_data()
        self.bucket_plot.reset(T, buckets)
        self.fid_plot.clear_data()
        self.fid_plot.setVisible(fid)
        self.grid.setRowStretch(1, 1 if fid else 0)  # a hidden row must not keep its share of the height
        self.progress.setRange(0, total or 0)
        self.progress.setValue(start_step if total else 0)
        self.progress.setFormat(f"step {start_step:,} / {total:,} · starting…" if total else "starting…")
        for w, text in ((self.loss_label, "loss —"), (self.lr_label, "lr —"), (self.grad_label, "‖∇L‖ —"),
                        (self.time_label, "elapsed —")):
            w.setText(text)
        self._fit_numbers()

    def add_event(self, ev: TrainEvent) -> None:
        self.history.append(ev.step, ev.loss)

    def show_event(self, ev: TrainEvent, paused: bool = False) -> None:
        """Redraw from the newest event (called at most ~10×/s by the panel's timer)."""
        self.loss_plot.show_history(self.history)
        self.bucket_plot.show_buckets(ev.bucket_loss)
        if ev.total_steps:
            self.progress.setRange(0, ev.total_steps)
            self.progress.setValue(min(ev.step, ev.total_steps))
        elif ev.eta_s is not None:  # a time budget: the bar fills with training time
            total_s = max(ev.elapsed_s + ev.eta_s, 1e-9)
            self.progress.setRange(0, 1000)
            self.progress.setValue(min(1000, int(1000 * ev.elapsed_s / total_s)))
        text = progress_text(ev.step, ev.total_steps, ev.images_per_s, None if ev.done else ev.eta_s)
        self.progress.setFormat(("paused · " if paused else "") + text)
        self.loss_label.setText(f"loss {ev.loss:.4f} (smoothed {self.history.smooth[-1]:.4f})"
                                if len(self.history) else f"loss {ev.loss:.4f}")
        self.lr_label.setText(f"lr {ev.lr:.1e}")
        self.grad_label.setText(f"‖∇L‖ {ev.grad_norm:.3g}")
        self.time_label.setText(f"elapsed {format_duration(ev.elapsed_s)}")
        self._fit_numbers()

    def set_objective(self, prediction: str, weighting: str, snr_gamma: float = 5.0) -> None:
        self.loss_plot.set_objective(prediction, weighting, snr_gamma)

    def set_preview_captions(self, captions: list[str]) -> None:
        """A text run's preview: name the caption of each image, row by row, under the grid."""
        self.captions = list(captions)
        if not captions:
            self.preview_captions.clear()
            self.preview_captions.hide()
            return
        per_row = int(np.ceil(np.sqrt(len(captions))))
        rows = [" · ".join(f"“{c}”" for c in captions[i:i + per_row]) for i in range(0, len(captions), per_row)]
        self.preview_captions.setText("Captions, row by row:\n" + "\n".join(rows))
        self.preview_captions.show()

    def show_preview(self, preview, step: int) -> None:
        n = len(preview)
        nrow = int(np.ceil(np.sqrt(n)))
        self.preview.show_u8(to_uint8(make_grid(preview, nrow=nrow, padding=2)))
        text = " (captions below)" if self.captions and len(self.captions) == n else ""
        self.preview.set_title(f"Preview, step {step:,}{text}")
