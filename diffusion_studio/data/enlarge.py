"""Whole-factor nearest-neighbour enlargement, so a small grid (a 16 px model's samples) is readable as a PNG."""
from __future__ import annotations

import math

import numpy as np

MIN_SIDE = 256      # an exported grid's longer side is at least this many pixels


def integer_scale(shape: tuple[int, ...], target: int = MIN_SIDE, most: int = 16) -> int:
    """The smallest whole factor that makes the longer side at least ``target`` (1 when it already is)."""
    return int(max(1, min(most, math.ceil(target / max(1, max(shape[0], shape[1]))))))


def enlarge(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor: every pixel becomes a scale × scale block."""
    if scale == 1:
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(np.repeat(np.repeat(img, scale, axis=0), scale, axis=1))
