"""Additions to the Schedule dock: the reverse-sampling cursor, a warning when x_T is not noise, and x_t under the
solid and the dashed schedule side by side when comparing."""
from __future__ import annotations

import pyqtgraph as pg
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from ....core.diffusion.forward import ForwardScrubber
from ....core.diffusion.pixel_stats import prior_mismatch
from ....core.diffusion.schedule import NoiseSchedule
from ...widgets.imageview import ImagePane

SAMPLING_COLOR = "#ff8c1a"
COMPARE_SEED = 0


class SamplingCursor:
    """A second, orange cursor on every schedule plot at the t of the sampling frame on screen (``state.reverse_t``).
    A run whose model has another T is placed at the same fraction t/T."""

    def __init__(self, panel):
        self.panel = panel
        self.lines: list[pg.InfiniteLine] = []
        for i, plot in enumerate(panel.plots.plot_items):
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SAMPLING_COLOR, width=1.5,
                                                                          style=Qt.PenStyle.DashLine),
                                   label="" if i else "sampling", labelOpts={"position": 0.85, "color": SAMPLING_COLOR})
            line.setZValue(9)
            line.setToolTip("The t of the reverse-sampling frame shown in the Sampling tab")
            line.hide()
            plot.addItem(line, ignoreBounds=True)
            self.lines.append(line)
        panel.state.reverse_t_changed.connect(lambda _v: self.update())
        panel.normalise.toggled.connect(lambda _on: self.update())
        panel.state.schedule_changed.connect(lambda _s: self.update())

    @property
    def x(self) -> float | None:
        rt = self.panel.state.reverse_t
        if rt is None:
            return None
        paper_t, T = rt
        frac = paper_t / max(1, T)
        return frac if self.panel.normalise.isChecked() else frac * self.panel.schedule.T

    def update(self) -> None:
        x = self.x
        rt = self.panel.state.reverse_t
        for i, line in enumerate(self.lines):
            line.setVisible(x is not None)
            if x is not None:
                line.setValue(x)
                if i == 0 and line.label is not None:
                    paper_t, T = rt
                    of = "" if T == self.panel.schedule.T else f" / {T}"
                    line.label.setFormat(f"sampling t = {paper_t}{of}")


class CompareImages(QWidget):
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε under the app's (solid) and the comparison (dashed) schedule at the same t (or the
    same t/T when the x axis is t/T), with the same ε, so the two schedules' noise levels can be seen, not only
    plotted."""

    def __init__(self, panel, parent: QWidget | None = None):
        super().__init__(parent)
        self.panel = panel
        self.setObjectName("compareImages")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self.solid_pane = ImagePane("solid", min_size=80)
        self.solid_pane.setObjectName("compareSolidPane")
        self.dashed_pane = ImagePane("dashed", min_size=80)
        self.dashed_pane.setObjectName("compareDashedPane")
        for p in (self.solid_pane, self.dashed_pane):
            p.setToolTip(f"x_t of the chosen image under each schedule at the same t, with the same ε (seed "
                         f"{COMPARE_SEED}); pixels in [−1, 1] shown black…white, clipped outside")
            p.setMaximumHeight(150)
            p.on_title_fitted = self._match_titles
            row.addWidget(p, 1)
        self.setVisible(False)
        self._cache: dict[int, tuple[object, ForwardScrubber]] = {}
        self.shown_t: tuple[int, int] | None = None   # (paper t solid, paper t dashed) last drawn
        st = panel.state
        for sig in (st.t_changed, st.schedule_changed, st.image_changed):
            sig.connect(lambda *_a: self.update_images())
        panel.compare.toggled.connect(lambda _on: self.update_images())
        panel.compare_form.schedule_ready.connect(lambda _s: self.update_images())
        panel.normalise.toggled.connect(lambda _on: self.update_images())

    def _scrubber(self, slot: int, schedule: NoiseSchedule, x0: torch.Tensor) -> ForwardScrubber:
        key = (id(schedule), id(x0))
        cached = self._cache.get(slot)
        if cached is None or cached[0] != key:
            cached = (key, ForwardScrubber(schedule, x0, seed=COMPARE_SEED))
            self._cache[slot] = cached
        return cached[1]

    def update_images(self) -> None:
        p = self.panel
        image = p.state.image
        cmp = p.compare_schedule if p.compare.isChecked() else None
        on = cmp is not None and image is not None
        self.setVisible(on)
        if not on:
            self.shown_t = None
            return
        solid = p.schedule
        t = min(p.state.paper_t, solid.T)
        ct = round(t / solid.T * cmp.T) if p.normalise.isChecked() else min(t, cmp.T)
        for slot, (sched, pt, pane, name) in enumerate(((solid, t, self.solid_pane, "solid"),
                                                         (cmp, ct, self.dashed_pane, "dashed"))):
            sc = self._scrubber(slot, sched, image.x0)
            pane.show_u8(sc.frame_u8(pt - 1).numpy().copy())
            ab = 1.0 if pt <= 0 else float(sched.alpha_bars[pt - 1])
            pane.set_title(f"{name}, t = {pt}<br>ᾱ = {ab:.2g}")  # two lines each, so neither wraps alone
        self._match_titles()
        self.shown_t = (t, ct)

    def _match_titles(self) -> None:
        """Both titles take the height of the taller one, so the two images are drawn the same size (a title that
        wrapped to one more line made its image smaller than the other)."""
        panes = (self.solid_pane, self.dashed_pane)
        if all(hasattr(p, "label") for p in panes):
            height = max(p.title_height() for p in panes)
            for p in panes:
                p.set_title_height(height)


class PriorWarning(QLabel):
    """One line under the schedule form when x_T keeps a visible part of x_0 (solid or dashed schedule)."""

    def __init__(self, panel, parent: QWidget | None = None):
        super().__init__(parent)
        self.panel = panel
        self.setObjectName("priorWarning")
        self.setWordWrap(True)
        self.setStyleSheet(f"color: {SAMPLING_COLOR};")
        panel.state.schedule_changed.connect(lambda _s: self.update_text())
        panel.compare.toggled.connect(lambda _on: self.update_text())
        panel.compare_form.schedule_ready.connect(lambda _s: self.update_text())
        self.update_text()

    def update_text(self) -> None:
        p = self.panel
        lines = []
        msg = prior_mismatch(p.schedule)
        if msg:
            lines.append("x_T is not noise: " + msg)
        cmp = p.compare_schedule if p.compare.isChecked() else None
        if cmp is not None and (cm := prior_mismatch(cmp)):
            lines.append("dashed schedule, x_T is not noise: " + cm)
        self.setText("<br>".join(lines))
        self.setVisible(bool(lines))


def attach_extras(panel) -> None:
    """Add the sampling cursor, the prior warning and the comparison images to a SchedulePanel."""
    lay = panel.body_layout
    panel.sampling_cursor = SamplingCursor(panel)
    panel.prior_warning = PriorWarning(panel)
    lay.insertWidget(lay.indexOf(panel.form) + 1, panel.prior_warning)
    panel.compare_images = CompareImages(panel)
    lay.insertWidget(lay.indexOf(panel.readout), panel.compare_images)
    panel.sampling_cursor.update()
    panel.compare_images.update_images()
