"""MNIST-style idx files already on disk (plain or .gz), parsed with numpy and checked byte for byte."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .convert import resize_batch, to_channels
from .dataset import ImageDataset
from .errors import DataError
from .images import check_archive_args

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

# Real MNIST is 47 MB (EMNIST ~0.7 GB); anything claiming more than this is a corrupt header, not a bigger dataset.
_MAX_BYTES = 1 << 30
_MAX_SIDE = 1024
_GZIP_MAX_RATIO = 1100  # deflate cannot expand data more than ~1032:1

_SPLITS = {"train": ("train",), "test": ("t10k",), "all": ("train", "t10k")}


def _candidates(folder: Path, prefix: str, kind: str) -> list[Path]:
    # Both the original names (train-images-idx3-ubyte) and the common re-upload ones (train-images.idx3-ubyte),
    # in the folder itself or in torchvision's MNIST/raw layout.
    idx = "idx3-ubyte" if kind == "images" else "idx1-ubyte"
    names = [f"{prefix}-{kind}-{idx}", f"{prefix}-{kind}.{idx}"]
    dirs = [folder, folder / "raw", folder / "MNIST" / "raw"]
    return [d / (n + gz) for d in dirs for n in names for gz in ("", ".gz")]


def _find(folder: Path, prefix: str, kind: str) -> Path:
    for p in _candidates(folder, prefix, kind):
        if p.is_file():
            return p
    wanted = _candidates(folder, prefix, kind)[0].name
    raise DataError(folder, f"no MNIST {kind} file found (looked for {wanted} or {wanted}.gz)")


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    # In chunks: a stream (gzip) that claims more than it holds costs only what it really holds.
    parts, have = [], 0
    while have < n:
        chunk = f.read(min(n - have, 1 << 24))
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    if have != n:
        raise DataError(path, f"file too short: {what} needs {n:,} bytes, found {have:,}")
    return b"".join(parts)


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one idx file (uint8 payload) whose header must carry `magic`; shape comes from the header.

    The header's claim is checked in Python integers (no overflow) against a cap and against the bytes present:
    exactly for a plain file, by gzip's best compression ratio for a .gz (whose stream is then read in bounded
    chunks), before anything that size is allocated.
    """
    from ..core.io.safeio import open_regular

    path = Path(path)
    raw = open_regular(path, None, DataError, "MNIST file")
    try:
        with raw:
            size = os.fstat(raw.fileno()).st_size
            gz = path.name.endswith(".gz")
            f = gzip.GzipFile(fileobj=raw) if gz else raw
            head = _read_exact(f, 4, path, "the idx header")
            (found,) = struct.unpack(">i", head)
            if found != magic:
                hint = " (this is an idx labels file)" if found == LABELS_MAGIC else ""
                hint = " (this is an idx images file)" if found == IMAGES_MAGIC else hint
                reason = f"not an idx file of the expected kind: magic number {found}, expected {magic}{hint}"
                raise DataError(path, reason)
            ndim = magic & 0xFF
            dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "the idx header"))
            count = math.prod(dims)  # a Python int: no overflow, whatever the header says
            shape = "×".join(map(str, dims))
            if ndim == 3 and (dims[1] > _MAX_SIDE or dims[2] > _MAX_SIDE):
                raise DataError(path, f"header claims {shape} images; sides above {_MAX_SIDE} are not MNIST-like")
            if count > _MAX_BYTES:
                raise DataError(path, f"header claims {shape} = {count:,} bytes of data, more than the "
                                      f"{_MAX_BYTES:,} an MNIST-style file may hold")
            header = 4 + 4 * ndim
            if not gz and count > size - header:
                raise DataError(path, f"file too short: {shape} values need {count:,} bytes, found "
                                      f"{max(size - header, 0):,}")
            if not gz and count < size - header:
                raise DataError(path, f"unexpected extra bytes after the {shape} values")
            if gz and count > _GZIP_MAX_RATIO * size:
                raise DataError(path, f"header claims {shape} = {count:,} bytes of data, more than a {size:,}-byte "
                                      f".gz can hold")
            data = _read_exact(f, count, path, f"{shape} values")
            if f.read(1):
                raise DataError(path, f"unexpected extra bytes after the {shape} values")
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a truncated .gz ends in EOFError.
        raise DataError(path, f"cannot decompress or read ({exc})") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _load_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(folder, prefix, "images")
    labels_path = _find(folder, prefix, "labels")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            labels_path, f"{labels.shape[0]:,} labels for {images.shape[0]:,} images in {images_path.name}"
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(images_path, f"holds no images (shape {images.shape})")
    return images, labels


def load_mnist(
    path: str | os.PathLike,
    size: int,
    split: str = "train",
    limit: int | None = None,
    channels: int = 1,
) -> ImageDataset:
    """An MNIST-format folder (MNIST, Fashion-MNIST, KMNIST...) as an ImageDataset resized to size×size."""
    folder = check_archive_args(path, size, channels, split, _SPLITS, limit)
    parts = [_load_split(folder, prefix) for prefix in _SPLITS[split]]
    if len({p[0].shape[1:] for p in parts}) != 1:
        raise DataError(folder, "train and test images have different sizes")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    u8 = torch.from_numpy(images.copy()).unsqueeze(1)
    if u8.shape[2] != u8.shape[3]:
        raise DataError(folder, f"images are {u8.shape[2]}×{u8.shape[3]}; only square images are supported")
    u8 = to_channels(resize_batch(u8, size), channels)
    n_classes = int(labels.max()) + 1
    return ImageDataset(
        u8,
        torch.from_numpy(labels.astype(np.int64)),
        name=f"{folder.name or 'MNIST'} ({split})",
        spec=f"mnist:{folder}",
        class_names=[str(i) for i in range(n_classes)],
    )
