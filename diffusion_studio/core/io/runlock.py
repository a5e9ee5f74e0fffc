"""One writer per run folder: an OS lock (flock on FOLDER/.lock) that a crash releases, naming the process that holds it.

The lock file is never deleted (deleting it would let two processes lock two different files of the same name); it
holds the pid and command line of the current holder, only for the message a second writer gets. Within one process
the lock is re-entrant (the GUI's training worker and its save button, a CLI run and its saves), counted per folder.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError, RunLocked

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are then unguarded, as before
    fcntl = None  # type: ignore[assignment]


_held: dict[str, list] = {}  # real folder path → [fd, count, exclusive]
_guard = threading.Lock()


def _forget_in_child() -> None:
    # A forked child is another writer: it must not inherit the parent's hold (its descriptors share the lock).
    global _guard
    _guard = threading.Lock()
    for fd, *_ in _held.values():
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        return "another process"
    pid = text[0].strip() if text else ""
    purpose = " ".join(text[1].split())[:40] if len(text) > 1 else ""
    command = " ".join(text[2].split()) if len(text) > 2 else ""
    if len(command) > 160:
        command = command[:159] + "…"
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({purpose}: {command})" if purpose else "")


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def acquire(folder: str | os.PathLike, purpose: str = "write") -> None:
    """Take the folder's lock (creating the folder's lock file) or raise RunLocked at once, never waiting."""
    folder = Path(folder)
    key = _key(folder)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        if fcntl is None:
            _held[key] = [None, 1, False]
            return
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise CheckpointError(folder, f"cannot create its lock file {LOCK_NAME} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise RunLocked(folder, f"cannot {purpose}: the run folder is in use by {who}; wait for it to finish "
                                    f"or stop it (one writer per run folder)") from None
        except OSError:
            # A file system without flock (some network mounts): carry on unguarded rather than refuse every save.
            _held[key] = [fd, 1, False]
            return
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{purpose}\n{command}\n".encode("utf-8", "replace"), 0)
        _held[key] = [fd, 1, True]


def release(folder: str | os.PathLike) -> None:
    key = _key(Path(folder))
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        fd = entry[0]
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock


def holds(folder: str | os.PathLike) -> bool:
    """Whether this process holds the folder's lock."""
    with _guard:
        return _key(Path(folder)) in _held


def exclusive(folder: str | os.PathLike) -> bool:
    """Whether this process holds the folder's lock and the OS enforces it (flock worked)."""
    with _guard:
        entry = _held.get(_key(Path(folder)))
        return bool(entry and entry[2])


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, purpose: str = "write") -> Iterator[Path]:
    """Hold the run folder's lock for the ``with`` block (the folder must exist)."""
    acquire(folder, purpose)
    try:
        yield Path(folder)
    finally:
        release(folder)
