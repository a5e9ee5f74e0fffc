"""The exact denoiser of Gaussian data, shared by the tests that need a known-optimal ε_θ.

For x_0 ~ N(μ, s²) per dimension, q(x_t) = N(√ᾱ_t μ, ᾱ_t s² + 1 − ᾱ_t) and the optimal ε-predictor is
E[ε | x_t] = √(1−ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t).
"""
from __future__ import annotations

import numpy as np
import torch

MU, S = 0.3, 0.5


def np_betas(kind: str, T: int) -> np.ndarray:
    """β_1..β_T computed independently of core.schedule (numpy, the papers' formulas)."""
    if kind == "linear":
        return np.linspace(1e-4, 0.02, T)
    s = 0.008
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], 0.999)


def exact_eps(alpha_bars: np.ndarray, mu: float = MU, s: float = S, same_t: bool = False):
    """ε_θ(x_t, t) = E[ε | x_t] for N(mu, s²) data; each row at its own t (``same_t`` asserts one t per batch)."""
    ab_t = torch.tensor(alpha_bars, dtype=torch.float64)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if same_t:
            assert bool((t == t[0]).all())  # the samplers give the whole batch one t
        ab = ab_t[t.cpu()].to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s * s + 1 - ab)

    return fn
