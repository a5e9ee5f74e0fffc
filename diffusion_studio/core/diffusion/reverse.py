"""One reverse step: the posterior q(x_{t−1} | x_t, x_0), DDPM's Algorithm 2 step and DDIM's step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .schedule import NoiseSchedule

Variance = Literal["beta_tilde", "beta"]


@dataclass
class StepResult:
    """What one reverse step produced: x_{t−1}, the predicted x̂_0, and the Gaussian it was drawn from."""

    x_prev: torch.Tensor
    x0_pred: torch.Tensor
    mean: torch.Tensor
    variance: torch.Tensor  # per-sample σ_t², shaped to broadcast against x_t


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: int | torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t, written as √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε."""
    return schedule.at("sqrt_recip_alpha_bars", t, x_t) * x_t - schedule.at("sqrt_recipm1_alpha_bars", t, x_t) * eps


def predict_eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: int | torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1−ᾱ_t)."""
    return (schedule.at("sqrt_recip_alpha_bars", t, x_t) * x_t - x0) / schedule.at("sqrt_recipm1_alpha_bars", t, x_t)


def q_posterior(
    schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean μ̃_t and variance β̃_t of q(x_{t−1} | x_t, x_0).

    μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) · x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) · x_t.
    """
    mean = schedule.at("posterior_mean_coef1", t, x_t) * x0 + schedule.at("posterior_mean_coef2", t, x_t) * x_t
    var = schedule.at("posterior_variance", t, x_t)
    return mean, var


def posterior_mean_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: int | torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """μ̃_t = (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε) — the seeds' second form (the denominator is √(1−ᾱ_t), not √(1−α_t))."""
    coef = schedule.at("betas", t, x_t) / schedule.at("sqrt_one_minus_alpha_bars", t, x_t)
    return schedule.at("sqrt_recip_alphas", t, x_t) * (x_t - coef * eps)


def _is_last(t: int | torch.Tensor) -> torch.Tensor | bool:
    return t == 0 if isinstance(t, int) else (torch.as_tensor(t) == 0)


def _draw(like: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if noise is not None:
        return noise
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    eps: torch.Tensor,
    noise: torch.Tensor | None = None,
    variance: Variance = "beta_tilde",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
) -> StepResult:
    """Algorithm 2's step: x_{t−1} = (1/√α_t)(x_t − (1−α_t)/√(1−ᾱ_t) ε_θ) + σ_t z, with z = 0 at the last step (t index 0).

    ``variance`` picks σ_t² = β̃_t ("beta_tilde") or β_t ("beta"). With ``clip_x0`` the mean is taken from the
    posterior with x̂_0 clamped to [−1, 1] (improved-diffusion's choice); without it, from the ε form, exactly Algorithm 2.
    """
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")
    x0_pred = predict_x0_from_eps(schedule, x_t, t, eps)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        mean, _ = q_posterior(schedule, x0_pred, x_t, t)
    else:
        mean = posterior_mean_from_eps(schedule, x_t, t, eps)
    var = schedule.at("posterior_variance" if variance == "beta_tilde" else "betas", t, x_t)
    last = _is_last(t)
    if isinstance(last, bool):
        if last:
            return StepResult(mean, x0_pred, mean, torch.zeros_like(var))
        x_prev = mean + var.sqrt() * _draw(x_t, noise, generator)
        return StepResult(x_prev, x0_pred, mean, var)
    mask = (~last).to(x_t.dtype).reshape(var.shape)
    var = var * mask
    x_prev = mean + var.sqrt() * _draw(x_t, noise, generator)
    return StepResult(x_prev, x0_pred, mean, var)


def ddim_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: int,
    t_prev: int,
    eps: torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
) -> StepResult:
    """Song et al.'s DDIM step from index t to t_prev < t (t_prev = −1 means the clean image, ᾱ = 1).

    x_{prev} = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε + σ z,  σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev).
    η = 0 is deterministic; η = 1 with consecutive steps equals DDPM with σ_t² = β̃_t.
    """
    if not -1 <= t_prev < t < schedule.T:
        raise ValueError(f"t and t_prev must satisfy -1 <= t_prev < t <= {schedule.T - 1}, got t={t}, t_prev={t_prev}")
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    ab_t = float(schedule.alpha_bar_at(t))
    ab_prev = float(schedule.alpha_bar_at(t_prev))
    x0_pred = predict_x0_from_eps(schedule, x_t, t, eps)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        eps = predict_eps_from_x0(schedule, x_t, t, x0_pred)
    sigma2 = eta**2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    mean = ab_prev**0.5 * x0_pred + max(1 - ab_prev - sigma2, 0.0) ** 0.5 * eps
    var = torch.full((x_t.shape[0],) + (1,) * (x_t.ndim - 1), sigma2, dtype=x_t.dtype, device=x_t.device)
    if sigma2 > 0:
        x_prev = mean + sigma2**0.5 * _draw(x_t, noise, generator)
    else:
        x_prev = mean
    return StepResult(x_prev, x0_pred, mean, var)
