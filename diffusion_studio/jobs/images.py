"""What the Images panel loads off the GUI thread: thumbnails of files, folders and built-in datasets, in batches.

These generators contain no Qt. A GeneratorWorker runs them and emits each ``LoadBatch``; the panel turns the
thumbnails into icons (QPixmaps must be made on the GUI thread) and the errors into lines of its Problems list.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Sequence

import numpy as np
from PIL import Image

from ..data import DataError, load_dataset, open_image, sample_photos, scan_images, to_array

THUMB = 64                 # thumbnails are the centre-cropped square, as x_0 will be, at this size
BATCH_SECONDS = 0.1        # hand a batch to the GUI at least this often (~10 list updates a second)
BATCH_MAX = 128            # ... or when this many thumbnails are waiting
DATASET_PREVIEW = 64       # thumbnails shown for a built-in dataset (its first images)
# The size a built-in dataset is read at for its preview: its natural size (digits are 8×8, MNIST 28×28), else the
# thumbnail.
_DATASET_SIZE = {"digits": 8, "mnist": 28, "shapes": THUMB}


@dataclass
class Entry:
    """One thumbnail: where its pixels come from, so x_0 can be made at any working size when it is selected."""

    name: str
    source: str                          # a file path, or e.g. "builtin:digits#12"
    path: str | None = None              # a file to read again at the working size
    pixels: np.ndarray | None = None     # or an in-memory uint8 (H, W, C) image (sample photos, dataset items)
    source_size: tuple[int, int] | None = None  # (width, height) before the crop, known once loaded
    grey: bool | None = None             # a file's: one channel of grey (known once loaded)

    @property
    def channels(self) -> int:
        if self.pixels is None:
            return 1 if self.grey else 3
        return int(self.pixels.shape[2])

    def load(self, size: int) -> np.ndarray:
        """The centre-cropped square at size×size as uint8 (H, W, C); raises DataError for a file that fails. A
        greyscale file (or a colour file whose three channels are equal) comes as one channel, so the forward process
        noises it with grey noise, as a model trained on grey images sees it, not with coloured RGB noise."""
        if self.path is not None:
            img = open_image(self.path)
            self.source_size = img.size
            arr = to_array(img, size, 3)
            self.grey = img.mode == "L" or is_grey(arr)
            return np.ascontiguousarray(arr[:, :, :1]) if self.grey else arr
        arr = self.pixels[:, :, 0] if self.pixels.shape[2] == 1 else self.pixels
        self.source_size = (int(arr.shape[1]), int(arr.shape[0]))
        return to_array(Image.fromarray(np.ascontiguousarray(arr)), size, self.channels)


def is_grey(arr: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 image has the same value in every channel of every pixel."""
    return arr.ndim == 3 and arr.shape[2] >= 3 and bool((arr[:, :, 0] == arr[:, :, 1]).all()
                                                        and (arr[:, :, 0] == arr[:, :, 2]).all())


def crop_note(name: str, source_size: tuple[int, int] | None, size: int) -> str:
    """'china: 640×427, centre-cropped to 427×427, then resized to 256×256' for a non-square image; '' otherwise."""
    if not source_size or source_size[0] == source_size[1]:
        return ""
    w, h = source_size
    side = min(w, h)
    return f"{name}: {w}×{h}, centre-cropped to {side}×{side}, then resized to {size}×{size}"


@dataclass
class LoadBatch:
    """Progress after some files: thumbnails that loaded, errors of those that did not, `done` of `total` tried."""

    done: int
    total: int
    current: str = ""
    thumbs: list[tuple[Entry, np.ndarray]] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)


@dataclass
class LoadResult:
    loaded: int
    failed: int
    total: int
    cancelled: bool = False


def _count(paths: Sequence[Path], cancel: Callable[[], bool], errors: list[DataError]) -> int | None:
    """How many files the load will try (the folder walk is lazy, so this is a quick pass); None if cancelled."""
    n = 0
    for p in paths:
        if p.is_dir():
            try:
                for _ in scan_images(p, on_error=lambda e: None):
                    n += 1
                    if n % 256 == 0 and cancel():
                        return None
            except DataError as exc:
                errors.append(exc)
        else:
            n += 1
    return n


