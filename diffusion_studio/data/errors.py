"""Errors raised by the data layer: one line that names the file (or field) and says what is wrong."""

from __future__ import annotations

import os

# Long reasons (a Pillow message quoting a whole header, say) would wrap in a status bar; cut them.
_MAX_REASON = 300


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    if len(line) > _MAX_REASON:
        line = line[: _MAX_REASON - 1] + "…"
    return line


def _display_name(path: str) -> str:
    # The base name is what a user recognises; the full path lives in `.path` for tooltips/logs.
    stripped = path.rstrip("/\\")
    return os.path.basename(stripped) or stripped or path


class DataError(ValueError):
    """A file or setting that cannot be turned into images, with a one-line reason.

    `path` is the offending file or folder (None for dataset-level problems); `name` overrides the label
    shown before the colon (a dataset name, a field such as "size"). `str(e)` is "name: reason".
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, *, name: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = _one_line(reason)
        if name is not None:
            self.name = _one_line(name)
        elif self.path is not None:
            self.name = _one_line(_display_name(self.path))
        else:
            self.name = None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}" if self.name else self.reason

    def __reduce__(self):
        # Custom __init__ arguments would otherwise break pickling (multiprocessing, worker queues).
        return (_rebuild, (type(self), self.path, self.reason, self.name))


def _rebuild(cls, path, reason, name):
    return cls(path, reason, name=name)


class LoadCancelled(DataError):
    """The user cancelled a load before a single image was ready; callers usually just return quietly."""
