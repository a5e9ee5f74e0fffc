"""Per-step numbers of a reverse-sampling run (for the run curves): how far x̂_0 moved, ε_θ's spread, the step's σ."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .schedule import NoiseSchedule


def step_sigma(schedule: NoiseSchedule, t: int, t_prev: int, sampler: str, variance: str = "beta_tilde",
               eta: float = 0.0) -> float:
    """σ of the step from index t to t_prev (−1: the clean image) as the samplers take it.

    A step that skips timesteps is a step of the respaced schedule: β' = 1 − ᾱ_t/ᾱ_prev and β̃' = β'(1−ᾱ_prev)/(1−ᾱ_t)
    (for consecutive steps these are β_t and β̃_t). DDPM draws with σ² = β̃' or β' and no noise at its last step
    (Algorithm 2's z = 0 at t = 1); DDIM's σ² = η² β̃' (0 at the jump to x_0, where ᾱ_prev = 1).
    """
    ab_t = float(schedule.alpha_bar_at(round(t)))  # an ODE grid's fractional t: the nearest trained index
    ab_prev = float(schedule.alpha_bar_at(round(t_prev)))
    beta = 1.0 - ab_t / ab_prev
    beta_tilde = beta * (1.0 - ab_prev) / (1.0 - ab_t)
    if sampler == "ddpm":
        if t_prev < 0:
            return 0.0
        return math.sqrt(beta_tilde if variance == "beta_tilde" else beta)
    if sampler == "ddim":
        return float(eta) * math.sqrt(max(beta_tilde, 0.0))
    if sampler == "euler_a":  # the ancestral step is DDIM with η = 1
        return math.sqrt(max(beta_tilde, 0.0))
    if sampler in ("euler", "heun", "dpm++2m", "unipc"):
        return 0.0  # the probability-flow ODE adds no noise
    raise ValueError(f"unknown sampler {sampler!r}")


@dataclass(frozen=True)
class StepStats:
    """One reverse step: ε_θ ran at index ``t_model`` and produced x at index ``t`` (−1: the finished sample)."""

    step: int
    t_model: int
    t: int
    x0_change: float      # RMS per pixel of x̂_0 minus the previous step's x̂_0 (NaN at the first step)
    eps_std: float        # standard deviation of the predicted ε over all pixels of the batch
    sigma: float          # σ of the noise this step added

    @property
    def paper_t(self) -> int:
        """The paper's t at which ε_θ ran (index + 1)."""
        return self.t_model + 1


class RunStats:
    """Feed it the sampler's Frames in order (every step, starting frame included or not); ``update`` returns the
    step's StepStats, or None for a frame without a prediction (the starting noise)."""

    def __init__(self, schedule: NoiseSchedule, sampler: str, variance: str = "beta_tilde", eta: float = 0.0):
        self.schedule, self.sampler, self.variance, self.eta = schedule, sampler, variance, eta
        self._prev_x0: torch.Tensor | None = None
        self.history: list[StepStats] = []

    def update(self, frame) -> StepStats | None:
        if frame.t_model is None or frame.x0_pred is None or frame.eps_pred is None:
            return None
        x0 = frame.x0_pred.detach().float()
        if self._prev_x0 is None or self._prev_x0.shape != x0.shape:
            change = math.nan
        else:
            change = float((x0 - self._prev_x0).pow(2).mean().sqrt())
        self._prev_x0 = x0
        t_model, t = round(frame.t_model), round(frame.t)  # an ODE grid's t may be fractional
        stats = StepStats(step=frame.step, t_model=t_model, t=t, x0_change=change,
                          eps_std=float(frame.eps_pred.detach().float().std()),
                          sigma=step_sigma(self.schedule, t_model, t, self.sampler, self.variance, self.eta))
        self.history.append(stats)
        return stats
