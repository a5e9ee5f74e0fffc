"""Files in and out: opening what a user names (regular files only, never a FIFO, device or socket, with a size
limit, never a hang) and writing atomically (a crash or a reader never sees half a file)."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from ..errors import CheckpointError

KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
         (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))

ErrorType = Callable[[object, str], Exception]


def file_kind(mode: int) -> str:
    """"regular file", "FIFO", "character device", "block device", "socket", "folder" or "special file"."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((name for test, name in KINDS if test(mode)), "special file")


def not_regular_reason(mode: int) -> str:
    return f"not a regular file ({file_kind(mode)})"


def _default_error(path: object, reason: str) -> Exception:
    return CheckpointError(path, reason)


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return f"cannot read ({e.strerror or e})"


def open_regular(path: str | os.PathLike, max_bytes: int | None = None, error: ErrorType | None = None,
                 what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading once it is known to be a regular file of at most ``max_bytes``.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat on the open descriptor
    (not a stat of the name, which could be swapped in between) decides. Symbolic links are followed, so a link to
    /dev/zero is refused as a character device. Errors are ``error(path, reason)`` (CheckpointError by default).
    """
    error = error or _default_error
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise error(p, "is a folder, not a file") from None
    except OSError as e:
        if isinstance(e, FileNotFoundError) and p.is_symlink():
            raise error(p, "broken symbolic link") from None
        raise error(p, _os_reason(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(p, not_regular_reason(st.st_mode))
        if max_bytes is not None and st.st_size > max_bytes:
            raise error(p, f"{st.st_size:,} bytes is too large for a {what} (the limit is {max_bytes:,})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, max_bytes: int, error: ErrorType | None = None,
                 what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; never more than that is read, even if it grows."""
    error = error or _default_error
    with open_regular(path, max_bytes, error, what) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise error(Path(path), _os_reason(e)) from None
    if len(data) > max_bytes:
        raise error(Path(path), f"grew beyond {max_bytes:,} bytes while being read")
    return data


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Write ``data`` (bytes, or a function that writes into a binary file) to ``path`` through a temporary file
    beside it and a rename, so a crash or a reader never sees half a file; the old file stays whole until then.

    The temporary file is created with mode 0666 and the process umask applied by the kernel, as a plain open()
    would (mkstemp forces 0600, and reading the umask would mean setting it). ``durable`` fsyncs the file and its
    folder, so a power cut after a checkpoint save cannot lose it.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a quota: said of the file being written, not a temporary name
            raise _naming(e, path) from None
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def _naming(e: OSError, path: Path) -> OSError:
    """The same error, naming ``path`` (the file the caller asked for) and saying the old file is untouched."""
    if e.strerror is None:
        return e
    out = type(e)(e.errno, f"{e.strerror} (nothing written; any earlier {path.name} is unchanged)", str(path))
    return out


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
