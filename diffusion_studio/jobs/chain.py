"""Building the step-by-step forward chain off the GUI thread (for the Forward panel's "chain" mode).

Reaching t = T by q(x_t | x_{t−1}) takes T steps; at 256 px that is seconds on a CPU, so a GeneratorWorker walks the
whole chain once, leaving ``core.forward.ChainCache`` snapshots behind, and hands the cache to the GUI thread, which
from then on reaches any t in at most ``every`` steps. The GUI thread never touches the cache while it is built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
import torch

from ..core.diffusion.forward import ChainCache
from ..core.diffusion.schedule import NoiseSchedule
from ..data import to_uint8

SNAPSHOT_BUDGET_BYTES = 48 * 2**20   # memory the snapshots of one chain may take
MIN_EVERY, MAX_EVERY = 5, 50


def snapshot_every(x0: torch.Tensor, T: int) -> int:
    """Snapshot spacing: as dense as the memory budget allows (scrubbing cost ∝ spacing), within 5..50 steps."""
    per_snapshot = x0.numel() * x0.element_size()
    return max(MIN_EVERY, min(MAX_EVERY, math.ceil(T * per_snapshot / SNAPSHOT_BUDGET_BYTES)))


@dataclass
class ChainProgress:
    done: int          # chain steps taken so far
    total: int         # T


@dataclass
class BuiltChain:
    """A finished chain: the cache (now owned by the GUI thread) and the filmstrip frames read on the way."""

    key: object
    cache: ChainCache
    film: dict[int, np.ndarray]      # paper t ≥ 1 → uint8 frame of the chain's x_t


def build_chain(key, schedule: NoiseSchedule, x0: torch.Tensor, seed: int, film_paper_ts: list[int],
                cancel: Callable[[], bool]) -> Generator[ChainProgress, None, BuiltChain | None]:
    """Walk the chain from x_0 to x_T through ChainCache, yielding progress at every snapshot."""
    every = snapshot_every(x0, schedule.T)
    cache = ChainCache(schedule, x0.clone(), seed=seed, every=every)
    film_idx = {p - 1 for p in film_paper_ts if p >= 1}
    # Visit the snapshot indices in order (each continues from the previous one) and the filmstrip's t on the way.
    targets = sorted(set(range(0, schedule.T, every)) | film_idx | {schedule.T - 1})
    film: dict[int, np.ndarray] = {}
    for t in targets:
        if cancel():
            return None
        x = cache.get(t)
        if t in film_idx:
            film[t + 1] = to_uint8(x)
        yield ChainProgress(t + 1, schedule.T)
    return BuiltChain(key, cache, film)
