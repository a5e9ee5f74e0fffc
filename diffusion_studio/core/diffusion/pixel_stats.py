"""Pixel-value histograms of x_0 and x_t against N(0, 1), and whether x_T matches the prior (for the Forward view)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .schedule import NoiseSchedule

HIST_RANGE = (-4.0, 4.0)
HIST_BINS = 64
# ᾱ_T above this leaves more than √0.001 ≈ 3 % of x_0 in x_T: then x_T is visibly not N(0, I).
PRIOR_ALPHA_BAR_LIMIT = 1e-3


def bin_edges(bins: int = HIST_BINS, lo: float = HIST_RANGE[0], hi: float = HIST_RANGE[1]) -> np.ndarray:
    return np.linspace(lo, hi, bins + 1)


MAX_HIST_VALUES = 1 << 16   # a 64-bin density from 65 536 values is within about 1 % of the whole image's


def pixel_sample(x: torch.Tensor | np.ndarray, max_values: int = MAX_HIST_VALUES) -> np.ndarray:
    """x's values as a flat float32 array, every k-th one when there are more than ``max_values`` (a fixed stride,
    so the same pixels are taken from x_0, ε and x_t, and scrubbing t stays cheap at 512²)."""
    v = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    v = v.reshape(-1)
    step = -(-v.size // max_values)
    return np.ascontiguousarray(v[::step] if step > 1 else v, dtype=np.float32)


def pixel_density(x: torch.Tensor | np.ndarray, edges: np.ndarray) -> np.ndarray:
    """A density histogram of the values of x over the uniform ``edges`` (values outside count in no bin but in the
    total, so the area shown is the share inside the range). Bins are [e_i, e_{i+1}), like np.histogram's, found
    by one multiply and a bincount: np.histogram's search over edges took ~40 ms for a 256² RGB image."""
    v = np.asarray(x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32).ravel()
    n = len(edges) - 1
    lo, hi = float(edges[0]), float(edges[-1])
    idx = np.floor((v - np.float32(lo)) * np.float32(n / (hi - lo)))
    idx = idx[(idx >= 0) & (idx < n)].astype(np.intp)
    counts = np.bincount(idx, minlength=n)[:n]
    return counts / max(1, v.size) / np.diff(edges)


def normal_pdf(v: np.ndarray) -> np.ndarray:
    """The N(0, 1) density."""
    v = np.asarray(v, dtype=np.float64)
    return np.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)


def marginal_density(x0: torch.Tensor, alpha_bar: float, v: np.ndarray, max_values: int = 4096) -> np.ndarray:
    """The density of one pixel of x_t over the image: the average over x_0's pixel values x of
    N(v; √ᾱ x, 1 − ᾱ). (What the histogram of x_t tends to as ε is redrawn; exact for every t > 0.)"""
    vals = np.asarray(x0.detach().cpu().float().numpy(), dtype=np.float64).ravel()
    uniq, counts = np.unique(np.round(vals, 4), return_counts=True)  # 8-bit images have at most 256 distinct values
    if uniq.size > max_values:  # bound the work by binning the rare float-valued x_0
        counts, e = np.histogram(vals, bins=max_values)
        uniq = 0.5 * (e[1:] + e[:-1])
    w = counts / counts.sum()
    var = 1.0 - alpha_bar
    if var <= 0:
        raise ValueError("the marginal of x_0 itself is its histogram, not a density")
    d = (np.asarray(v, np.float64)[:, None] - math.sqrt(alpha_bar) * uniq[None, :]) ** 2
    return (np.exp(-0.5 * d / var) / math.sqrt(2 * math.pi * var)) @ w


def prior_mismatch(schedule: NoiseSchedule, limit: float = PRIOR_ALPHA_BAR_LIMIT) -> str | None:
    """A one-line warning when x_T keeps a visible part of x_0 (ᾱ_T above ``limit``), else None."""
    ab = float(schedule.alpha_bars[-1])
    if ab <= limit:
        return None
    return (f"ᾱ_T = {ab:.3g}: x_T keeps √ᾱ_T = {math.sqrt(ab):.0%} of x_0, so x_T does not match the N(0, I) prior "
            f"that sampling starts from (a longer T or larger β fixes it)")
