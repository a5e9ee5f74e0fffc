"""Sample quality for point sets: energy distance, sliced Wasserstein, share of points per mode, and the data's own floor."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

CHUNK_BYTES = 64 * 1024 * 1024


def _points(x: Any, name: str) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) < 1:
        raise ValueError(f"{name} must be points of shape (N, D) with N ≥ 1, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of ‖a_i − b_j‖ over all pairs (i, j), in float64, in row chunks of bounded memory."""
    rows = max(1, CHUNK_BYTES // (8 * len(b) * (a.shape[1] + 1)))
    total = 0.0
    for i in range(0, len(a), rows):
        diff = a[i:i + rows, None, :] - b[None, :, :]
        total += float(np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)).sum())
    return total / (len(a) * len(b))


def energy_distance(a: Any, b: Any) -> float:
    """Székely's energy distance 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ (in the data's units), as a V-statistic.

    V-statistic: the within-set means include the i = j pairs, so the value is ≥ 0 and exactly 0 for identical sets;
    for two finite samples of one distribution it is positive, of order 1/n — compare with ``data_floor``.
    """
    x, y = _points(a, "a"), _points(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must have the same number of coordinates, got {x.shape[1]} and {y.shape[1]}")
    value = 2.0 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)
    return max(value, 0.0)  # rounding can leave −1e−16 where the sets coincide


def _wasserstein_1d(u: np.ndarray, v: np.ndarray, p: float) -> float:
    """W_p^p between two 1-D empirical distributions (any sizes): ∫₀¹ |F⁻¹(q) − G⁻¹(q)|^p dq, exactly."""
    u, v = np.sort(u), np.sort(v)
    if len(u) == len(v):
        return float(np.mean(np.abs(u - v) ** p))
    qs = np.union1d(np.arange(1, len(u) + 1) / len(u), np.arange(1, len(v) + 1) / len(v))
    widths = np.diff(np.concatenate([[0.0], qs]))
    mid = qs - widths / 2  # the quantile functions are constant on each (q_{k−1}, q_k]
    iu = np.minimum((mid * len(u)).astype(np.int64), len(u) - 1)
    iv = np.minimum((mid * len(v)).astype(np.int64), len(v) - 1)
    return float(np.sum(widths * np.abs(u[iu] - v[iv]) ** p))


def sliced_wasserstein(a: Any, b: Any, n_projections: int = 128, seed: int = 0, p: float = 2.0) -> float:
    """SW_p = (mean over directions θ of W_p^p(θ·a, θ·b))^(1/p), in the data's units.

    In 2-D the directions are n equally spaced angles over [0, π) with a random offset from ``seed`` (low variance:
    a shift by d gives d·(E|cos φ|^p)^(1/p), e.g. d/√2 for p = 2 and 2d/π for p = 1); in more dimensions they are
    random unit vectors.
    """
    x, y = _points(a, "a"), _points(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must have the same number of coordinates, got {x.shape[1]} and {y.shape[1]}")
    if isinstance(n_projections, bool) or not isinstance(n_projections, (int, np.integer)) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    if not (isinstance(p, (int, float)) and p >= 1):
        raise ValueError(f"p must be at least 1, got {p!r}")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    if d == 2:
        angles = (rng.uniform() + np.arange(n_projections)) * math.pi / n_projections
        dirs = np.stack([np.cos(angles), np.sin(angles)], 1)
    else:
        dirs = rng.normal(size=(n_projections, d))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    px, py = x @ dirs.T, y @ dirs.T
    total = sum(_wasserstein_1d(px[:, k], py[:, k], p) for k in range(n_projections))
    return (total / n_projections) ** (1.0 / p)


@dataclass
class ModeShares:
    """Share of all points within kσ of each centre (a point counts for its nearest centre), and off every mode."""

    shares: np.ndarray     # (K,) fractions of all points
    off_mode: float        # fraction within kσ of no centre
    k: float

    @property
    def in_mode(self) -> float:
        return 1.0 - self.off_mode

    def present(self, min_share: float | None = None) -> np.ndarray:
        """Which modes hold at least ``min_share`` of the points (default: a quarter of an even share, 1/(4K))."""
        if min_share is None:
            min_share = 0.25 / len(self.shares)
        return self.shares >= min_share

    @property
    def all_present(self) -> bool:
        return bool(self.present().all())

    def describe(self) -> str:
        return (f"{self.in_mode:.1%} within {self.k:g}σ of a mode, {int(self.present().sum())}/{len(self.shares)} "
                f"modes present (smallest share {self.shares.min():.1%})")


def mode_shares(points: Any, centres: Any, sigma: float, k: float = 3.0) -> ModeShares:
    """Shares of points within k·sigma (Euclidean) of each centre, and the share off all modes.

    For an isotropic 2-D Gaussian the mass within kσ is 1 − exp(−k²/2): 98.9 % at k = 3, not the 1-D 99.7 %.
    """
    x, c = _points(points, "points"), _points(centres, "centres")
    if x.shape[1] != c.shape[1]:
        raise ValueError("points and centres must have the same number of coordinates")
    if not (isinstance(sigma, (int, float, np.floating)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if not (isinstance(k, (int, float)) and k > 0):
        raise ValueError(f"k must be positive, got {k!r}")
    d2 = np.stack([((x - ci) ** 2).sum(1) for ci in c], 1)  # (N, K) without an (N, K, D) temporary
    nearest = d2.argmin(1)
    inside = d2[np.arange(len(x)), nearest] <= (k * sigma) ** 2
    shares = np.bincount(nearest[inside], minlength=len(c)) / len(x)
    return ModeShares(shares=shares, off_mode=float(1.0 - inside.mean()), k=float(k))


def data_floor(data: Any, n: int, seed: int = 0, metric: Callable[[np.ndarray, np.ndarray], float] = energy_distance,
               **kwargs: Any) -> float:
    """``metric`` between two disjoint random draws of n points from ``data``: what a perfect model of n samples scores.

    Needs 2n ≤ len(data); compare a model's n samples against n data points with the same metric.
    """
    x = _points(data, "data")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if 2 * n > len(x):
        raise ValueError(f"two disjoint draws of {n} points need {2 * n} points; the data has {len(x)}")
    perm = np.random.default_rng(seed).permutation(len(x))
    return float(metric(x[perm[:n]], x[perm[n:2 * n]], **kwargs))
