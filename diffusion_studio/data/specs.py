"""Data by spec: load_dataset (images from any source) and load_points (2-D points), each by its own loader."""
# Image specs: a folder, an image file, builtin:NAME, mnist:PATH, cifar10:PATH; points: toy:NAME or a .csv.
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import torch

from . import builtin, cifar, folder, images, mnist
from .builtin import BUILTIN_DATASETS
from .dataset import ImageDataset
from .errors import DataError
from .folder import FolderProgress
from .points import DEFAULT_N, PointSet, make_toy
from .points_csv import load_points_csv

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]+):(.*)$", re.S)


def split_spec(spec: str) -> tuple[str | None, str]:
    match = _SCHEME_RE.match(spec)
    if match and len(match.group(1)) > 1:  # "C:\data" is a Windows drive, not a scheme
        return match.group(1).lower(), match.group(2)
    return None, spec


def _looks_like(folder: Path) -> str | None:
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return None
    if any(n.startswith(("train-images", "t10k-images")) for n in names):
        return "mnist"
    if names & {"data_batch_1", "data_batch_1.bin", "cifar-10-batches-py", "cifar-10-batches-bin"}:
        return "cifar10"
    return None


def load_dataset(
    spec: str | os.PathLike,
    size: int,
    channels: int | None = None,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[FolderProgress], None] | None = None,
    *,
    split: str = "train",
    limit: int | None = None,
) -> ImageDataset:
    """Load a dataset from a spec: a folder, an image file, builtin:NAME, mnist:PATH or cifar10:PATH.

    channels=None keeps the natural channel count (1 for digits/MNIST, 3 otherwise). `progress` and `cancel`
    apply to folders, the only slow kind; `split` ("train", "test", "all") to builtin:mnist and MNIST/CIFAR folders,
    `limit` to MNIST/CIFAR/folders.
    """
    images._check_size(size)
    if channels is not None:
        images._check_channels(channels)
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else None
    if not text:
        raise DataError(None, f"no data source given ({spec!r})", name="data")
    scheme, rest = split_spec(text)

    if scheme == "builtin":
        key = rest.strip().lower()
        if key not in BUILTIN_DATASETS:
            valid = ", ".join(f"builtin:{k}" for k in BUILTIN_DATASETS)
            raise DataError(None, f"unknown built-in dataset {key!r} (choose one of {valid})", name=text)
        return builtin.load_builtin(key, size, channels, split=split)
    if scheme in ("mnist", "cifar10"):
        if not rest.strip():
            raise DataError(None, f"give a folder after '{scheme}:', e.g. {scheme}:~/data/{scheme}", name=text)
        path = Path(rest.strip()).expanduser()
        if scheme == "mnist":
            ds = mnist.load_mnist(path, size, split=split, limit=limit, channels=channels or 1)
        else:
            ds = cifar.load_cifar10(path, size, split=split, limit=limit, channels=channels or 3)
        ds.spec = text  # as typed: checkpoints record no machine paths the user did not write
        return ds
    if scheme is not None and not Path(text).expanduser().exists():
        raise DataError(
            None,
            f"unknown data source '{scheme}:' "
            "(use a folder, an image file, builtin:NAME, mnist:PATH or cifar10:PATH)",
            name=text,
        )

    path = Path(text).expanduser()
    if not path.exists():
        reason = "broken symbolic link" if path.is_symlink() else "no such file or folder"
        raise DataError(path, reason)
    if path.is_dir():
        try:
            ds = folder.load_folder(path, size, channels or 3, cancel=cancel, limit=limit, progress=progress)
        except DataError as exc:
            kind = _looks_like(path)
            if kind and exc.path == str(path) and "no images found" in exc.reason:
                raise DataError(path, f"{exc.reason}; this looks like {kind} data, try '{kind}:{text}'") from None
            raise
        ds.spec = text  # as typed ("~/pics" stays so): checkpoints record no machine paths the user did not write
        return ds
    arr = images.to_array(images.open_image(path, draft_size=size), size, channels or 3)
    u8 = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
    return ImageDataset(u8, name=path.name, spec=text, sources=[path.name])


def held_out_split(spec: str) -> dict[str, str]:
    """load_dataset's arguments for the images a model did not train on: {"split": "test"} for data with a held-out
    split (builtin:mnist, mnist:PATH, cifar10:PATH), else {} (the data's images as they are)."""
    scheme, _ = split_spec(str(spec).strip())
    held = scheme in ("mnist", "cifar10") or str(spec).strip().lower() == "builtin:mnist"
    return {"split": "test"} if held else {}


def natural_channels(spec: object) -> int:
    """The channel count a spec loads with when none is asked for: 1 for digits and MNIST-format data, else 3."""
    key = str(spec).strip().lower()
    return 1 if key in ("builtin:digits", "builtin:mnist") or key.startswith("mnist:") else 3


def is_points_spec(spec: object) -> bool:
    """True for a 2-D data source: toy:NAME or a .csv file."""
    text = str(spec).strip()
    return text.lower().startswith("toy:") or text.lower().endswith(".csv")


def load_points(spec: str, n: int = DEFAULT_N, seed: int = 0) -> tuple[PointSet, list[str]]:
    """A toy by spec ("toy:…") or a CSV file by path; returns the set and the CSV's problem lines (none for a toy)."""
    if isinstance(spec, str) and spec.strip().lower().startswith("toy:"):
        return make_toy(spec.strip(), n, seed), []
    return load_points_csv(spec)
