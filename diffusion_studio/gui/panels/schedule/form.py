"""The Schedule panel's editor for one schedule (kind, T, β range …), validated by ``NoiseSchedule.create`` itself."""
from __future__ import annotations

import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QLineEdit, QSpinBox, QWidget

from ....core.diffusion.schedule import DEFAULT_PARAMS, KINDS, NoiseSchedule

T_MAX = 100_000

KIND_TIPS = {
    "linear": "β_t rises linearly from β start to β end (Ho et al. 2020: 1e-4 → 0.02, T = 1000).",
    "cosine": "ᾱ_t follows cos²: noise is added gently at both ends (Nichol & Dhariwal 2021).",
    "sigmoid": "β_t follows an S-shaped curve between β start and β end.",
    "quadratic": "√β_t rises linearly, so β_t grows slowly at first and faster later.",
}

# name → (label, tooltip); which ones show depends on the kind (the keys of DEFAULT_PARAMS[kind]).
PARAM_FIELDS: dict[str, tuple[str, str]] = {
    "beta_start": ("β start", "β_1, the variance of the noise added at the first step. Must lie in (0, 1); "
                              "scientific notation such as 1e-4 works."),
    "beta_end": ("β end", "β_T, the variance of the noise added at the last step; in (0, 1) and ≥ β start."),
    "sigmoid_range": ("range", "The sigmoid is evaluated on [−range, range]: larger means a sharper S."),
    "s": ("cosine s", "Small offset s in ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2) that keeps β_1 from being tiny."),
    "max_beta": ("max β", "β_t is clipped to this value so the last steps do not destroy everything at once."),
}
# Grid positions (row, column pair) so that the fields of every kind pack into at most two rows.
_POSITIONS = {"beta_start": (1, 0), "beta_end": (1, 1), "sigmoid_range": (2, 0), "s": (2, 0), "max_beta": (2, 1)}

_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


