"""Datasets that need no download: scikit-learn's digits and photos, shipped MNIST, and shapes drawn on the spot."""
# MNIST's 5,000 digits are read from resources by mnist5k.py; the shapes are drawn by shapes.py.

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .convert import resize_batch, to_channels
from .dataset import ImageDataset
from .errors import DataError
from .images import _check_channels, _check_size, open_image, to_array
from .shapes import shapes


BUILTIN_DATASETS: dict[str, str] = {
    "digits": "1,797 handwritten digits 0–9 (8×8, grayscale) bundled with scikit-learn",
    "mnist": "5,000 real MNIST handwritten digits 0–9 (28×28, grayscale; 4,500 to train, 500 held out)",
    "shapes": "2,000 coloured circles, squares, triangles, stars and crosses drawn by the app (RGB)",
    "photos": "a handful of sample pictures: scikit-learn's two photos plus a few generated scenes (RGB)",
}

def _sklearn_dir() -> Path | None:
    # find_spec locates the package without importing it: importing scikit-learn costs about a second.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) uint8 in 0..16 and (1797,) labels, exactly what sklearn.datasets.load_digits returns."""
    root = _sklearn_dir()
    csv = root / "datasets" / "data" / "digits.csv.gz" if root else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # layout changed in some scikit-learn release: take the public (slower) route
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError(None, "needs scikit-learn, which is not installed", name="builtin:digits") from None
        bunch = load_digits()
        pixels, labels = bunch.data, bunch.target
    return pixels.reshape(-1, 8, 8).astype(np.uint8), labels.astype(np.int64)


