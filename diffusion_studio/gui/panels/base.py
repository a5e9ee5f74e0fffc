"""What every panel has: the shared state, the worker pool, settings, and a clean shutdown."""
from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox, QWidget

from ..state import AppState
from ..workers import WorkerPool


class Panel(QWidget):
    """Base of the panels. Subclasses read their last choices from ``settings`` under ``settings_group``."""

    title = "Panel"
    settings_group = "panel"

    def __init__(self, state: AppState, pool: WorkerPool, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.state, self.pool, self.settings = state, pool, settings

    def setting(self, key: str, default, type_=None):
        value = self.settings.value(f"{self.settings_group}/{key}", default)
        if type_ is None or value is None:
            return value
        try:
            if type_ is bool:
                return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            return type_(value)
        except (TypeError, ValueError):
            return default

    def set_setting(self, key: str, value) -> None:
        self.settings.setValue(f"{self.settings_group}/{key}", value)

    def save_settings(self) -> None:
        """Write the panel's current choices to settings (called when the window closes)."""

    def shutdown(self) -> None:
        """Stop this panel's background work (called when the window closes, before workers are joined)."""

    def show_error(self, message: str, title: str = "Diffusion Studio") -> None:
        """Tell the user; in the status bar always, and in a non-blocking message box."""
        self.state.message.emit(message)
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.show()
        self._last_box = box
