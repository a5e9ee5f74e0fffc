"""A Training-form row: a checkbox with a grey, wrapped line under it that follows the chosen data (the captions row
in text.py, the labels row in labels.py)."""
from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QLabel, QVBoxLayout, QWidget


class NotedCheck(QWidget):
    """``check`` and ``note``; ``set_spec`` hands the chosen data to ``refresh``, which subclasses write."""

    def __init__(self, text: str, name: str, note_name: str, tooltip: str, checked: bool = False, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.check = QCheckBox(text)
        self.check.setObjectName(name)
        self.check.setChecked(checked)
        self.check.setToolTip(tooltip)
        lay.addWidget(self.check)
        self.note = QLabel("")
        self.note.setObjectName(note_name)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #9aa4b0;")
        lay.addWidget(self.note)
        self.spec: str | None = None
        self.check.toggled.connect(lambda _on: self.refresh())

    def set_spec(self, spec) -> None:
        self.spec = spec
        self.refresh()

    def refresh(self) -> None:
        raise NotImplementedError


def attach(form, row: NotedCheck, position: int, label: str, attribute: str) -> NotedCheck:
    """Put ``row`` into the Training form at ``position`` under ``label`` and let it follow the chosen data."""
    form.layout().insertRow(position, label, row)
    setattr(form, attribute, row)
    form.spec_changed.connect(row.set_spec)
    row.set_spec(form.spec())
    return row
