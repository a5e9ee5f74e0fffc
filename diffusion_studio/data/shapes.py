"""builtin:shapes: coloured shapes drawn on the spot, with captions saying what each picture shows."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from .convert import to_channels
from .dataset import ImageDataset
from .errors import DataError
from .images import _check_channels, _check_size

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

# Bright inks and plain backgrounds; only pairs whose luma differs enough are used, so every shape stands out.
INKS = (
    (230, 40, 40), (245, 140, 20), (245, 220, 40), (50, 190, 70), (40, 200, 220),
    (50, 90, 230), (150, 60, 210), (240, 100, 180), (245, 245, 245),
)
_BACKGROUNDS = ((10, 10, 10), (20, 25, 60), (55, 55, 55), (20, 50, 30), (240, 235, 220), (200, 200, 200))
_MIN_LUMA_GAP = 80.0


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


_COLOUR_PAIRS = tuple(
    (ink, bg) for ink in INKS for bg in _BACKGROUNDS if abs(_luma(ink) - _luma(bg)) >= _MIN_LUMA_GAP
)
COLOUR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white")  # INKS order


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        radii, count = [r], 4
    elif kind == "triangle":
        radii, count = [r], 3
    elif kind == "star":
        radii, count = [r, 0.45 * r], 10
    else:  # cross: a plus sign; arms 0.32 r wide, traced as 12 corners
        w = 0.32 * r
        pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
               (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    out = []
    for k in range(count):
        a = angle + 2 * math.pi * k / count
        rad = radii[k % len(radii)]
        out.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return out


def shapes(size: int = 32, channels: int = 3, n: int = 2000, seed: int = 0) -> ImageDataset:
    """n RGB images, each one filled shape (see SHAPE_CLASSES) on a plain background; same seed, same images.

    Drawn at 4× (2× above 64 px) and box-downscaled, which anti-aliases the edges.
    """
    _check_size(size)
    _check_channels(channels)
    if n < 1:
        raise DataError(None, f"must be at least 1, not {n}", name="n")
    rng = np.random.default_rng(seed)
    k = len(SHAPE_CLASSES)
    labels = np.arange(n) % k  # balanced classes, then shuffled
    rng.shuffle(labels)
    pairs = rng.integers(0, len(_COLOUR_PAIRS), n)
    ss = 4 if size <= 64 else 2
    big = size * ss
    radius = rng.uniform(0.22, 0.42, n) * big
    cx = rng.uniform(0.0, 1.0, n)
    cy = rng.uniform(0.0, 1.0, n)
    angle = rng.uniform(0.0, 2 * math.pi, n)

    out = np.empty((n, size, size, 3), dtype=np.uint8)
    centres = np.empty((n, 2))
    for i in range(n):
        ink, bg = _COLOUR_PAIRS[pairs[i]]
        r = radius[i]
        # Keep the whole shape inside the frame: the centre is drawn from [r, big - r].
        x = r + cx[i] * (big - 2 * r)
        y = r + cy[i] * (big - 2 * r)
        centres[i] = (x / big, y / big)
        canvas = Image.new("RGB", (big, big), bg)
        draw = ImageDraw.Draw(canvas)
        kind = SHAPE_CLASSES[labels[i]]
        if kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
        else:
            draw.polygon(_polygon(kind, x, y, r, angle[i]), fill=ink)
        out[i] = np.asarray(canvas.reduce(ss))
    u8 = to_channels(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), channels)
    ds = ImageDataset(
        u8,
        torch.from_numpy(labels.astype(np.int64)),
        name="shapes" if seed == 0 else f"shapes (seed {seed})",
        spec="builtin:shapes",
        class_names=list(SHAPE_CLASSES),
    )
    # captions say what was drawn: ink, shape, size, place, background
    inks = [INKS.index(_COLOUR_PAIRS[p][0]) for p in pairs]
    dark = [_luma(_COLOUR_PAIRS[p][1]) < 128 for p in pairs]
    ds.captions = shape_captions(labels, inks, radius / big, centres, dark, seed)
    return ds


# ---- captions -----------------------------------------------------------------------------------------------------
def _position(x: float, y: float) -> str:
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) < 0.1:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


_PLACE = {"centre": "in the centre", "left": "on the left", "right": "on the right", "top": "at the top",
          "bottom": "at the bottom"}


def shape_caption(colour: str, shape: str, size: str, position: str, background: str, form: int) -> str:
    """One of six phrasings; every one names the colour and the shape."""
    place, a = _PLACE[position], article(colour)
    return (
        f"{a} {colour} {shape}",
        f"a {size} {colour} {shape}",
        f"{a} {colour} {shape} {place}",
        f"a {size} {colour} {shape} {place}",
        f"{size} {colour} {shape}, {background} background",
        f"{a} {colour} {shape} on a {background} background",
    )[form]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def shape_captions(labels, inks, radius_frac, centres, dark, seed: int = 0) -> list[str]:
    """Captions of builtin:shapes images from their drawing parameters (radius as a fraction of the side,
    centres (x, y) in [0, 1], dark background or not). A third are the plain "a {colour} {shape}"."""
    rng = np.random.default_rng(10_000 + seed)
    forms = rng.choice(6, size=len(labels), p=[0.35, 0.13, 0.13, 0.13, 0.13, 0.13])
    out = []
    for i, label in enumerate(labels):
        size = "small" if radius_frac[i] < 0.32 else "large"
        out.append(shape_caption(COLOUR_NAMES[inks[i]], SHAPE_CLASSES[int(label)], size,
                                 _position(*centres[i]), "dark" if dark[i] else "light", int(forms[i])))
    return out
