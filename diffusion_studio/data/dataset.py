"""ImageDataset (uint8 images kept compact, batches handed out in [-1, 1]) and load_dataset(spec)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from .builtin import BUILTIN_DATASETS
from .errors import DataError

if TYPE_CHECKING:
    from .folder import FolderProgress, LoadReport

__all__ = ["BUILTIN_DATASETS", "ImageDataset", "load_dataset"]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]+):(.*)$", re.S)


class ImageDataset:
    """N square images stored as uint8 (N, C, H, W), C ∈ {1, 3}, with optional integer labels.

    uint8 storage is 4× smaller than float32; conversion to [-1, 1] happens per batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        name: str = "",
        spec: str = "",
        class_names: list[str] | None = None,
        report: LoadReport | None = None,
        sources: list[str] | None = None,
    ):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        n, c, h, w = images.shape
        if c not in (1, 3) or h != w or n < 1:
            raise ValueError(f"images must be N ≥ 1 square images with 1 or 3 channels, got {tuple(images.shape)}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if labels.shape[0] != n:
                raise ValueError(f"{labels.shape[0]} labels for {n} images")
        if sources is not None and len(sources) not in (0, n):
            raise ValueError(f"{len(sources)} source names for {n} images")
        self.images = images.contiguous()
        self.labels = labels
        self.name = name
        self.spec = spec
        self.class_names = list(class_names) if class_names is not None else None
        self.report = report
        self.sources = list(sources) if sources else []
        self.captions: list[str] | None = None  # one per image, for text conditioning (data/captions.py)

    # --- shape -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[2]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        if self.labels is None:
            return 0
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, size={self.size}, channels={self.channels}, "
            f"classes={self.num_classes})"
        )

    # --- access ------------------------------------------------------------------------------------------
    def _index(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"index out of range for a dataset of {n} images")
        return idx

    def batch(
        self,
        indices,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        flip: bool = False,
    ) -> torch.Tensor:
        """float32 (B, C, H, W) in [-1, 1]; with flip, each image is mirrored left-right with probability ½.

        The flips are drawn from `generator`, so a seeded generator gives the same batch every time.
        """
        idx = self._index(indices)
        # Move uint8 first: a quarter of the bytes of float32 cross to the device.
        x = self.images[idx].to(device) if device is not None else self.images[idx]
        x = x.float().div_(127.5).sub_(1.0)
        if flip and idx.numel():
            gen_device = generator.device if generator is not None else torch.device("cpu")
            mask = torch.rand(idx.numel(), generator=generator, device=gen_device) < 0.5
            mask = mask.to(x.device).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(-1), x)
        return x

    def get(self, i: int) -> torch.Tensor:
        """One image as float32 (C, H, W) in [-1, 1]."""
        return self.batch([int(i)])[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.get(i)

    def labels_batch(self, indices, device: torch.device | str | None = None) -> torch.Tensor | None:
        """Labels (B,) long for these indices, or None for an unlabelled dataset."""
        if self.labels is None:
            return None
        out = self.labels[self._index(indices)]
        return out.to(device) if device is not None else out

    def check_batch_size(self, b: int) -> None:
        """Raise DataError when a batch of b images cannot be drawn from this dataset."""
        n = len(self)
        label = self.name or self.spec or "dataset"
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise DataError(None, f"batch size must be a whole number ≥ 1, not {b!r}", name=label)
        if b > n:
            raise DataError(None, f"batch size {b} is larger than the dataset ({n} images)", name=label)

    def to_dict(self) -> dict:
        """A JSON-able description from which load_dataset can rebuild this dataset."""
        return {"spec": self.spec, "size": self.size, "channels": self.channels, "n": len(self), "name": self.name}


def _split_spec(spec: str) -> tuple[str | None, str]:
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
    apply to folders, the only slow kind; `split` ("train", "test", "all") and `limit` to MNIST/CIFAR/folders.
    """
    from . import builtin, cifar, folder, images, mnist  # local: these modules import ImageDataset from here

    images._check_size(size)
    if channels is not None:
        images._check_channels(channels)
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else None
    if not text:
        raise DataError(None, f"no data source given ({spec!r})", name="data")
    scheme, rest = _split_spec(text)

    if scheme == "builtin":
        key = rest.strip().lower()
        if key not in BUILTIN_DATASETS:
            valid = ", ".join(f"builtin:{k}" for k in BUILTIN_DATASETS)
            raise DataError(None, f"unknown built-in dataset {key!r} (choose one of {valid})", name=text)
        return builtin.load_builtin(key, size, channels)
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
