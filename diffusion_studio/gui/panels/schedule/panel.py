"""The Schedule panel: edit the app's noise schedule, see β_t, ᾱ_t, β̃_t, log SNR against t, compare, export."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea,
                               QSizePolicy, QVBoxLayout, QWidget)

from ....core.diffusion.schedule import KINDS, NoiseSchedule
from ...widgets.dialogs import remember, start_path
from ..base import Panel
from .extras import attach_extras
from .form import ScheduleForm
from .plots import CURVES, SchedulePlots, curve_icon

# CSV column → NoiseSchedule attribute, in the order written.
CSV_COLUMNS = {key: attr for key, (attr, *_rest) in CURVES.items()}
CSV_ORDER = ("beta", "alpha", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "beta_tilde", "log_snr")


def _num(value: float, digits: int = 3) -> str:
    return "∞" if math.isinf(value) else f"{value:.{digits}g}"


class SchedulePanel(Panel):
    """Edits ``state.schedule`` (applied live when the fields are valid), plots it with a t cursor linked to
    ``state.t``, overlays a second, panel-local schedule dashed, and exports the curves (CSV) and plots (PNG)."""

    title = "Schedule"
    settings_group = "schedule"

    def __init__(self, state, pool, settings, parent: QWidget | None = None):
        super().__init__(state, pool, settings, parent)
        self.compare_schedule: NoiseSchedule | None = None
        self._syncing = False
        self._error_said = False  # the status bar was last told of an invalid edit (a valid one then replaces it)

        self.form = ScheduleForm(parent=self)
        self.form.setToolTip("The schedule every panel uses. Edits apply at once when valid.")
        self.compare = QCheckBox("Compare with…")
        self.compare.setObjectName("compare")
        self.compare.setToolTip("Overlay a second schedule, drawn dashed. It is only for looking: the app keeps "
                                "using the schedule above.")
        self.compare_form = ScheduleForm(prefix="compare_", parent=self)
        self.compare_form.setVisible(False)
        self.normalise = QCheckBox("x axis as t/T")
        self.normalise.setObjectName("normalise")
        self.normalise.setToolTip("Plot against t/T (0..1) instead of t, to compare schedules with different T.")
        self.log_beta = QCheckBox("log β")
        self.log_beta.setObjectName("log_beta")
        self.log_beta.setToolTip("Logarithmic y axis for β_t and β̃_t: shows 1e-4 and 0.02 (or a cosine schedule's "
                                 "0.999 at the end) on one plot. β̃_1 = 0 has no logarithm and is left out.")

        self.show_boxes: dict[str, QCheckBox] = {}
        boxes = QGridLayout()
        boxes.setContentsMargins(0, 0, 0, 0)
        boxes.setHorizontalSpacing(4)
        boxes.setVerticalSpacing(0)
        for i, (key, (_attr, name, color, _row, tip)) in enumerate(CURVES.items()):
            box = QCheckBox(name.replace("_t", ""))  # short, so three fit across a narrow (1024 px screen) dock
            box.setObjectName(f"show_{key}")
            box.setIcon(curve_icon(color))
            box.setChecked(True)
            box.setToolTip(f"Show or hide {name}. {tip}")
            box.toggled.connect(lambda on, k=key: self.plots.set_curve_visible(k, on))
            boxes.addWidget(box, i // 3, i % 3)
            self.show_boxes[key] = box

        self.plots = SchedulePlots(self)
        self.plots.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.cursors = self.plots.cursors
        self.cursor = self.cursors[0]
        self.curves = self.plots.curves
        self.compare_curves = self.plots.compare_curves
        self.readout = QLabel("")
        self.readout.setObjectName("readout")
        self.readout.setWordWrap(True)
        self.readout.setToolTip("The values at the cursor's t. SNR_t = ᾱ_t/(1−ᾱ_t) is the signal-to-noise ratio "
                                "of x_t; at t = 0 the image is clean (ᾱ = 1, no noise).")

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        options = QHBoxLayout()
        options.setContentsMargins(0, 0, 0, 0)
        options.addWidget(self.compare)
        options.addStretch(1)
        options.addWidget(self.log_beta)
        row, col = divmod(len(CURVES), 3)
        boxes.addWidget(self.normalise, row, col, 1, 3 - col)  # after the curve boxes: the options row stays narrow
        # Everything sits in a scroll area: the plots keep a readable height (SchedulePlots.MIN_VIEW px each), and
        # when the dock is too short for them, the comparison form and x_t images (1024×700), it scrolls instead of
        # squashing the plots to ~45 px.
        self.body = QWidget()
        self.body.setObjectName("scheduleBody")
        self.scroll = QScrollArea()
        self.scroll.setObjectName("scheduleScroll")
        self.scroll.setWidget(self.body)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        layout = QVBoxLayout(self.body)
        self.body_layout = layout
        layout.setContentsMargins(4, 6, 4, 6)
        layout.setSpacing(4)
        layout.addWidget(self.form)
        layout.addWidget(line)
        layout.addLayout(options)
        layout.addWidget(self.compare_form)
        layout.addLayout(boxes)
        layout.addWidget(self.plots, 1)
        layout.addWidget(self.readout)

        self.form.schedule_ready.connect(self._apply)
        self.form.invalid.connect(self._invalid)
        self.compare_form.schedule_ready.connect(self._set_compare)
        self.compare.toggled.connect(self._compare_toggled)
        self.normalise.toggled.connect(lambda _on: self._replot())
        self.log_beta.toggled.connect(
            lambda on: self.plots.set_log_beta(on, self.schedule.T, self.normalise.isChecked()))
        self.plots.cursor_moved.connect(self._cursor_dragged)
        self.plots.cursor_released.connect(self._update_cursor)
        state.schedule_changed.connect(self._schedule_changed)
        state.t_changed.connect(lambda _t: self._update_cursor())

        self._restore()
        self.form.set_schedule(state.schedule)
        self._replot()
        attach_extras(self)  # sampling cursor, x_T warning, comparison images (extras.py)

    def sizeHint(self) -> QSize:
        return QSize(320, 760)  # at 1280 px the central tabs get the rest (400 left them at their minimum)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """As wide as the fields need with room for the vertical scroll bar (a scroll area hides its content's minimum
        width, and the T field was cut at the dock's edge), and short: the rest scrolls."""
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        return QSize(self.body.minimumSizeHint().width() + bar, 240)

    # ---- the app's schedule ------------------------------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        return self.state.schedule

    def _apply(self, schedule: NoiseSchedule) -> None:
        """A valid edit: make it the app's schedule (every panel follows through ``schedule_changed``)."""
        self._syncing = True
        try:
            self.state.set_schedule(schedule)
        finally:
            self._syncing = False
        if self._error_said:  # the status bar still said why an earlier value was refused: say it is fixed
            self._error_said = False
            self.state.message.emit(f"Schedule applied: {schedule.describe()}")

    def _invalid(self, message: str) -> None:
        self._error_said = True
        self.state.message.emit(f"Schedule not changed: {message}")

    def _schedule_changed(self, schedule: NoiseSchedule) -> None:
        if not self._syncing:  # changed elsewhere (a checkpoint, a restore): show it in the fields
            self.form.set_schedule(schedule)
        self._replot()

    def _replot(self) -> None:
        normalised = self.normalise.isChecked()
        self.plots.set_schedule(self.schedule, normalised)
        self.plots.set_compare(self.compare_schedule if self.compare.isChecked() else None, normalised)
        self._update_key()
        self._update_cursor()

    # ---- comparison --------------------------------------------------------------------------------------------------
    def _compare_toggled(self, on: bool) -> None:
        self.compare_form.setVisible(on)
        if on and self.compare_schedule is None:
            self.compare_form.validate()  # emits schedule_ready → _set_compare, or shows why not
        self._replot()

    def _set_compare(self, schedule: NoiseSchedule) -> None:
        self.compare_schedule = schedule
        if self.compare.isChecked():
            self._replot()

    def _update_key(self) -> None:
        self.plots.set_key(self.schedule, self.compare_schedule if self.compare.isChecked() else None)

    # ---- the t cursor ------------------------------------------------------------------------------------------------
    def _x_of(self, paper_t: int) -> float:
        return paper_t / self.schedule.T if self.normalise.isChecked() else float(paper_t)

    def _paper_t_of(self, x: float) -> int:
        t = x * self.schedule.T if self.normalise.isChecked() else x
        return max(0, min(int(round(t)), self.schedule.T))

    def _cursor_dragged(self, x: float) -> None:
        self.state.set_t(self._paper_t_of(x) - 1)  # the paper's t → schedule index (−1 is the clean x_0)
        self._update_readout()

    def _shown_t(self) -> int:
        # the state clamps t just after schedule_changed, so a larger t can be seen for a moment
        return min(self.state.paper_t, self.schedule.T)

    def _update_cursor(self) -> None:
        self.plots.set_cursor(self._x_of(self._shown_t()))
        self._update_readout()

    def _values_at(self, schedule: NoiseSchedule, paper_t: int) -> str:
        if paper_t <= 0:
            return "clean x₀: ᾱ = 1, SNR = ∞"
        i = paper_t - 1
        return (f"β = {_num(float(schedule.betas[i]))} · ᾱ = {_num(float(schedule.alpha_bars[i]))} · "
                f"SNR = {_num(float(schedule.snr[i]))}")

    def _update_readout(self) -> None:
        t = self._shown_t()
        text = f"<b>t = {t}</b>/{self.schedule.T} · {self._values_at(self.schedule, t)}"
        cmp = self.compare_schedule if self.compare.isChecked() else None
        if cmp is not None:
            # the comparison at the same x: the same t, or the same fraction t/T
            ct = round(t / self.schedule.T * cmp.T) if self.normalise.isChecked() else t
            values = self._values_at(cmp, ct) if ct <= cmp.T else f"beyond its T = {cmp.T}"
            text += f"<br>dashed, t = {ct} · {values}"
        self.readout.setText(text)

    # ---- export ------------------------------------------------------------------------------------------------------
    def csv_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the CSV: the paper's t and every curve, full float precision (repr round-trips)."""
        sets = [("", self.schedule)]
        if self.compare.isChecked() and self.compare_schedule is not None:
            sets.append(("compare_", self.compare_schedule))
        header: list[str] = []
        columns: list[list[str]] = []
        for prefix, sched in sets:
            header += [prefix + "t"] + [prefix + c for c in CSV_ORDER]
            columns.append([str(t) for t in range(1, sched.T + 1)])
            for c in CSV_ORDER:
                columns.append([repr(float(v)) for v in getattr(sched, CSV_COLUMNS[c]).tolist()])
        n = max(len(col) for col in columns)
        rows = [[col[r] if r < len(col) else "" for col in columns] for r in range(n)]
        return header, rows

    def export_csv(self, path) -> Path:
        path = Path(path)
        header, rows = self.csv_rows()
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        self.state.message.emit(f"Schedule curves saved to {path}")
        return path

    def export_png(self, path, scale: float = 2.0) -> Path:
        """Render the three plots (pyqtgraph's ImageExporter on the plots' scene, ``scale`` × their size on screen)."""
        import pyqtgraph.exporters as exporters

        path = Path(path)
        exporter = exporters.ImageExporter(self.plots.scene())
        width = max(int(self.plots.width() * scale), 600)
        exporter.parameters()["width"] = width
        exporter.export(str(path))
        if not path.exists():
            raise OSError(f"could not write {path}")
        self.state.message.emit(f"Schedule plot saved to {path}")
        return path

    def _save_dialog(self, caption: str, name: str, filters: str, export) -> None:
        path, _ = QFileDialog.getSaveFileName(self, caption, start_path(self.settings, name), filters)
        if not path:
            return
        try:
            export(path)
        except OSError as exc:
            self.show_error(f"Could not save {path}: {exc.strerror or exc}")
            return
        remember(self.settings, path)

    def export_csv_dialog(self) -> None:
        self._save_dialog("Export schedule curves", f"schedule_{self.schedule.kind}_T{self.schedule.T}.csv",
                          "CSV files (*.csv)", self.export_csv)

    def export_png_dialog(self) -> None:
        self._save_dialog("Export schedule plot", f"schedule_{self.schedule.kind}_T{self.schedule.T}.png",
                          "PNG images (*.png)", self.export_png)

    # ---- settings ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _load(text) -> NoiseSchedule | None:
        """A schedule saved as JSON ({kind, T, params}), or None when it is missing or no longer valid."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.get("kind") not in KINDS:
                return None
            return NoiseSchedule.create(d["kind"], int(d["T"]), **{k: float(v) for k, v in d["params"].items()})
        except (TypeError, ValueError, KeyError, AttributeError):
            return None

    def _restore(self) -> None:
        saved = self._load(self.setting("last", None))
        if saved is not None:
            self.state.set_schedule(saved)
        cmp = self._load(self.setting("compare_last", None))
        if cmp is not None:
            self.compare_form.set_schedule(cmp)
        else:
            self.compare_form.set_values("cosine", self.state.schedule.T, {})
        self.normalise.setChecked(self.setting("normalise", False, bool))
        self.log_beta.setChecked(self.setting("log_beta", False, bool))
        hidden = str(self.setting("hidden", "", str) or "").split(",")
        for key, box in self.show_boxes.items():
            box.setChecked(key not in hidden)
        if self.setting("compare", False, bool):
            self.compare.setChecked(True)

    def save_settings(self) -> None:
        if self.schedule.kind in KINDS:
            self.set_setting("last", json.dumps(self.schedule.to_dict()))
        if self.compare_schedule is not None:
            self.set_setting("compare_last", json.dumps(self.compare_schedule.to_dict()))
        self.set_setting("compare", self.compare.isChecked())
        self.set_setting("normalise", self.normalise.isChecked())
        self.set_setting("log_beta", self.log_beta.isChecked())
        self.set_setting("hidden", ",".join(k for k, box in self.show_boxes.items() if not box.isChecked()))
