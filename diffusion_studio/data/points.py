"""2-D point sets for the geometry lab: toys by spec, CSV files, standardisation and PointDataset."""
# toy:moons … are built here; CSV files are read by points_csv.py; a model stores the per-axis mean and std.
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.io.space import Standardiser
from .errors import DataError

DEFAULT_N = 2000
MAX_POINTS = 1_000_000          # rows of a CSV and n of a toy: 16 MB of float64 points at most
MAX_BYTES = 64 * 1024 * 1024    # a CSV larger than this is refused before a byte is read
MAX_PROBLEMS = 1000             # problem lines kept for skipped rows; the rest are counted in one summary line
MAX_CLASSES = 10_000
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_WORD = 12                   # toy:text:WORD — longer words make letters too thin to learn at 2,000 points
TEXT_FONT_SIZE = 64             # pixels per em when rendering WORD: letters legible at a few thousand points
TOYS = ("moons", "swissroll", "8gaussians", "checkerboard", "rings", "spiral", "text:WORD")

# toy:8gaussians: FFJORD's layout — 8 modes on a circle of radius 4/√2, each an isotropic Gaussian of σ = 0.5/√2.
EIGHT_GAUSSIANS_RADIUS = 4.0 / math.sqrt(2.0)
EIGHT_GAUSSIANS_SIGMA = 0.5 / math.sqrt(2.0)
EIGHT_GAUSSIANS_CENTRES = np.array(
    [[EIGHT_GAUSSIANS_RADIUS * math.cos(2 * math.pi * k / 8), EIGHT_GAUSSIANS_RADIUS * math.sin(2 * math.pi * k / 8)]
     for k in range(8)], dtype=np.float64)


class PointsError(DataError):
    """A point source refused in one line: ``str(e)`` is "SOURCE: reason"."""

    def __init__(self, source: object, reason: str):
        super().__init__(None, reason, name=printable(str(source)))
        self.source = self.name


def printable(s: str) -> str:
    # repr() escapes newlines, control and bidi characters; keep the text as is when it has none.
    return s if s.isprintable() else repr(s)[1:-1]


def quoted(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


@dataclass
class PointSet:
    """Points (N, 2) float32, optional labels (N,) int64 with class names, and, for a mixture, its centres and σ."""

    points: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    source: str = ""
    centres: np.ndarray | None = None   # (K, 2) float64 mode centres, in the points' units (toy:8gaussians)
    sigma: float | None = None          # each mode's standard deviation per axis

    def __len__(self) -> int:
        return len(self.points)

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return None if self.labels is None or not len(self.labels) else int(self.labels.max()) + 1


# ---- built-in toys --------------------------------------------------------------------------------------------------

def _check_n_seed(source: str, n: Any, seed: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= MAX_POINTS:
        raise PointsError(source, f"n must be an integer in 2..{MAX_POINTS:,}, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PointsError(source, f"seed must be a non-negative integer, got {seed!r}")


def _split(n: int, k: int) -> list[int]:
    """n as k near-equal parts (the first n % k get one more)."""
    return [n // k + (i < n % k) for i in range(k)]


def _labelled(parts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.concatenate(parts)
    labels = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    return pts, labels


def _moons(n: int, rng: np.random.Generator):
    n0, n1 = _split(n, 2)
    a, b = rng.uniform(0, math.pi, n0), rng.uniform(0, math.pi, n1)
    upper = np.stack([np.cos(a), np.sin(a)], 1)
    lower = np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)
    pts, labels = _labelled([upper, lower])
    pts = (pts + rng.normal(0, 0.1, pts.shape)) * 2.0 - np.array([1.0, 0.5])
    return pts, labels, ("upper", "lower")


def _swissroll(n: int, rng: np.random.Generator):
    t = 1.5 * math.pi * (1 + 2 * rng.uniform(0, 1, n))
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) + rng.normal(0, 1.0, (n, 2))
    return pts / 5.0, None, None


def _eight_gaussians(n: int, rng: np.random.Generator):
    labels = rng.integers(0, 8, n)
    pts = EIGHT_GAUSSIANS_CENTRES[labels] + rng.normal(0, EIGHT_GAUSSIANS_SIGMA, (n, 2))
    return pts, labels.astype(np.int64), tuple(f"mode {k}" for k in range(8))


def _checkerboard(n: int, rng: np.random.Generator):
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2.0, None, None


def _rings(n: int, rng: np.random.Generator):
    parts = []
    for radius, m in zip((4.0, 3.0, 2.0, 1.0), _split(n, 4)):
        a = rng.uniform(0, 2 * math.pi, m)
        parts.append(np.stack([radius * np.cos(a), radius * np.sin(a)], 1))
    pts, labels = _labelled(parts)
    return (pts + rng.normal(0, 0.08, pts.shape)) / 3.0, labels, ("r=4", "r=3", "r=2", "r=1")


def _spiral(n: int, rng: np.random.Generator):
    parts = []
    for sign, m in zip((1.0, -1.0), _split(n, 2)):
        s = np.sqrt(rng.uniform(0, 1, m)) * 3 * math.pi  # 1.5 turns; √u spreads points evenly along the arm
        parts.append(sign * np.stack([-np.cos(s) * s, np.sin(s) * s], 1))
    pts, labels = _labelled(parts)
    return pts / 3.0 + rng.normal(0, 0.1, pts.shape), labels, ("arm 0", "arm 1")


_TOYS = {"moons": _moons, "swissroll": _swissroll, "8gaussians": _eight_gaussians, "checkerboard": _checkerboard,
         "rings": _rings, "spiral": _spiral}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size), 1  # Pillow ≥ 10.1 with FreeType: the bundled scalable font
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default(), max(1, size // 11)  # the 11 px bitmap font, scaled up with NEAREST


def text_mask(word: str, size: int = TEXT_FONT_SIZE) -> np.ndarray:
    """Boolean ink mask (rows, cols) of ``word`` rendered with Pillow's built-in font (no file, no download)."""
    from PIL import Image, ImageDraw

    font, scale = _font(size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), word, font=font)
    pad = 2
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), word, fill=255, font=font)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return np.asarray(img) >= 128


