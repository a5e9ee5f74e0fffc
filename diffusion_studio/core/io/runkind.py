"""What kind of run a folder holds, by its manifest: a diffusion run (checkpoint.json) or an autoencoder
(autoencoder.json). Each writes its own metrics.jsonl and run.json, so one kind never writes into the other's folder."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError

KINDS = {"checkpoint.json": "a diffusion run", "autoencoder.json": "an autoencoder"}


def other_kind(folder: str | os.PathLike, manifest: str) -> str | None:
    """The other kind of run in ``folder`` (its description and manifest), when a run writing ``manifest`` would
    share the folder with it; None when the folder is free for that kind."""
    for name, what in KINDS.items():
        if name != manifest and (Path(folder) / name).exists():
            return f"{what} ({name})"
    return None


def check_kind(folder: str | os.PathLike, manifest: str) -> None:
    """CheckpointError naming the folder when it holds another kind of run than one that writes ``manifest``."""
    other = other_kind(folder, manifest)
    if other is not None:
        raise CheckpointError(folder, f"holds {other}; {KINDS.get(manifest, manifest)} goes in a folder of its "
                                      f"own (its metrics.jsonl and run.json would replace the other's)")
