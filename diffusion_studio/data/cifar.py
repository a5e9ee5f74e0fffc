"""CIFAR-10 folders already on disk: the binary batches, or the pickled "python version" read without running code."""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .convert import resize_batch, to_channels
from .errors import DataError
from .images import check_archive_args

if TYPE_CHECKING:
    from .dataset import ImageDataset

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte, then 1024 red, 1024 green, 1024 blue (row-major 32×32)

_SPLITS = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}
_SPLITS["all"] = _SPLITS["train"] + _SPLITS["test"]

# A pickled "python version" file is 30 MB; a file far beyond that is not a CIFAR batch.
_MAX_PICKLE_BYTES = 512 * 1024 * 1024

try:  # numpy ≥ 2 keeps the real module in numpy._core; numpy.core is a deprecated alias there
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _frombuffer(buf, dtype, shape, order):
    # What numpy's own _frombuffer does for protocol-5 pickles; rebuilt rather than imported from a private module.
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _latin1_encode(text, encoding="latin1", errors="strict"):
    # Python 3 pickles of numpy arrays (protocol 2) carry the raw bytes as _codecs.encode(str, "latin1").
    # Only that use is allowed: codecs.lookup runs codec search functions, and some codecs are not trivial.
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


# Exactly what a numpy array needs under pickle protocols 2–5; CIFAR's dicts, lists, ints and byte strings need
# no globals at all. Everything else (os.system, builtins.exec, any class) is refused before it is even looked up.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # protocol 5 (Python ≥ 3.8 with protocol=5)
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _Refused(pickle.UnpicklingError):
    def __init__(self, ref: str):
        super().__init__(ref)
        self.ref = ref


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays and plain containers, and nothing that could run code."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


def safe_unpickle(path: str | os.PathLike) -> object:
    """Load a pickle that may only contain data (numpy arrays, dicts, lists, numbers, bytes); DataError otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_PICKLE_BYTES + 1)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except PermissionError:
        raise DataError(path, "permission denied") from None
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > _MAX_PICKLE_BYTES:
        raise DataError(path, "file is too large to be a CIFAR-10 batch")
    if not data:
        raise DataError(path, "empty file (0 bytes)")
    try:
        # encoding="bytes": the CIFAR pickles come from Python 2, where keys and pixel data are byte strings.
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(
            path, f"refused: pickle references {exc.ref}, which is not allowed (files are data, never code)"
        ) from None
    except (MemoryError, RecursionError):
        raise DataError(path, "not a CIFAR-10 python batch (the pickle is too large or too deep)") from None
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is simply "not a batch"
        raise DataError(path, f"not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None


def _get(d: dict, key: str):
    return d.get(key.encode(), d.get(key))


def _read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise DataError(path, f"not a CIFAR-10 python batch (holds a {type(obj).__name__}, not a dict)")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(path, f"'data' must be a uint8 array of shape (N, 3072), got {type(data).__name__} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(path, "'labels' must be a list of integers") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(path, f"{labels.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def _read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except PermissionError:
        raise DataError(path, "permission denied") from None
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from None
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            path, f"size {raw.size:,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _locate(folder: Path) -> tuple[Path, str]:
    """The folder holding the batches and which version it is ("bin" preferred: no pickle at all)."""
    for base in (folder, folder / "cifar-10-batches-bin", folder / "cifar-10-batches-py"):
        if (base / "data_batch_1.bin").is_file() or (base / "test_batch.bin").is_file():
            return base, "bin"
        if (base / "data_batch_1").is_file() or (base / "test_batch").is_file():
            return base, "py"
    looked = "data_batch_1.bin … test_batch.bin or data_batch_1 … test_batch"
    raise DataError(folder, f"no CIFAR-10 batches found (looked for {looked})")


def class_names(base: Path, version: str) -> list[str]:
    """Class names from batches.meta(.txt) when present and sane, else the standard ten."""
    try:
        if version == "bin" and (base / "batches.meta.txt").is_file():
            names = [n.strip() for n in (base / "batches.meta.txt").read_text("utf-8", "replace").splitlines()]
            names = [n for n in names if n]
        elif version == "py" and (base / "batches.meta").is_file():
            meta = safe_unpickle(base / "batches.meta")
            raw = _get(meta, "label_names") if isinstance(meta, dict) else None
            names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw or []]
        else:
            names = []
    except (OSError, DataError):
        names = []  # the names are a nicety; a bad meta file should not block the images
    return names if len(names) == len(CLASS_NAMES) else list(CLASS_NAMES)


def load_cifar10(
    path: str | os.PathLike,
    size: int,
    split: str = "train",
    limit: int | None = None,
    channels: int = 3,
) -> ImageDataset:
    """A local CIFAR-10 folder (binary or python version) as an ImageDataset resized to size×size."""
    from .dataset import ImageDataset

    folder = check_archive_args(path, size, channels, split, _SPLITS, limit)
    base, version = _locate(folder)
    suffix, reader = (".bin", _read_binary_batch) if version == "bin" else ("", _read_python_batch)

    images, labels, have = [], [], 0
    for stem in _SPLITS[split]:
        file = base / f"{stem}{suffix}"
        if not file.is_file():
            continue  # a folder with only some batches is still usable
        x, y = reader(file)
        if (y < 0).any() or (y >= len(CLASS_NAMES)).any():
            raise DataError(file, f"labels must be 0–9, found {int(y.min())}–{int(y.max())}")
        images.append(x)
        labels.append(y)
        have += len(y)
        if limit is not None and have >= limit:
            break  # later batches are not even read
    if not images:
        wanted = ", ".join(f"{s}{suffix}" for s in _SPLITS[split])
        raise DataError(base, f"no {split} batches found (looked for {wanted})")
    x = np.concatenate(images)[:limit]
    y = np.concatenate(labels)[:limit]
    u8 = to_channels(resize_batch(torch.from_numpy(np.ascontiguousarray(x)), size), channels)
    return ImageDataset(
        u8,
        torch.from_numpy(y),
        name=f"CIFAR-10 ({split})",
        spec=f"cifar10:{folder}",
        class_names=class_names(base, version),
    )
