"""Folders of image files: a loop-safe lazy scan, and a loader that yields progress and can be cancelled."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Iterator

import numpy as np
import torch

from .dataset import ImageDataset
from .errors import DataError, LoadCancelled
from .images import IMAGE_EXTENSIONS, _check_channels, _check_size, open_image, to_array

log = logging.getLogger(__name__)

# The counting pass can take a while on a network drive; look at the cancel flag this often while counting.
_COUNT_CANCEL_EVERY = 512


@dataclass
class LoadReport:
    """What happened while loading a folder: how many images loaded, which files failed and why."""

    loaded: int = 0
    failed: list[DataError] = field(default_factory=list)
    skipped_non_images: int = 0
    cancelled: bool = False

    def summary(self) -> str:
        """One line, e.g. "loaded 12 images; 3 failed (see list); 2 non-image files skipped"."""
        parts = [f"loaded {self.loaded} image{'' if self.loaded == 1 else 's'}"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed (see list)")
        if self.skipped_non_images:
            n = self.skipped_non_images
            parts.append(f"{n} non-image file{'' if n == 1 else 's'} skipped")
        if self.cancelled:
            parts.append("cancelled")
        return "; ".join(parts)


@dataclass(frozen=True)
class FolderProgress:
    """Progress after each file: `done` of `total` files tried (total is an estimate when files change)."""

    done: int
    total: int | None
    current: str
    ok: int
    failed: int
    last_error: DataError | None = None


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _open_root(root: Path) -> os.stat_result:
    try:
        st = root.stat()
    except FileNotFoundError:
        raise DataError(root, "folder not found") from None
    except PermissionError:
        raise DataError(root, "permission denied") from None
    except OSError as exc:
        raise DataError(root, f"cannot open folder ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(root, "not a folder")
    return st


def _walk(
    root: Path,
    recursive: bool,
    on_error: Callable[[DataError], None],
    on_skip: Callable[[], None],
) -> Iterator[Path]:
    root_stat = _open_root(root)
    # Directories are identified by (device, inode) after following links, so `loop -> ..` is entered once
    # at most; files too, so a link next to its target does not load the same picture twice.
    seen_dirs = {(root_stat.st_dev, root_stat.st_ino)}
    seen_files: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, root_stat.st_dev)]
    while stack:
        folder, dev = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if folder == root:
                raise DataError(root, f"cannot list folder ({exc.strerror or exc})") from None
            reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
            on_error(DataError(folder, f"cannot open folder ({reason}); skipped"))
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if recursive:
                    subdirs.append(entry)
                continue
            if not _is_image_name(entry.name):
                try:
                    if entry.is_file():
                        on_skip()
                except OSError:
                    pass
                continue
            try:
                if entry.is_symlink():
                    st = entry.stat()
                    key = (st.st_dev, st.st_ino)
                else:
                    key = (dev, entry.inode())
            except OSError:
                key = None  # a broken link: still yielded, so loading reports it by name
            if key is not None:
                if key in seen_files:
                    continue
                seen_files.add(key)
            yield Path(entry.path)
        for entry in reversed(subdirs):  # reversed onto a stack = visited in sorted order
            try:
                st = entry.stat()
            except OSError as exc:
                on_error(DataError(entry.path, f"cannot open folder ({exc.strerror or exc}); skipped"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            stack.append((Path(entry.path), st.st_dev))


def scan_images(
    path: str | os.PathLike,
    recursive: bool = True,
    on_error: Callable[[DataError], None] | None = None,
) -> Iterator[Path]:
    """Lazily yield image files under path: sorted within each folder, files before subfolders, hidden skipped.

    Symbolic links are followed but each real folder/file is visited once, so link loops end. A subfolder that
    cannot be read is passed to on_error (default: logged) and skipped; a bad root raises DataError at once.
    """
    root = Path(path)
    _open_root(root)  # raise now, not at the first next(), so callers see a bad root immediately

    def report(err: DataError) -> None:
        if on_error is not None:
            on_error(err)
        else:
            log.warning("%s", err)

    return _walk(root, recursive, report, lambda: None)


def _relative(file: Path, root: Path) -> str:
    try:
        return file.relative_to(root).as_posix()
    except ValueError:
        return file.name


def _class_labels(sources: list[str]) -> tuple[list[int] | None, list[str] | None]:
    # The ImageFolder convention: root/<class>/<image>. Only used when every image sits in such a folder.
    tops = [s.split("/", 1)[0] if "/" in s else None for s in sources]
    if not tops or any(t is None for t in tops):
        return None, None
    names = sorted(set(tops))
    if len(names) < 2:
        return None, None
    index = {n: i for i, n in enumerate(names)}
    return [index[t] for t in tops], names


def iter_load_folder(
    path: str | os.PathLike,
    size: int,
    channels: int,
    cancel: Callable[[], bool] | None = None,
    limit: int | None = None,
) -> Generator[FolderProgress, None, ImageDataset]:
    """Load every image under path, yielding FolderProgress after each file; returns the ImageDataset.

    A quick counting pass gives `total` first. `cancel` is polled between files: on cancel the images loaded so
    far are returned with report.cancelled set (LoadCancelled if none were). `limit` caps the images loaded.
    Subfolders as classes (root/cat/*.png, root/dog/*.png) give labels and class_names.
    """
    root = Path(path)
    _check_size(size)
    _check_channels(channels)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(None, f"must be a whole number ≥ 1, not {limit!r}", name="limit")

    count = 0
    for _ in _walk(root, True, lambda e: None, lambda: None):  # errors are reported by the loading pass
        count += 1
        if count % _COUNT_CANCEL_EVERY == 0 and cancel is not None and cancel():
            raise LoadCancelled(root, "cancelled before any image was loaded")
    total = count if limit is None else min(count, limit)
    _check_fits(root, total, channels, size)

    report = LoadReport()
    arrays: list[np.ndarray] = []
    sources: list[str] = []
    file_failures: list[DataError] = []
    done = 0

    def skipped() -> None:
        report.skipped_non_images += 1

    for file in _walk(root, True, report.failed.append, skipped):
        if limit is not None and report.loaded >= limit:
            break
        if cancel is not None and cancel():
            report.cancelled = True
            break
        rel = _relative(file, root)
        error = None
        try:
            arrays.append(to_array(open_image(file, draft_size=size), size, channels))
            sources.append(rel)
            report.loaded += 1
        except DataError as exc:
            error = exc
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one odd file must not abort a load of thousands
            error = DataError(file, f"could not be loaded ({type(exc).__name__}: {exc})")
        if error is not None:
            report.failed.append(error)
            file_failures.append(error)
        done += 1
        if error is not None and limit is not None:  # a failure costs one more file to reach the limit
            total = min(max(count, done), total + 1)
        total = max(total, done)  # files may have appeared since counting
        yield FolderProgress(done, total, rel, report.loaded, len(report.failed), error)

    if not arrays:
        if report.cancelled:
            raise LoadCancelled(root, "cancelled before any image was loaded")
        if file_failures:
            first = file_failures[0]
            n = len(file_failures)
            raise DataError(root, f"no loadable images ({n} file{'' if n == 1 else 's'} failed, first: {first})")
        extra = ""
        if report.skipped_non_images:
            extra += f"; {report.skipped_non_images} other files ignored"
        if report.failed:
            extra += f"; {len(report.failed)} subfolder(s) could not be read"
        raise DataError(root, f"no images found (looked for {', '.join(IMAGE_EXTENSIONS)}{extra})")

    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels, class_names = _class_labels(sources)
    return ImageDataset(
        images,
        torch.tensor(labels, dtype=torch.long) if labels is not None else None,
        name=root.name or str(root),
        spec=str(root),
        class_names=class_names,
        report=report,
        sources=sources,
    )


def _check_fits(root: Path, n: int, channels: int, size: int) -> None:
    """Refuse before loading when the folder's images at this size could not fit in memory (held twice while
    stacked)."""
    from ..core.runtime.memory import check_data_fits

    try:
        check_data_fits(2 * n, channels, size, f"{n:,} images at")
    except ValueError as e:
        raise DataError(root, f"{n:,} images at {size}×{size} would not fit in memory "
                              f"({str(e).split('; ', 1)[-1]})") from None


def load_folder(
    path: str | os.PathLike,
    size: int,
    channels: int = 3,
    cancel: Callable[[], bool] | None = None,
    limit: int | None = None,
    progress: Callable[[FolderProgress], None] | None = None,
) -> ImageDataset:
    """iter_load_folder driven to the end; progress (if given) receives every FolderProgress."""
    gen = iter_load_folder(path, size, channels, cancel=cancel, limit=limit)
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(item)
