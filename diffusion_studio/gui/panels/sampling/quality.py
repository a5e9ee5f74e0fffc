"""The Sampling view's "Quality" tab: the classifier score and FID of each sampler against its number of model
evaluations, for the model in use (computed in a worker and cached per model: jobs/quality.py)."""
from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout

from ....jobs import quality
from ....jobs.quality import QualityPoint, judge_for
from ...widgets.plot_theme import apply_plot_theme, set_title
from ...workers import GeneratorWorker
from .compare import NAMES, LabView

COLOURS = {"ddim": "#29c4ff", "euler": "#a0a0a0", "heun": "#ff9f1c", "dpm++2m": "#5fd35f", "unipc": "#e25cff",
           "euler_a": "#ffd23f", "ddpm": "#ff5c5c"}


class QualityView(LabView):
    """Two plots against model evaluations (log axis): % confidently classified, and FID; DDPM's full T steps as
    the dashed line both chase."""

    BUSY = "quality"

    def __init__(self, panel, parent=None):
        super().__init__(parent)
        self.setObjectName("qualityView")
        self.panel = panel
        self.worker: GeneratorWorker | None = None
        self.points: list[QualityPoint] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(QLabel("Samples"))
        self.n_spin = QSpinBox()
        self.n_spin.setObjectName("qualityN")
        self.n_spin.setRange(32, 4096)
        self.n_spin.setSingleStep(64)
        self.n_spin.setValue(256)
        self.n_spin.setToolTip("Samples per sampler and budget; FID needs a few hundred to say much")
        row.addWidget(self.n_spin)
        self.run_button = QPushButton("Measure")
        self.run_button.setObjectName("qualityButton")
        self.run_button.setToolTip("Sample with every sampler at 5, 10, 20 and 50 model evaluations (and DDPM at all T "
                                   "steps), then score each set: the share confidently classified, and FID")
        self.run_button.clicked.connect(self.start)
        row.addWidget(self.run_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.note = QLabel("")
        self.note.setObjectName("qualityNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setObjectName("qualityPlots")
        self.score_plot = self.plots.addPlot(row=0, col=0)
        self.fid_plot = self.plots.addPlot(row=1, col=0)  # stacked: the Sampling view's quadrant is narrow
        for plot, title, unit in ((self.score_plot, "confidently classified", "%"), (self.fid_plot, "FID", "")):
            set_title(plot, title)
            plot.setLogMode(x=True, y=False)
            ticks = [(math.log10(v), f"{v:,}") for v in (5, 10, 20, 50, 100, 1000)]
            plot.getAxis("bottom").setTicks([ticks, []])  # the budgets, not every minor tick of a log axis
            plot.setLabel("bottom", "model evaluations")
            if unit:
                plot.setLabel("left", unit)
        self.fid_plot.setLogMode(x=True, y=True)  # FID spans decades: a few-step Heun at hundreds, the rest near 0.2
        self.legend = self.fid_plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        apply_plot_theme(self.plots)
        lay.addWidget(self.plots, 1)
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.set_model(None)

    def set_model(self, loaded) -> None:
        self.clear()
        judge = judge_for(loaded) if loaded is not None else None
        self.run_button.setEnabled(judge is not None and self.worker is None)
        if loaded is None:
            self.note.setText("Load a model to measure how its samples improve with more model evaluations.")
        elif judge is None:
            self.note.setText("No shipped classifier knows this model's data (builtin:digits, builtin:mnist and "
                              "builtin:shapes have one); `diffusion-studio fid DATA --train-features OUT` makes one "
                              "for your own.")
        else:
            self.note.setText(f"Each sampler at 5, 10, 20 and 50 model evaluations from the same x_T, scored by "
                              f"{judge.features}'s classifier and FID against {judge.data}; measured once per model "
                              f"and kept. DDPM's all {loaded.schedule.T} steps are the dashed line.")

    def clear(self) -> None:
        self.points = []
        for plot in (self.score_plot, self.fid_plot):
            for item in list(plot.listDataItems()) + [i for i in plot.items if isinstance(i, pg.InfiniteLine)]:
                plot.removeItem(item)
        self.legend.clear()
        self.curves = {}

    def start(self) -> GeneratorWorker | None:
        loaded = self.panel.loaded
        judge = judge_for(loaded) if loaded is not None else None
        if judge is None or self.worker is not None:
            return None
        self.clear()
        runs = quality.plan(loaded.schedule.T)
        self.total = len(runs)
        n, seed = self.n_spin.value(), self.panel.controls.seed_spin.value()
        worker = GeneratorWorker(lambda: quality.evaluate(loaded, judge, runs, n=n, seed=seed), name="samplerQuality")
        worker.yielded.connect(self.add_point)
        return self.launch(worker, "Measuring sample quality")

    def add_point(self, p: QualityPoint) -> None:
        self.points.append(p)
        T = self.panel.loaded.schedule.T if self.panel.loaded is not None else None
        self.note.setText(f"{len(self.points)} / {getattr(self, 'total', len(self.points))} measured "
                          f"({p.n} samples each)")
        if p.sampler == "ddpm" and p.steps == T:
            fid = math.log10(p.fid) if math.isfinite(p.fid) and p.fid > 0 else float("nan")  # its axis is log10
            for plot, value in ((self.score_plot, 100 * p.confident), (self.fid_plot, fid)):
                line = pg.InfiniteLine(pos=value, angle=0, pen=pg.mkPen(COLOURS["ddpm"], width=1,
                                                                         style=pg.QtCore.Qt.PenStyle.DashLine))
                plot.addItem(line)
            return
        pts = sorted((q for q in self.points if q.sampler == p.sampler and not (q.sampler == "ddpm" and q.steps == T)),
                     key=lambda q: q.evals)
        xs = [q.evals for q in pts]
        pen, brush = pg.mkPen(COLOURS.get(p.sampler, "#ffffff"), width=2), pg.mkBrush(COLOURS.get(p.sampler, "#fff"))
        for plot, key, ys in ((self.score_plot, "score", [100 * q.confident for q in pts]),
                              (self.fid_plot, "fid", [q.fid if math.isfinite(q.fid) else float("nan") for q in pts])):
            curve = self.curves.get((p.sampler, key))
            if curve is None:
                curve = plot.plot(pen=pen, symbol="o", symbolSize=6, symbolBrush=brush,
                                  name=NAMES.get(p.sampler, p.sampler) if key == "fid" else None)
                self.curves[(p.sampler, key)] = curve
            curve.setData(xs, ys)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.abort()
