"""Several samplers from one x_T, for the Sampling tab's comparison view: each sampler's final images and the path
its x̂₀ took (one picture per step), at the same budget of model evaluations."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..core.io.models import LoadedModel
from .frames import grid_u8
from .quality import steps_for
from .sampling import SamplingJob, frames

MAX_PATH = 12   # x̂₀ pictures kept per path (evenly over the steps, the last always)


@dataclass(frozen=True)
class CompareRow:
    """One sampler's result: its final images (a grid), the first image's x̂₀ at each kept step (a strip), and the
    steps, model evaluations and seconds it took."""

    sampler: str
    steps: int
    evals: int
    seconds: float
    final: np.ndarray
    path: np.ndarray
    path_steps: list[int]


def _strip(pictures: list[torch.Tensor]) -> np.ndarray:
    """(1, C, H, W) pictures side by side, 2 px apart, as one uint8 image."""
    return grid_u8(torch.cat(pictures), nrow=len(pictures))


def compare_factory(loaded: LoadedModel, base: SamplingJob, samplers: list[str], evals: int, n_images: int = 4):
    """A GeneratorWorker factory: a CompareRow per sampler, every one from the x_T that ``base.seed`` draws, with
    ``evals`` model evaluations each (Heun: the most steps that fit)."""
    def run() -> Iterator[CompareRow]:
        space = loaded.space
        for sampler in samplers:
            steps = min(steps_for(sampler, evals), loaded.schedule.T)
            if sampler == "ddpm":
                steps = max(2, steps)
            job = dataclasses.replace(base, sampler=sampler, steps=steps, n_images=n_images, eta=0.0,
                                      karras=base.karras and sampler not in ("ddpm", "ddim"))
            keep = set(np.linspace(1, steps, min(steps, MAX_PATH)).round().astype(int).tolist())
            path, path_steps, last, t0 = [], [], None, time.perf_counter()
            for f in frames(loaded, job, include_start=False):
                if f.step in keep and f.x0_pred is not None:
                    path.append(space.decode(f.x0_pred[:1]).clamp(-1, 1).cpu())
                    path_steps.append(f.step)
                last = f
            assert last is not None and last.is_final
            images = space.decode(last.x).clamp(-1, 1).cpu()
            yield CompareRow(sampler, steps, job.model_evals, time.perf_counter() - t0, grid_u8(images),
                             _strip(path), path_steps)

    return run