class ScheduleForm(QWidget):
    """Kind / T / parameter fields. Every edit is validated at once: a valid schedule is emitted with
    ``schedule_ready``; an invalid one shows ``NoiseSchedule.create``'s one-line message in the red error label,
    marks the fields it names, and emits ``invalid``. ``set_schedule`` fills the fields without emitting anything."""

    schedule_ready = Signal(object)   # NoiseSchedule
    invalid = Signal(str)             # the one-line message

    def __init__(self, prefix: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.prefix = prefix
        self._syncing = False
        self.last_error: str | None = None
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(4)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.kind = QComboBox()
        self.kind.setObjectName(prefix + "kind")
        for i, k in enumerate(KINDS):
            self.kind.addItem(k, k)
            self.kind.setItemData(i, KIND_TIPS[k], Qt.ItemDataRole.ToolTipRole)
        self.kind.setToolTip("How β_t grows with t. " + " ".join(f"{k}: {v}" for k, v in KIND_TIPS.items()))
        self.T = QSpinBox()
        self.T.setObjectName(prefix + "T")
        self.T.setRange(1, T_MAX)  # 1 is allowed so that the error explains why T must be at least 2
        self.T.setKeyboardTracking(False)  # typing 500 applies 500 on Enter, not 5, 50, 500
        self.T.setAccelerated(True)
        self.T.setMinimumWidth(66)  # room for "100000" and the arrows; the default hint is wider (1024 px screens)
        self.T.setToolTip("T, the number of noising steps: t runs from 1 to T and ᾱ_T should end near 0.")
        grid.addWidget(self._label("kind", self.kind), 0, 0)
        grid.addWidget(self.kind, 0, 1)
        grid.addWidget(self._label("T", self.T), 0, 2)
        grid.addWidget(self.T, 0, 3)

        self.fields: dict[str, QLineEdit] = {}
        self.labels: dict[str, QLabel] = {}
        for name, (text, tip) in PARAM_FIELDS.items():
            edit = QLineEdit()
            edit.setObjectName(prefix + name)
            edit.setToolTip(tip)
            edit.setMinimumWidth(54)  # "0.0001" fits; the comparison form ("cosine s") then fits a 1024 px window
            label = self._label(text, edit)
            row, pair = _POSITIONS[name]
            grid.addWidget(label, row, 2 * pair)
            grid.addWidget(edit, row, 2 * pair + 1)
            self.fields[name], self.labels[name] = edit, label
            edit.textEdited.connect(self.validate)
            edit.editingFinished.connect(self.validate)

        self.error_label = QLabel("")
        self.error_label.setObjectName(prefix + "errorLabel")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #d9302c;")
        self.error_label.setVisible(False)
        grid.addWidget(self.error_label, 3, 0, 1, 4)

        self.setStyleSheet('QLineEdit[invalid="true"], QSpinBox[invalid="true"] { border: 2px solid #d9302c; }')
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.T.valueChanged.connect(self.validate)
        self.set_values("linear", 1000, DEFAULT_PARAMS["linear"])

    @staticmethod
    def _label(text: str, buddy: QWidget) -> QLabel:
        label = QLabel(text)
        label.setBuddy(buddy)
        label.setToolTip(buddy.toolTip())
        return label

    # ---- values ------------------------------------------------------------------------------------------------------
    def current_kind(self) -> str:
        return self.kind.currentData() or self.kind.currentText()

    def set_values(self, kind: str, T: int, params: dict[str, float]) -> None:
        """Fill the fields (kind, T, and the parameters given; the others keep their text). Emits nothing."""
        self._syncing = True
        try:
            i = self.kind.findData(kind)
            if i < 0:  # a schedule the editor cannot rebuild (custom βs from a checkpoint, a respaced one)
                self.kind.addItem(kind, kind)
                i = self.kind.count() - 1
            self.kind.setCurrentIndex(i)
            self.T.setValue(max(1, min(int(T), T_MAX)))
            for name, edit in self.fields.items():
                if name in params:
                    edit.setText(repr(float(params[name])))
                elif not edit.text():
                    edit.setText(repr(float(self._default(name))))
            self._drop_extra_kinds()
            self._show_fields()
            self._set_error(None)
        finally:
            self._syncing = False

    def set_schedule(self, schedule: NoiseSchedule) -> None:
        self.set_values(schedule.kind, schedule.T, schedule.params)

    @staticmethod
    def _default(name: str) -> float:
        return next(p[name] for p in DEFAULT_PARAMS.values() if name in p)

    def _drop_extra_kinds(self) -> None:
        for i in range(self.kind.count() - 1, len(KINDS) - 1, -1):
            if i != self.kind.currentIndex():
                self.kind.removeItem(i)

    def _show_fields(self) -> None:
        wanted = DEFAULT_PARAMS.get(self.current_kind(), {})
        for name, edit in self.fields.items():
            edit.setVisible(name in wanted)
            self.labels[name].setVisible(name in wanted)

    def params_text(self) -> dict[str, str]:
        return {name: self.fields[name].text() for name in DEFAULT_PARAMS.get(self.current_kind(), {})}

    def build(self) -> NoiseSchedule:
        """The schedule the fields describe; ValueError (one line, naming the field) when they describe none."""
        kind = self.current_kind()
        if kind not in KINDS:
            raise ValueError(f"choose a schedule kind: {', '.join(KINDS)}")
        params = {}
        for name, text in self.params_text().items():
            if not _NUMBER.match(text):
                raise ValueError(f"{name} must be a number, got {text.strip()!r}")
            params[name] = float(text)
        return NoiseSchedule.create(kind, int(self.T.value()), **params)

    # ---- validation --------------------------------------------------------------------------------------------------
    def _kind_changed(self) -> None:
        if self._syncing:
            return
        self._drop_extra_kinds()
        self._show_fields()
        self.validate()

    def validate(self) -> NoiseSchedule | None:
        """Build from the fields; emit the schedule, or show and emit the error. Returns the schedule or None."""
        if self._syncing:
            return None
        try:
            schedule = self.build()
        except ValueError as exc:
            message = str(exc).strip().splitlines()[0]
            self._set_error(message)
            self.invalid.emit(message)
            return None
        self._set_error(None)
        self.schedule_ready.emit(schedule)
        return schedule

    def _set_error(self, message: str | None) -> None:
        self.last_error = message
        self.error_label.setText(message or "")
        self.error_label.setVisible(bool(message))
        named = set()
        if message:
            named = {n for n in ["T", *self.fields] if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", message)}
        for name, widget in [("T", self.T), *self.fields.items()]:
            bad = name in named
            if bool(widget.property("invalid")) != bad:
                widget.setProperty("invalid", bad)
                widget.style().unpolish(widget)
                widget.style().polish(widget)

    def invalid_fields(self) -> list[str]:
        return [n for n, w in [("T", self.T), *self.fields.items()] if w.property("invalid")]
