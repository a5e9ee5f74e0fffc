"""What ε_θ is trained to predict (ε, x₀ or v) and how each t's loss is weighted (uniform, or Min-SNR-γ).

The seeds' objective is L_simple: predict ε, weight every t alike. Two well-measured alternatives converge faster:
predicting v = √ᾱ_t ε − √(1−ᾱ_t) x₀ (Salimans & Ho 2022) and Min-SNR-γ weighting (Hang et al. 2023), which caps
each t's weight at γ in x₀-error units so the easy, low-noise steps stop dominating the gradient. Whatever the network
predicts, the samplers always receive ε: ``to_eps`` converts, exactly, from x_t and the schedule.
"""
from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v")
WEIGHTINGS = ("uniform", "min_snr")


def check(prediction: str, weighting: str, snr_gamma: float) -> None:
    """ValueError naming the field for an unknown target, weighting or a non-positive γ."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction: must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss_weighting: must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if not (isinstance(snr_gamma, (int, float)) and snr_gamma > 0 and snr_gamma < float("inf")):
        raise ValueError(f"snr_gamma: must be a positive number, got {snr_gamma!r}")


def target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, sqrt_alpha_bar: torch.Tensor,
           sqrt_one_minus_alpha_bar: torch.Tensor) -> torch.Tensor:
    """The regression target for x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (coefficients broadcast to x₀'s shape)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return sqrt_alpha_bar * eps - sqrt_one_minus_alpha_bar * x0
    raise ValueError(f"prediction: unknown target {prediction!r}")


def to_eps(prediction: str, out: torch.Tensor, x_t: torch.Tensor, sqrt_alpha_bar: torch.Tensor,
           sqrt_one_minus_alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε implied by the network's output: exact inverse of ``target`` given x_t (so ε-samplers honour any target)."""
    if prediction == "eps":
        return out
    if prediction == "x0":
        return (x_t - sqrt_alpha_bar * out) / sqrt_one_minus_alpha_bar
    if prediction == "v":
        return sqrt_alpha_bar * out + sqrt_one_minus_alpha_bar * x_t
    raise ValueError(f"prediction: unknown target {prediction!r}")


def loss_weights(prediction: str, weighting: str, snr: torch.Tensor, snr_gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weights of the target MSE. Min-SNR-γ makes the loss min(SNR_t, γ)·‖x₀ − x̂₀‖² whatever the target:
    ‖ε − ε̂‖² = SNR·‖x₀ − x̂₀‖² and ‖v − v̂‖² = (SNR + 1)·‖x₀ − x̂₀‖², hence the divisors."""
    if weighting == "uniform":
        return torch.ones_like(snr)
    clipped = torch.clamp(snr, max=snr_gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1.0)
    return clipped


def describe(prediction: str, weighting: str, snr_gamma: float) -> str:
    """'ε, uniform weights (the seeds' L_simple)' or 'v, Min-SNR-5 weights' for summaries and run info."""
    symbol = {"eps": "ε", "x0": "x₀", "v": "v"}.get(prediction, prediction)
    if weighting == "uniform":
        return f"predicts {symbol}, uniform weights" + (" (the seeds' L_simple)" if prediction == "eps" else "")
    return f"predicts {symbol}, Min-SNR-{snr_gamma:g} weights"
