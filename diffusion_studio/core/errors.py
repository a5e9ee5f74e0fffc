"""The errors the engine raises, in one leaf module: every room can raise them without importing a higher room.

Each message is one line that names the file, field or setting and says what is wrong (and, where it helps, what
to do instead). Data-layer errors live in ``diffusion_studio.data.errors``.
"""
from __future__ import annotations

import os
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint (or another file this project reads: weights, statistics, a manifest) that cannot be used."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{Path(path).name}: {reason}" if path is not None else reason)


class RunLocked(CheckpointError):
    """The run folder is being written by another process."""


class TrainingError(RuntimeError):
    """Training cannot go on; the message is one line and says what to change."""


class TrainingDiverged(TrainingError):
    def __init__(self, step: int, what: str = "loss"):
        self.step = step
        super().__init__(f"training diverged at step {step}: the {what} became NaN or infinite; "
                         f"try a lower learning rate (the last good checkpoint is kept)")


class TrainingOutOfMemory(TrainingError):
    def __init__(self, batch_size: int, device):
        super().__init__(f"out of memory on {device.type.upper()} with batch size {batch_size}; "
                         f"try a smaller batch size or image size")


class EncoderMissing(RuntimeError):
    """The text encoder a model needs is not installed; the message is one line and says what to install."""


class DistributedError(RuntimeError):
    """A multi-process run cannot start or go on; one line naming the variable, the rank or the peer."""
