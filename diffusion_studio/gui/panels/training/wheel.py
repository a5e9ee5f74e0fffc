"""The mouse wheel over a long form scrolls the form: a spin box or combo the wheel passes over keeps its value
unless the user has clicked (or tabbed) into it first. ("FID every 500" became "every 1" while a user scrolled.)"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QApplication, QComboBox, QWidget


class WheelGuard(QObject):
    """Event filter: a wheel event over an unfocused spin box or combo goes to the scroll area around it instead."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = obj.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is None:
            event.ignore()  # no scroll area: nothing to scroll, and the value stays as it is
            return True
        # Handed to the scroll area (a wheel event Qt synthesizes, or one a child passed up, would not travel there).
        QApplication.sendEvent(area.viewport(), event)
        event.accept()
        return True


def guard_wheel(container: QWidget) -> WheelGuard:
    """Guard every spin box and combo under ``container``: StrongFocus (the wheel alone never focuses one) and the
    filter above. Returns the filter (kept alive as a child of ``container``)."""
    guard = WheelGuard(container)
    for w in container.findChildren(QAbstractSpinBox) + container.findChildren(QComboBox):
        w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        w.installEventFilter(guard)
    return guard