def _files(paths: Sequence[Path], errors: list[DataError]):
    for p in paths:
        if p.is_dir():
            try:
                yield from scan_images(p, on_error=errors.append)
            except DataError:  # already reported by the counting pass
                pass
        else:
            yield p


def load_paths(paths: Sequence[str | os.PathLike], cancel: Callable[[], bool],
               thumb: int = THUMB) -> Generator[LoadBatch, None, LoadResult]:
    """Load thumbnails of image files and of every image under folders, yielding a LoadBatch every ~0.1 s.

    Folders are walked lazily with ``data.folder.scan_images`` (links followed once, hidden files skipped);
    each file is decoded once, straight to its thumbnail. A file that fails becomes a DataError in the batch,
    never an exception. ``cancel`` is polled before every file.
    """
    paths = [Path(p) for p in paths]
    count_errors: list[DataError] = []
    total = _count(paths, cancel, count_errors)
    if total is None:
        return LoadResult(0, 0, 0, cancelled=True)
    batch = LoadBatch(0, total, errors=list(count_errors))
    loaded, failed, done = 0, len(count_errors), 0
    last = time.monotonic()
    walk_errors: list[DataError] = []
    cancelled = False
    for file in _files(paths, walk_errors):
        if cancel():
            cancelled = True
            break
        if walk_errors:  # a subfolder that could not be opened
            batch.errors.extend(walk_errors)
            failed += len(walk_errors)
            walk_errors.clear()
        try:
            arr = to_array(open_image(file), thumb, 3)
            batch.thumbs.append((Entry(file.name, str(file), path=str(file)), arr))
            loaded += 1
        except DataError as exc:
            batch.errors.append(exc)
            failed += 1
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one odd file must not end a load of thousands
            batch.errors.append(DataError(file, f"could not be loaded ({type(exc).__name__}: {exc})"))
            failed += 1
        done += 1
        now = time.monotonic()
        if now - last >= BATCH_SECONDS or len(batch.thumbs) >= BATCH_MAX:
            batch.done, batch.total, batch.current = done, max(total, done), file.name
            yield batch
            batch = LoadBatch(done, max(total, done))
            last = now
    batch.errors.extend(walk_errors)
    failed += len(walk_errors)
    batch.done, batch.total = done, max(total, done)
    if batch.thumbs or batch.errors or done == 0:
        yield batch
    return LoadResult(loaded, failed, max(total, done), cancelled=cancelled)


def load_builtin_preview(name: str, n: int = DATASET_PREVIEW) -> Generator[LoadBatch, None, LoadResult]:
    """The first n images of ``builtin:NAME`` as thumbnails (one batch), each kept in memory for selection."""
    spec = f"builtin:{name}"
    ds = load_dataset(spec, _DATASET_SIZE.get(name, THUMB))
    k = min(n, len(ds))
    images = ds.images[:k].permute(0, 2, 3, 1).contiguous().numpy()
    batch = LoadBatch(k, k)
    for i in range(k):
        label = ""
        if ds.labels is not None and ds.class_names:
            label = ds.class_names[int(ds.labels[i])]
        name_i = f"{label} #{i}" if label else f"#{i}"
        entry = Entry(name_i, f"{spec}#{i}", pixels=images[i].copy())
        batch.thumbs.append((entry, entry.load(THUMB)))   # every thumbnail is THUMB² (QIcon never enlarges)
    yield batch
    return LoadResult(k, 0, k)


def sample_photo_entries() -> list[tuple[Entry, np.ndarray]]:
    """The built-in sample photos as entries with their thumbnails (fast: done on the GUI thread)."""
    out = []
    for name, arr in sample_photos():
        entry = Entry(name, f"builtin:photos#{name}", pixels=arr)
        out.append((entry, entry.load(THUMB)))
    return out
