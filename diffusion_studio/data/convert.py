"""Tensors in [-1, 1] ↔ uint8 arrays, image grids, and atomic PNG/GIF writing (numpy/torch/Pillow only)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .enlarge import enlarge, integer_scale

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses, so RGB→gray agrees across the data layer.
_LUMA = (0.299, 0.587, 0.114)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] tensor → uint8 array: (C,H,W) → (H,W[,C]); (N,C,H,W) → (N,H,W[,C]); one channel drops its axis.

    Values are rounded and clamped; NaN becomes mid-grey so a diverged sample still displays.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"to_uint8 expects (H,W), (C,H,W) or (N,C,H,W), got shape {tuple(x.shape)}")
    y = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0)
    y = ((y + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    if y.dim() == 3:
        y = y.permute(1, 2, 0)
    elif y.dim() == 4:
        y = y.permute(0, 2, 3, 1)
    if y.dim() >= 3 and y.shape[-1] == 1:
        y = y.squeeze(-1)
    return np.ascontiguousarray(y.numpy())


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """uint8 (H,W), (H,W,C) or (N,H,W,C) → float32 (C,H,W) / (N,C,H,W) in [-1, 1] (v / 127.5 - 1)."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise TypeError(f"from_uint8 expects a uint8 array, got {a.dtype}")
    if not a.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only buffers
        a = a.copy()
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim == 3:
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    elif a.ndim == 4:
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
    else:
        raise ValueError(f"from_uint8 expects (H,W), (H,W,C) or (N,H,W,C), got shape {a.shape}")
    return t.float().div_(127.5).sub_(1.0).contiguous()


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N,C,H,W) with C in {1,3} → the same images with `channels` channels (gray ↔ RGB)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_batch(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """uint8 (N,C,H,W) → uint8 (N,C,size,size), bicubic (antialiased when shrinking), in memory-bounded chunks."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    shrinking = size < max(h, w)
    for start in range(0, n, chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bicubic", align_corners=False, antialias=shrinking)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def make_grid(
    x: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = -1.0
) -> torch.Tensor:
    """Tile (N,C,H,W) into one (C, H', W') image like torchvision's make_grid; nrow = images per row.

    The default nrow is ceil(sqrt(N)), giving a near-square grid.
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"make_grid expects (N,C,H,W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    if padding < 0:
        raise ValueError(f"padding must be ≥ 0, not {padding}")
    if nrow is None:
        nrow = math.ceil(math.sqrt(n))
    if nrow < 1:
        raise ValueError(f"nrow must be ≥ 1, not {nrow}")
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    cell_h, cell_w = h + padding, w + padding
    grid = x.new_full((c, rows * cell_h + padding, cols * cell_w + padding), pad_value)
    for k in range(n):
        r, col = divmod(k, cols)
        top, left = r * cell_h + padding, col * cell_w + padding
        grid[:, top : top + h, left : left + w] = x[k]
    return grid


def _as_image_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A single image (tensor in [-1,1] or uint8 array) → uint8 (H,W) or (H,W,3|4) for Pillow."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 4:
            if x.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of {x.shape[0]} (use save_grid)")
            x = x[0]
        a = to_uint8(x)
    else:
        a = np.asarray(x)
        if a.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array, got {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot make an image from shape {a.shape}")
    return np.ascontiguousarray(a)


def save_png(x: torch.Tensor | np.ndarray, path: str | os.PathLike) -> Path:
    """Write one image (tensor (C,H,W)/(H,W) in [-1,1], or uint8 array) as a PNG, atomically."""
    img = Image.fromarray(_as_image_array(x))
    return _write(path, lambda f: img.save(f, format="PNG"))


def save_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2,
              min_side: int = 0) -> Path:
    """Tile a batch (N,C,H,W) in [-1,1] with make_grid and write it as a PNG.

    ``min_side`` > 0 enlarges the grid by the smallest whole nearest-neighbour factor that makes its longer side at
    least that many pixels (a 16 px model's 4×4 grid is 74 px: too small to read)."""
    grid = make_grid(x, nrow=nrow, padding=padding)
    if min_side > 0:
        return save_png(enlarge(to_uint8(grid), integer_scale(grid.shape[1:], min_side)), path)
    return save_png(grid, path)


def _upscale(a: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return a
    return np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def save_gif(
    frames: Sequence[torch.Tensor | np.ndarray],
    path: str | os.PathLike,
    fps: float = 10,
    loop: int | None = 0,
    scale: int = 1,
) -> Path:
    """Write frames (tensors (C,H,W) in [-1,1] or uint8 arrays) as an animated GIF, atomically.

    `scale` enlarges by nearest neighbour so tiny (16×16) frames stay crisp; `loop=0` loops forever, None plays once.
    Pillow merges consecutive identical frames into one longer frame, so n_frames can be less than len(frames).
    """
    if len(frames) == 0:
        raise ValueError("save_gif needs at least one frame")
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a whole number ≥ 1, not {scale}")
    arrays = [_upscale(_as_image_array(f), int(scale)) for f in frames]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"all frames must have the same shape, got {sorted(shapes)}")
    images = [Image.fromarray(a) for a in arrays]
    if images[0].mode == "RGBA":
        images = [im.convert("RGB") for im in images]
    options = {"save_all": True, "append_images": images[1:], "duration": max(1, round(1000 / fps))}
    if loop is not None:
        options["loop"] = loop
    return _write(path, lambda f: images[0].save(f, format="GIF", **options))


def _write(path: str | os.PathLike, write) -> Path:
    from ..core.io.safeio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, write, durable=False)  # a picture is cheap to make again: no fsync
