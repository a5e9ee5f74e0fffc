"""ImageDataset: uint8 images kept compact, batches handed out in [-1, 1]. Loading one by spec: specs.py."""

from __future__ import annotations

from typing import Any

import torch

from .errors import DataError


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
        report: Any = None,  # a folder's LoadReport (folder.py): what was loaded and skipped
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
