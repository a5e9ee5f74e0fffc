"""Where the shipped resources live (icons, sample images, pretrained models) and how `builtin:NAME` resolves."""
from __future__ import annotations

import os
import re
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class UnknownModelError(ValueError):
    """A `builtin:NAME` that names no shipped model; the message is one line listing the ones present."""


def resources_dir() -> Path:
    """The top-level ``resources/`` folder next to the package."""
    return Path(__file__).resolve().parents[1] / "resources"


def models_dir() -> Path:
    return resources_dir() / "models"


def builtin_model_path(name: str) -> Path:
    """The manifest of the shipped model ``name``: ``resources/models/<name>/checkpoint.json`` (may not exist)."""
    name = name.strip()
    if not _NAME_RE.match(name) or ".." in name:
        raise UnknownModelError(f"builtin:{name}: not a model name (letters, digits, '-', '_' and '.' only)")
    return models_dir() / name / "checkpoint.json"


def list_builtin_models() -> list[str]:
    """Names of the shipped models that are present (a folder under resources/models/ with a checkpoint.json)."""
    root = models_dir()
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    return sorted(p.name for p in entries if (p / "checkpoint.json").is_file())


def resolve_model_spec(spec: str | os.PathLike) -> Path:
    """``builtin:NAME`` → that shipped model's manifest (UnknownModelError if absent); anything else → the path.

    A plain path is returned as given (``~`` expanded); whether it holds a checkpoint is for the loader to say.
    """
    text = os.fspath(spec).strip()
    if text.lower().startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):].strip()
        available = list_builtin_models()
        listing = ", ".join(f"builtin:{n}" for n in available) if available else "none are installed"
        if not name:
            raise UnknownModelError(f"give a model name after 'builtin:' (available: {listing})")
        path = builtin_model_path(name)
        if not path.is_file():
            raise UnknownModelError(f"builtin:{name}: no such built-in model (available: {listing})")
        return path
    return Path(text).expanduser()
