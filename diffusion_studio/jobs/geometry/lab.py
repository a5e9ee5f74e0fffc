"""The geometry lab's work, Qt-free (run in the 2-D tab's workers): the forward-noised cloud at t, the field that
moves the points (learned, ideal, their difference), particle paths under each sampler from one x_T, the grid that
the deterministic map x_T → x_0 warps, sample densities, and how far the samples are from the data.

Everything here works in the model's standardised coordinates; the tab maps to the data's own units to draw.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ...core.diffusion.eps import model_fn
from ...core.diffusion.ideal import IdealDenoiser
from ...core.diffusion.samplers import sample_frames
from ...core.diffusion.schedule import NoiseSchedule
from ...core.metrics.points import data_floor, energy_distance, mode_shares, sliced_wasserstein
from ...core.nets.mlp import MLPConfig
from ...core.train.config import TrainConfig
from ...core.train.recipe import POINTS_RECIPE
from ...core.train.trainer import Trainer

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PATH_SAMPLERS = ("ddpm", "ddim", "heun", "dpm++2m")


# ---- the forward process on the whole cloud -----------------------------------------------------------------------
def noised(points: torch.Tensor, schedule: NoiseSchedule, paper_t: int, seed: int = 0) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for every point, one fixed ε per point (seeded); paper_t 0 is the data."""
    if paper_t <= 0:
        return points.clone()
    i = min(int(paper_t), schedule.T) - 1
    eps = torch.randn(points.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = points.double()
    return (schedule.sqrt_alpha_bars[i] * x + schedule.sqrt_one_minus_alpha_bars[i] * eps).float()


# ---- ε-models: the network, the ideal denoiser ------------------------------------------------------------------
def network_eps(model, schedule: NoiseSchedule, label: int | None = None, guidance: float = 1.0) -> EpsFn:
    """The trained MLP as the samplers' ε (class ``label`` with guidance w for a class model)."""
    if label is None or not model.config.num_classes:
        return model_fn(model, "cpu", "fp32", schedule=schedule)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = torch.full((len(x),), int(label), dtype=torch.long)
        return model_fn(model, "cpu", "fp32", condition=y, guidance=guidance, schedule=schedule)(x, t)

    return guided


def ideal_eps(points: torch.Tensor, schedule: NoiseSchedule, labels: torch.Tensor | None = None,
              label: int | None = None) -> EpsFn:
    """The ideal denoiser of the training points as an ε-model (restricted to class ``label`` when given)."""
    den = IdealDenoiser(points, schedule, labels=labels if label is not None else None)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = None if label is None else torch.full((len(x),), int(label), dtype=torch.long)
        return den(x, t, y)

    return fn


# ---- the field -------------------------------------------------------------------------------------------------------
def grid(bounds: tuple[float, float, float, float], n: int = 21) -> torch.Tensor:
    """n×n points (standardised units) evenly over (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = bounds
    xs, ys = torch.linspace(x0, x1, n), torch.linspace(y0, y1, n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


@torch.no_grad()
def field(eps: EpsFn, schedule: NoiseSchedule, paper_t: int, at: torch.Tensor, kind: str = "score") -> torch.Tensor:
    """The vectors at points ``at`` (x_t, standardised) for time t: the score ∇log p_t = −ε̂/√(1−ᾱ_t) ("score"),
    or the step towards the predicted clean point x̂₀ − x_t ("x0")."""
    i = max(1, min(int(paper_t), schedule.T)) - 1
    t = torch.full((len(at),), i, dtype=torch.long)
    e = eps(at.float(), t).double()
    if kind == "score":
        return (-e / schedule.sqrt_one_minus_alpha_bars[i]).float()
    x0 = (at.double() - schedule.sqrt_one_minus_alpha_bars[i] * e) / schedule.sqrt_alpha_bars[i]
    return (x0 - at.double()).float()


# ---- paths -----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def paths(eps: EpsFn, schedule: NoiseSchedule, x_T: torch.Tensor, sampler: str, steps: int,
          seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """(positions (frames, N, 2), the paper's t of each frame) from x_T to x_0 under ``sampler`` with ``steps``
    steps (DDPM: all T steps when steps ≥ T); every sampler starts from the same given x_T."""
    kw = {"steps": None if sampler == "ddpm" and steps >= schedule.T else steps, "seed": seed}
    out, ts = [x_T.detach().float().numpy().copy()], [schedule.T]
    for f in sample_frames(eps, schedule, tuple(x_T.shape), sampler, x_T=x_T, every=1, **kw):
        out.append(f.x.numpy())
        ts.append(int(round(f.t)) + 1)
    return np.stack(out), ts


@torch.no_grad()
def warped_grid(eps: EpsFn, schedule: NoiseSchedule, bounds: tuple[float, float, float, float], lines: int = 9,
                per_line: int = 40, steps: int = 30) -> np.ndarray:
    """A grid of lines in x_T space (standardised), each point carried to x_0 by the deterministic sampler (DDIM,
    η = 0: the probability-flow ODE): (lines · 2, per_line, 2) — rows then columns."""
    x0, x1, y0, y1 = bounds
    u = torch.linspace(0, 1, per_line)
    rows = [torch.stack([x0 + (x1 - x0) * u, torch.full_like(u, y0 + (y1 - y0) * k / (lines - 1))], 1)
            for k in range(lines)]
    cols = [torch.stack([torch.full_like(u, x0 + (x1 - x0) * k / (lines - 1)), y0 + (y1 - y0) * u], 1)
            for k in range(lines)]
    start = torch.cat(rows + cols)
    *_, last = sample_frames(eps, schedule, tuple(start.shape), "ddim", steps=steps, x_T=start, every=10**9)
    return last.x.numpy().reshape(2 * lines, per_line, 2)


def density(points: np.ndarray, bounds: tuple[float, float, float, float], bins: int = 64) -> np.ndarray:
    """A smoothed 2-D histogram (bins × bins, rows = y), normalised to a maximum of 1, for contour lines."""
    x0, x1, y0, y1 = bounds
    h, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=bins, range=[[y0, y1], [x0, x1]])
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64)
    k /= k.sum()
    for axis in (0, 1):
        h = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), axis, h)
    return h / max(h.max(), 1e-12)


# ---- how good the samples are ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quality:
    n: int
    energy: float
    energy_floor: float
    sliced_w: float
    sliced_w_floor: float
    in_modes: float | None = None      # share within 3σ of a mode (toy:8gaussians' σ)
    in_modes_2: float | None = None    # within 2σ: the 3σ discs of neighbouring modes nearly touch there
    modes_present: int | None = None
    modes: int | None = None

    def describe(self) -> str:
        text = (f"energy distance {self.energy:.4f} (data vs data: {self.energy_floor:.4f}) · sliced W "
                f"{self.sliced_w:.3f} (floor {self.sliced_w_floor:.3f}), {self.n:,} points each")
        if self.in_modes is not None:
            text += (f" · {100 * self.in_modes:.1f} % within 3σ of a mode ({100 * self.in_modes_2:.1f} % within "
                     f"2σ), {self.modes_present}/{self.modes} modes")
        return text


def quality(samples: np.ndarray, data: np.ndarray, centres: np.ndarray | None = None,
            sigma: float | None = None) -> Quality:
    """Distances of the samples to the data (in the data's units) beside the floor of two disjoint draws of the data
    of the same size (the distances' own bias depends on n, so both use the same n)."""
    n = int(min(len(samples), len(data) // 2, 2000))
    rng = np.random.default_rng(1)
    ref = data[rng.permutation(len(data))[:n]]
    q = dict(n=n, energy=energy_distance(samples[:n], ref), energy_floor=data_floor(data, n, seed=0),
             sliced_w=sliced_wasserstein(samples[:n], ref),
             sliced_w_floor=data_floor(data, n, seed=0, metric=sliced_wasserstein))
    if centres is not None and sigma:
        shares = mode_shares(samples, centres, sigma, k=3)
        q.update(in_modes=shares.in_mode, in_modes_2=mode_shares(samples, centres, sigma, k=2).in_mode,
                 modes_present=int(sum(s >= 1 / (4 * len(centres)) for s in shares.shares)), modes=len(centres))
    return Quality(**q)


# ---- training in the tab ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSnapshot:
    """The EMA model's field over the view's grid at one step of training (standardised units)."""

    step: int
    at: np.ndarray
    vectors: np.ndarray


def train_points(dataset, schedule: NoiseSchedule, steps: int | None = None, seed: int = 0, class_conditional=False,
                 field_t: Callable[[], int] | None = None, field_at: torch.Tensor | None = None,
                 every_s: float = 0.4) -> Iterator:
    """Yield the Trainer's TrainEvents for a 2-D run with the recipe, and a FieldSnapshot of the EMA model's field
    at most every ``every_s`` seconds (at the t ``field_t()`` says, over ``field_at``); returns the trainer."""
    r = POINTS_RECIPE
    cfg = TrainConfig(steps=steps or r["steps"], batch_size=min(r["batch"], len(dataset)), lr=r["lr"],
                      warmup_steps=r["warmup"], lr_schedule=r["lr_schedule"], ema_decay=r["ema_decay"],
                      loss_weighting=r["loss_weighting"], seed=seed, device="cpu", precision="fp32",
                      class_conditional=class_conditional and dataset.labels is not None, log_every=10)
    mc = MLPConfig(num_classes=dataset.num_classes if cfg.class_conditional else None, preset="mlp")
    trainer = Trainer(mc, schedule, dataset, cfg, data_info=dataset.to_dict())
    last = 0.0
    for ev in trainer.run():
        yield ev
        now = time.perf_counter()
        if field_at is not None and (now - last >= every_s or ev.done):
            last = now
            eps = network_eps(trainer.ema, schedule)
            t = field_t() if field_t is not None else schedule.T // 10
            yield FieldSnapshot(ev.step, field_at.numpy(), field(eps, schedule, t, field_at).numpy())
    return trainer
