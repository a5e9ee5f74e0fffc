"""The one look of every plot in the app (dark, like the image panes): background, axes, grid, titles, legends.
Every pyqtgraph plot calls ``apply_plot_theme`` once it is built; ``title(text)`` formats a title the same way."""
from __future__ import annotations

import pyqtgraph as pg

BACKGROUND = "#000000"     # the image panes' black, so plots and images sit side by side without a seam
AXIS = "#8c8c8c"           # axis lines and ticks
TEXT = "#d2d2d2"           # tick labels, axis labels, legend text
TITLE = "#e6e6e6"
TITLE_SIZE = "10pt"
GRID_ALPHA = 0.25
LEGEND_BRUSH = (0, 0, 0, 170)


def _plot_items(target) -> list[pg.PlotItem]:
    if isinstance(target, pg.PlotItem):
        return [target]
    if isinstance(target, pg.PlotWidget):
        return [target.getPlotItem()]
    if isinstance(target, pg.GraphicsLayoutWidget):
        return [item for item in target.ci.items if isinstance(item, pg.PlotItem)]
    return []


def apply_plot_theme(target, grid: bool = True) -> None:
    """Theme a PlotWidget, a GraphicsLayoutWidget (all its plots) or a PlotItem."""
    if isinstance(target, pg.GraphicsView):
        target.setBackground(BACKGROUND)
    for plot in _plot_items(target):
        for name in ("left", "bottom", "right", "top"):
            axis = plot.getAxis(name)
            axis.setPen(pg.mkPen(AXIS))
            axis.setTextPen(pg.mkPen(TEXT))
            axis.label.setDefaultTextColor(pg.mkColor(TEXT))
        if grid:
            plot.showGrid(x=True, y=True, alpha=GRID_ALPHA)
        if plot.legend is not None:
            plot.legend.setBrush(pg.mkBrush(*LEGEND_BRUSH))
            plot.legend.setLabelTextColor(TEXT)
        if plot.titleLabel.text and "color" not in plot.titleLabel.opts:
            plot.titleLabel.setText(plot.titleLabel.text, color=TITLE)


def set_title(plot: pg.PlotItem, text: str) -> None:
    plot.setTitle(text, color=TITLE, size=TITLE_SIZE)