def _text(word: str, n: int, rng: np.random.Generator, source: str):
    if not word:
        raise PointsError(source, "empty word; write toy:text:WORD, e.g. toy:text:HELLO")
    if len(word) > MAX_WORD:
        raise PointsError(source, f"word of {len(word)} characters is too long (at most {MAX_WORD})")
    if not word.isprintable():
        raise PointsError(source, "the word has control or invisible characters")
    mask = text_mask(word)
    rows, cols = np.nonzero(mask)
    if not len(rows):
        raise PointsError(source, "the word draws no ink (only spaces?)")
    pick = rng.integers(0, len(rows), n)
    jitter = rng.uniform(0, 1, (n, 2))  # uniform within each ink pixel, so uniform over the ink's area
    x = cols[pick] + jitter[:, 0]
    y = -(rows[pick] + jitter[:, 1])  # image rows grow downwards
    pts = np.stack([x, y], 1)
    centre = np.array([mask.shape[1] / 2.0, -mask.shape[0] / 2.0])
    return (pts - centre) * (4.0 / TEXT_FONT_SIZE), None, None


def make_toy(spec: str, n: int = DEFAULT_N, seed: int = 0) -> PointSet:
    """A built-in 2-D set by spec ("toy:moons", "toy:8gaussians", "toy:text:HELLO", …); deterministic by seed."""
    source = printable(str(spec))
    if not isinstance(spec, str) or not spec.startswith("toy:"):
        raise PointsError(source, f"not a toy spec; write toy:NAME with NAME one of {', '.join(TOYS)}")
    _check_n_seed(source, n, seed)
    name = spec[len("toy:"):]
    rng = np.random.default_rng(int(seed))
    if name.startswith("text:"):
        pts, labels, names = _text(name[len("text:"):], int(n), rng, source)
    elif name in _TOYS:
        pts, labels, names = _TOYS[name](int(n), rng)
    else:
        raise PointsError(source, f"unknown toy {name!r}; choose one of {', '.join(TOYS)}")
    out = PointSet(np.ascontiguousarray(pts, dtype=np.float32), labels, names, spec)
    if name == "8gaussians":
        out.centres, out.sigma = EIGHT_GAUSSIANS_CENTRES.copy(), EIGHT_GAUSSIANS_SIGMA
    return out


class PointDataset:
    """A PointSet as the trainer draws from it: standardised float32 points (N, dim), labels, and what a checkpoint
    records to map samples back to the data's own units (``to_dict``: kind "points", the standardiser)."""

    def __init__(self, points: PointSet, spec: str, standardiser: Standardiser | None = None):
        self.set = points
        self.spec = spec
        self.standardiser = standardiser or Standardiser.fit(points.points)
        self.points = torch.from_numpy(np.asarray(self.standardiser.forward(points.points), dtype=np.float32))
        self.labels = None if points.labels is None else torch.from_numpy(points.labels.astype(np.int64))
        self.class_names = list(points.class_names) if points.class_names else (
            [str(k) for k in range(points.num_classes)] if points.labels is not None else None)
        self.name = spec

    def __len__(self) -> int:
        return len(self.points)

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else len(self.class_names or []) or int(self.labels.max()) + 1

    def batch(self, indices: torch.Tensor, device=None, generator=None, flip: bool = False) -> torch.Tensor:
        x = self.points[indices]
        return x.to(device) if device is not None else x

    def to_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": "points", "spec": self.spec, "n": len(self), "dim": self.dim,
                                "standardiser": self.standardiser.to_dict()}
        if self.set.centres is not None:
            info["centres"] = self.set.centres.tolist()
            info["sigma"] = self.set.sigma
        return info
