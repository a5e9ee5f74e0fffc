"""The 2-D tab's plots (pyqtgraph): a cloud with its marginal histograms, a field of arrows, particles with fading
trails, a warped grid and density contours. Everything is drawn in the data's own units, from numpy arrays."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal

from ...widgets.plot_theme import apply_plot_theme, set_title

DATA = (150, 150, 150, 110)
POINTS = (255, 140, 30, 200)
LEARNED = "#ff9f1c"
IDEAL = "#29c4ff"
DIFF = "#ff5c5c"
TRAIL = 8               # frames of a particle's trail
PATH_COLOURS = {"ddpm": "#ff5c5c", "ddim": "#29c4ff", "heun": "#ffd23f", "dpm++2m": "#5fd35f"}


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


class CloudPlot(pg.PlotItem):
    """A square plot of points over the data, in data units; emits where the mouse presses and drags."""

    drawn = Signal(object, bool)  # (x, y) in data units, True on press/drag

    def __init__(self, title: str):
        super().__init__()
        narrow_title(self, title)
        self.setAspectLocked(True)
        self.data_item = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(*DATA), pxMode=True)
        self.points_item = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(*POINTS), pxMode=True)
        self.addItem(self.data_item)
        self.addItem(self.points_item)
        self.drawing = False
        self.vb.setMouseEnabled(False, False)
        self.vb.setMenuEnabled(False)

    def show_data(self, pts: np.ndarray | None) -> None:
        if pts is None or not len(pts):
            self.data_item.clear()
        else:
            self.data_item.setData(pos=np.ascontiguousarray(pts[:, :2]))

    def show_points(self, pts: np.ndarray | None, brush=POINTS) -> None:
        if pts is None or not len(pts):
            self.points_item.clear()
        else:
            self.points_item.setData(pos=np.ascontiguousarray(pts[:, :2]), brush=pg.mkBrush(*brush))

    def fit(self, bounds) -> None:
        x0, x1, y0, y1 = bounds
        self.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0)


class Marginal(pg.PlotItem):
    """One axis's histogram of the noised cloud (standardised) over N(0, 1)."""

    def __init__(self, axis: str):
        super().__init__()
        narrow_title(self, f"{axis} of x_t vs N(0, 1)")
        self.hist = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=(255, 140, 30, 90), pen=POINTS[:3])
        xs = np.linspace(-4, 4, 161)
        self.normal = pg.PlotDataItem(xs, _normal_pdf(xs), pen=pg.mkPen("#ffd23f", width=2, style=Qt.PenStyle.DashLine))
        self.addItem(self.hist)
        self.addItem(self.normal)
        self.setXRange(-4, 4, padding=0)
        self.vb.setMouseEnabled(False, False)
        self.vb.setMenuEnabled(False)

    def show_values(self, values: np.ndarray) -> None:
        edges = np.linspace(-4, 4, 41)
        h, _ = np.histogram(np.clip(values, -4, 4), bins=edges, density=True)
        self.hist.setData(edges, h)


class FieldPlot(CloudPlot):
    """Arrows (segments from each grid point, with a dot at the tail) over the data: learned, ideal, or both."""

    def __init__(self, title: str):
        super().__init__(title)
        self.arrows = {key: pg.PlotDataItem(pen=pg.mkPen(colour, width=1.5), connect="pairs")
                       for key, colour in (("learned", LEARNED), ("ideal", IDEAL), ("difference", DIFF))}
        self.tails = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(220, 220, 220, 160))
        for c in self.arrows.values():
            self.addItem(c)
        self.addItem(self.tails)
        self.legend = self.addLegend(offset=(5, 5), labelTextSize="8pt")

    def show_field(self, at: np.ndarray, vectors: dict[str, np.ndarray], scale: float) -> None:
        """``vectors[name]`` (N, 2) at grid points ``at`` (data units), each drawn at ``scale`` × its length."""
        self.legend.clear()
        for key, curve in self.arrows.items():
            v = vectors.get(key)
            if v is None:
                curve.clear()
                continue
            seg = np.empty((2 * len(at), 2))
            seg[0::2], seg[1::2] = at, at + scale * v
            curve.setData(seg[:, 0], seg[:, 1])
            self.legend.addItem(curve, key)
        self.tails.setData(pos=np.ascontiguousarray(at))


