"""The Images dock's two sentences about what is open: the name the collection combo shows for an opened folder or
file, and what the Training tab will train on."""
from __future__ import annotations

import html
from pathlib import Path

BUILTIN_PLACEHOLDER = "Built-in…"


def opened_text(name: str, spec: str | None) -> str:
    """What the collection combo shows for something opened from disk: "Folder: cats", "File: a.png", "Opened: 3
    items" (not "Built-in…", as if nothing were open)."""
    if spec is None:
        return f"Opened: {name}"
    return f"Folder: {name}" if Path(spec).is_dir() else f"File: {name}"


def training_text(training: str | None, chosen_here: str | None, collection: str | None) -> str:
    """Rich text: what the Training tab will train on. ``training`` is its Data choice as the window reports it (None
    until it does), ``chosen_here`` what "Use as training data" last handed it (AppState.dataset_spec),
    ``collection`` what is open in the dock (what that button would hand over)."""
    spec = training or chosen_here
    if spec:
        text = f"The Training tab will train on <b>{html.escape(spec)}</b>"
        if spec == chosen_here:
            text += " (chosen here)"
    else:
        text = "The Training tab trains on its own Data choice (a built-in set, in its Data row)"
    if collection is not None and collection != spec:
        text += f"; <i>Use as training data</i> makes it train on {html.escape(collection)}"
    return text + "."
