"""File dialogs start in the folder the user last chose in any of them (one remembered folder for the whole app)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

KEY = "dialogs/last_dir"


def last_folder(settings: QSettings, fallback: str | Path | None = None) -> str:
    """The folder of the user's last file choice, else ``fallback`` (if it exists), else the home folder."""
    saved = settings.value(KEY, "", str) or ""
    for candidate in (saved, fallback):
        if candidate and Path(candidate).is_dir():
            return str(candidate)
    return str(Path.home())


def start_path(settings: QSettings, name: str = "", fallback: str | Path | None = None) -> str:
    """Where a save dialog opens: the last folder, with a suggested file name."""
    folder = last_folder(settings, fallback)
    return str(Path(folder) / name) if name else folder


def remember(settings: QSettings, chosen: str | Path | None) -> None:
    """Remember the folder of a chosen file (or a chosen folder itself) for the next dialog."""
    if not chosen:
        return
    p = Path(chosen)
    folder = p if p.is_dir() else p.parent
    settings.setValue(KEY, str(folder))