class PathsPlot(CloudPlot):
    """Particles at one frame of a run with fading trails over the previous frames; a warped grid; density contours;
    the paths of one dragged start point under each sampler."""

    def __init__(self, title: str):
        super().__init__(title)
        self.trails = [pg.PlotDataItem(pen=pg.mkPen(255, 140, 30, int(150 * (k + 1) / TRAIL), width=1),
                                       connect="pairs") for k in range(TRAIL)]
        for item in self.trails:
            self.addItem(item)
        self.grid_item = pg.PlotDataItem(pen=pg.mkPen(120, 200, 255, 150, width=1), connect="finite")
        self.addItem(self.grid_item)
        self.contours: list[pg.IsocurveItem] = []
        self.density_image: pg.ImageItem | None = None
        self.start_paths = {key: pg.PlotDataItem(pen=pg.mkPen(colour, width=2), symbol=None)
                            for key, colour in PATH_COLOURS.items()}
        for item in self.start_paths.values():
            self.addItem(item)
        self.start_dot = pg.ScatterPlotItem(size=10, brush=pg.mkBrush("#ffffff"), pen=pg.mkPen("#000000"))
        self.addItem(self.start_dot)

    def show_frame(self, frames: np.ndarray | None, k: int) -> None:
        """Frame k of (frames, N, 2) positions, with the segments of the last TRAIL steps fading out."""
        if frames is None:
            self.show_points(None)
            for item in self.trails:
                item.clear()
            return
        self.show_points(frames[k])
        for j, item in enumerate(self.trails):
            a, b = k - TRAIL + j, k - TRAIL + j + 1
            if a < 0:
                item.clear()
                continue
            seg = np.empty((2 * frames.shape[1], 2))
            seg[0::2], seg[1::2] = frames[a], frames[b]
            item.setData(seg[:, 0], seg[:, 1])

    def show_grid(self, lines: np.ndarray | None) -> None:
        """(L, P, 2) polylines, or None to hide."""
        if lines is None:
            self.grid_item.clear()
            return
        pts = np.concatenate([np.vstack([line, [[np.nan, np.nan]]]) for line in lines])
        self.grid_item.setData(pts[:, 0], pts[:, 1])

    def show_density(self, dens: np.ndarray | None, bounds, levels=(0.1, 0.3, 0.6)) -> None:
        for c in self.contours:
            self.removeItem(c)
        self.contours = []
        if dens is None:
            return
        x0, x1, y0, y1 = bounds
        h, w = dens.shape
        tr = pg.QtGui.QTransform()
        tr.translate(x0, y0)
        tr.scale((x1 - x0) / w, (y1 - y0) / h)
        for level, alpha in zip(levels, (120, 170, 230)):
            c = pg.IsocurveItem(data=dens.T, level=level, pen=pg.mkPen(120, 255, 160, alpha, width=1.5))
            c.setTransform(tr)
            self.addItem(c)
            self.contours.append(c)

    def show_start_paths(self, start: np.ndarray | None, paths: dict[str, np.ndarray]) -> None:
        if start is None:
            self.start_dot.clear()
        else:
            self.start_dot.setData(pos=[start])
        for key, item in self.start_paths.items():
            p = paths.get(key)
            if p is None:
                item.clear()
            else:
                item.setData(p[:, 0], p[:, 1])


def narrow_title(plot: pg.PlotItem, text: str) -> None:
    """A title that never widens its plot: pyqtgraph makes a title's whole text its label's minimum width (again at
    every setText, the theme's included), which pushed the 2-D tab's right column past a 1024-px window's edge; here
    a long title may be cut at the plot's edge (its whole text is the tooltip), the plots are not."""
    label = plot.titleLabel
    if not getattr(label, "_narrow", False):
        update = label.updateMin

        def update_min() -> None:
            update()
            _w, h = label._sizeHint[Qt.SizeHint.MinimumSize]  # LabelItem answers its size hints from this table
            label._sizeHint[Qt.SizeHint.MinimumSize] = (0, h)
            label.setMinimumWidth(0)
            label.updateGeometry()

        label.updateMin = update_min
        label.setFlag(label.GraphicsItemFlag.ItemClipsChildrenToShape)  # a cut title never runs into its neighbour
        label._narrow = True
    set_title(plot, text)
    label.setToolTip(text)


class LossPlot(pg.PlotItem):
    def __init__(self):
        super().__init__()
        narrow_title(self, "loss ‖ε − ε_θ‖²")
        # a linear axis: the loss spans less than a decade after the first steps, where a log axis labels every
        # minor tick (0.2 … 0.9) on top of each other
        self.getAxis("left").setWidth(36)
        self.curve = self.plot(pen=pg.mkPen(LEARNED, width=1.5))
        self.vb.setMenuEnabled(False)

    def show_losses(self, steps: list[int], losses: list[float]) -> None:
        self.curve.setData(steps, losses)


def theme(widget: pg.GraphicsLayoutWidget) -> None:
    apply_plot_theme(widget)