def digits(size: int = 8, channels: int = 1) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits, white ink on black, upscaled from 8×8 to size×size."""
    _check_size(size)
    _check_channels(channels)
    pixels, labels = _digits_raw()
    # 0..16 → 0..255 with rounding, so 16 is pure white.
    u8 = torch.from_numpy((pixels.astype(np.uint16) * 255 + 8) // 16).to(torch.uint8).unsqueeze(1)
    u8 = to_channels(resize_batch(u8, size), channels)
    return ImageDataset(
        u8,
        torch.from_numpy(labels),
        name="digits",
        spec="builtin:digits",
        class_names=[str(d) for d in range(10)],
    )


# --- sample photos ----------------------------------------------------------------------------------------


def _landscape(w: int = 384, h: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = yy / (h - 1)
    sky_top, sky_low = np.array([25, 60, 140.0]), np.array([250, 180, 120.0])
    img = sky_top + (sky_low - sky_top) * t[..., None] ** 0.8
    sx, sy, sr = 0.7 * w, 0.42 * h, 0.08 * h
    dist = np.hypot(xx - sx, yy - sy)
    glow = np.exp(-((dist / (3 * sr)) ** 2))[..., None]
    img = img + (np.array([255, 230, 150.0]) - img) * glow * 0.6
    img[dist < sr] = (255, 240, 190)
    for base, amp, freq, phase, colour in (
        (0.62, 0.07, 2.1, 0.3, (70, 110, 90)),
        (0.75, 0.06, 3.3, 1.7, (40, 100, 50)),
        (0.88, 0.04, 5.0, 4.0, (25, 70, 35)),
    ):
        ridge = h * (base - amp * np.sin(2 * np.pi * freq * xx / w + phase) - 0.5 * amp * np.sin(9 * xx / w))
        shade = 1.0 - 0.25 * (yy - ridge) / h
        hill = np.array(colour, dtype=np.float64) * shade[..., None]
        img = np.where((yy >= ridge)[..., None], hill, img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _gradient(side: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) / (side - 1)
    r = 255 * xx
    g = 255 * yy
    b = 255 * (1 - 0.5 * (xx + yy))
    canvas = Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    s = side
    draw.ellipse((0.12 * s, 0.12 * s, 0.42 * s, 0.42 * s), fill=(250, 250, 250))
    draw.rectangle((0.58 * s, 0.55 * s, 0.86 * s, 0.83 * s), fill=(20, 20, 20))
    draw.polygon([(0.2 * s, 0.85 * s), (0.45 * s, 0.55 * s), (0.5 * s, 0.9 * s)], fill=(240, 200, 30))
    return np.asarray(canvas).copy()


def _checkerboard(side: int = 256, squares: int = 8) -> np.ndarray:
    cell = side // squares
    yy, xx = np.mgrid[0:side, 0:side]
    on = ((yy // cell + xx // cell) % 2).astype(bool)
    img = np.where(on[..., None], np.array([235, 235, 235]), np.array([30, 30, 30]))
    return img.astype(np.uint8)


def _rings(side: int = 256) -> np.ndarray:
    # A zone plate: frequency rises with the radius, so noise visibly drowns the fine rings first.
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    r2 = ((xx - side / 2) ** 2 + (yy - side / 2) ** 2) / (side / 2) ** 2
    wave = 0.5 + 0.5 * np.cos(np.pi * 24 * r2)
    img = np.stack([wave * 230 + 20, wave * 120 + 60, (1 - wave) * 200 + 30], -1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _photos_cached() -> tuple[tuple[str, np.ndarray], ...]:
    found: list[tuple[str, np.ndarray]] = []
    root = _sklearn_dir()
    for stem in ("china", "flower"):
        file = root / "datasets" / "images" / f"{stem}.jpg" if root else None
        if file is not None and file.is_file():
            found.append((stem, np.asarray(open_image(file).convert("RGB"))))
    found += [
        ("landscape", _landscape()),
        ("gradient", _gradient()),
        ("checkerboard", _checkerboard()),
        ("rings", _rings()),
    ]
    for _, arr in found:
        arr.setflags(write=False)
    return tuple(found)


def sample_photos() -> list[tuple[str, np.ndarray]]:
    """[(name, uint8 (H, W, 3))] at full resolution: china and flower from scikit-learn, then generated scenes."""
    return [(name, arr.copy()) for name, arr in _photos_cached()]


def photos(size: int = 64, channels: int = 3) -> ImageDataset:
    """The sample photos as a dataset, centre-cropped and resized to size×size; label i is photo i."""
    _check_size(size)
    _check_channels(channels)
    items = _photos_cached()
    arrays = [to_array(Image.fromarray(arr), size, channels) for _, arr in items]
    u8 = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    names = [name for name, _ in items]
    return ImageDataset(
        u8, torch.arange(len(items)), name="photos", spec="builtin:photos", class_names=names, sources=names
    )


_COUNTS = {"digits": 1797, "mnist": 5000, "shapes": 2000, "photos": 16}  # at most this many images each (photos: fewer)


def _check_fits(name: str, size: int, channels: int | None) -> None:
    """Refuse a size whose images could not fit in this machine's memory, before drawing or resizing any."""
    from ..core.runtime.memory import check_data_fits

    if name not in _COUNTS:
        return
    natural = 1 if name in ("digits", "mnist") else 3
    try:
        check_data_fits(_COUNTS[name], channels or natural, size, f"builtin:{name}")
    except ValueError as e:
        raise DataError(None, str(e).split(": ", 1)[1], name="size") from None


def load_builtin(name: str, size: int, channels: int | None = None, split: str = "train") -> ImageDataset:
    """Dispatch builtin:NAME; channels=None keeps the natural count (digits and MNIST 1, others 3). ``split``
    (train, test, all) applies to MNIST, the one built-in set with held-out images."""
    _check_fits(name, size, channels)
    if name == "digits":
        return digits(size, channels or 1)
    if name == "mnist":
        from .mnist5k import mnist

        return mnist(size, channels or 1, split)
    if name == "shapes":
        return shapes(size, channels or 3)
    if name == "photos":
        return photos(size, channels or 3)
    valid = ", ".join(BUILTIN_DATASETS)
    raise DataError(None, f"unknown built-in dataset {name!r} (choose one of {valid})", name=f"builtin:{name}")
