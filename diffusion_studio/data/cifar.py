"""CIFAR-10 folders already on disk: the binary batches, or the pickled "python version" read without running code."""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .convert import resize_batch, to_channels
from .dataset import ImageDataset
from .errors import DataError
from .images import check_archive_args


CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte, then 1024 red, 1024 green, 1024 blue (row-major 32×32)

_SPLITS = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}
_SPLITS["all"] = _SPLITS["train"] + _SPLITS["test"]

# A pickled "python version" file is 30 MB; a file far beyond that is not a CIFAR batch.
_MAX_PICKLE_BYTES = 512 * 1024 * 1024
_MAX_RECORDS = 100_000           # a binary batch holds 10,000 records (30.7 MB)
_MAX_META_BYTES = 1 << 20        # batches.meta(.txt): ten class names

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


class _NdarrayName:
    """Stands for numpy.ndarray in a pickle: it may only be handed to _reconstruct, never called. Called, ndarray
    allocates whatever shape the pickle asks for (a 147-byte file could ask for 6 GB)."""

    def __call__(self, *args, **kwargs):
        raise _Refused("numpy.ndarray called directly (it would allocate any size the file asks for)")


_NDARRAY = _NdarrayName()


def _safe_reconstruct(subtype, shape, dtype):
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") and then fills it from the bytes in the pickle
    # (__setstate__ checks the bytes match the shape), so its size is bounded by the file.
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise _Refused("numpy _reconstruct with anything but an empty ndarray")
    return _reconstruct(np.ndarray, (0,), dtype)


def _safe_dtype(*args):
    if len(args) > 3:
        raise _Refused("numpy.dtype with unexpected arguments")
    dt = np.dtype(*args)
    if dt.hasobject:
        raise _Refused("an object dtype")
    return dt


def _safe_frombuffer(buf, dtype, shape, order):
    if np.dtype(dtype).hasobject:
        raise _Refused("an object dtype")
    return _frombuffer(buf, dtype, shape, order)


# Exactly what a numpy array needs under pickle protocols 2–5; CIFAR's dicts, lists, ints and byte strings need
# no globals at all. Everything else (os.system, builtins.exec, any class) is refused before it is even looked up.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,  # protocol 5 (Python ≥ 3.8 with protocol=5)
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
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


def safe_unpickle(path: str | os.PathLike, max_bytes: int = _MAX_PICKLE_BYTES) -> object:
    """Load a pickle that may only contain data (numpy arrays, dicts, lists, numbers, bytes); DataError otherwise.

    Nothing is built that the file's own bytes do not hold, except through shared references (one list named a
    million times); callers check lengths before walking what they get.
    """
    from ..core.io.safeio import read_regular

    path = Path(path)
    data = read_regular(path, max_bytes, DataError, "CIFAR-10 batch")
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
    n = data.shape[0]
    # Length first, then each item's type: a list that shares one nested list a million times claims a billion
    # labels in a few KB, and np.asarray would build them all.
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(path, f"'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    elif not isinstance(labels, list):
        raise DataError(path, f"'labels' must be a list of integers, got {type(labels).__name__}")
    if len(labels) != n:
        raise DataError(path, f"{len(labels):,} labels for {n:,} images")
    if isinstance(labels, list) and not all(type(v) is int for v in labels):
        raise DataError(path, "'labels' must be a list of integers")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise DataError(path, "'labels' must be small integers (0–9)") from None
    return data.reshape(-1, 3, 32, 32), labels


def _read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from ..core.io.safeio import open_regular

    with open_regular(path, None, DataError, "CIFAR-10 batch") as f:
        size = os.fstat(f.fileno()).st_size  # checked before a byte is read
        if size == 0 or size % RECORD_BYTES:
            raise DataError(path, f"size {size:,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records")
        if size > _MAX_RECORDS * RECORD_BYTES:
            raise DataError(path, f"{size // RECORD_BYTES:,} records is more than a CIFAR-10 batch file holds "
                                  f"(the limit is {_MAX_RECORDS:,}; real ones hold 10,000)")
        try:
            raw = np.frombuffer(f.read(size + 1), dtype=np.uint8)
        except OSError as exc:
            raise DataError(path, f"cannot read file ({exc.strerror or exc})") from None
    if raw.size != size:
        raise DataError(path, f"changed size while being read ({size:,} → {raw.size:,} bytes)")
    records = raw.reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _locate(folder: Path) -> tuple[Path, str]:
    """The folder holding the batches and which version it is ("bin" preferred: no pickle at all)."""
    # lexists, not is_file: a FIFO or device under a batch's name is then reported by name when it is opened.
    for base in (folder, folder / "cifar-10-batches-bin", folder / "cifar-10-batches-py"):
        if os.path.lexists(base / "data_batch_1.bin") or os.path.lexists(base / "test_batch.bin"):
            return base, "bin"
        if os.path.lexists(base / "data_batch_1") or os.path.lexists(base / "test_batch"):
            return base, "py"
    looked = "data_batch_1.bin … test_batch.bin or data_batch_1 … test_batch"
    raise DataError(folder, f"no CIFAR-10 batches found (looked for {looked})")


def class_names(base: Path, version: str) -> list[str]:
    """Class names from batches.meta(.txt) when present and sane, else the standard ten."""
    try:
        if version == "bin" and (base / "batches.meta.txt").is_file():
            from ..core.io.safeio import read_regular

            text = read_regular(base / "batches.meta.txt", _MAX_META_BYTES, DataError).decode("utf-8", "replace")
            names = [n for n in (line.strip()[:100] for line in text.splitlines()) if n]
        elif version == "py" and (base / "batches.meta").is_file():
            meta = safe_unpickle(base / "batches.meta", _MAX_META_BYTES)
            raw = _get(meta, "label_names") if isinstance(meta, dict) else None
            raw = raw if isinstance(raw, list) and len(raw) == len(CLASS_NAMES) else []
            names = [n.decode("utf-8", "replace")[:100] if isinstance(n, bytes) else str(n)[:100] for n in raw
                     if isinstance(n, (bytes, str))]
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
    folder = check_archive_args(path, size, channels, split, _SPLITS, limit)
    base, version = _locate(folder)
    suffix, reader = (".bin", _read_binary_batch) if version == "bin" else ("", _read_python_batch)

    images, labels, have = [], [], 0
    for stem in _SPLITS[split]:
        file = base / f"{stem}{suffix}"
        if not os.path.lexists(file):
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
