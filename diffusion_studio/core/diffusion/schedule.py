"""Noise schedules: β_t and everything derived from it (α_t, ᾱ_t, β̃_t, SNR, posterior coefficients).

Index convention, used everywhere in Diffusion Studio: arrays have length T and **index i is the paper's t = i + 1**.
So ``betas[0]`` is β_1 and ``alpha_bars[T - 1]`` is ᾱ_T. Where a formula needs ᾱ_0 (the clean image) it is 1, which is
``alpha_bars_prev[0]``. A timestep index of −1 (used by DDIM's last jump) therefore means "the clean image", ᾱ = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

MAX_T = 100_000  # diffusion steps a schedule may have (DDPM uses 1000; improved-diffusion at most 4000)
KINDS = ("linear", "cosine", "sigmoid", "quadratic")
# ᾱ_T at least this keeps every ᾱ_t, 1/√ᾱ_t and the SNR representable in float32 and bf16 (whose smallest normal
# number is 1.2e-38); below it ᾱ_T rounds to 0 and sampling divides by zero or turns every image into the same grey.
MIN_ALPHA_BAR = 1e-30

# Defaults per kind; the seeds' schedule is linear from 1e-4 to 0.02 with T = 1000.
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "quadratic": {"beta_start": 1e-4, "beta_end": 0.02},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "sigmoid_range": 6.0},
    "cosine": {"s": 0.008, "max_beta": 0.999},
    "custom": {},
}


def _check_beta_range(beta_start: float, beta_end: float) -> None:
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value < 1.0):
            raise ValueError(f"{name} must be in the open interval (0, 1), got {value!r}")
    if beta_start > beta_end:
        raise ValueError(f"beta_start ({beta_start}) must not exceed beta_end ({beta_end})")


def _betas_for(kind: str, T: int, params: dict[str, float]) -> torch.Tensor:
    f64 = torch.float64
    if kind == "linear":
        _check_beta_range(params["beta_start"], params["beta_end"])
        # Ho et al.: inclusive ends, no 1000/T rescaling.
        return torch.linspace(params["beta_start"], params["beta_end"], T, dtype=f64)
    if kind == "quadratic":
        _check_beta_range(params["beta_start"], params["beta_end"])
        return torch.linspace(math.sqrt(params["beta_start"]), math.sqrt(params["beta_end"]), T, dtype=f64) ** 2
    if kind == "sigmoid":
        _check_beta_range(params["beta_start"], params["beta_end"])
        r = params["sigmoid_range"]
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"sigmoid_range must be a positive number, got {r!r}")
        x = torch.sigmoid(torch.linspace(-r, r, T, dtype=f64))
        # Rescale so the ends land exactly on beta_start and beta_end.
        x = (x - x[0]) / (x[-1] - x[0])
        return params["beta_start"] + x * (params["beta_end"] - params["beta_start"])
    if kind == "cosine":
        s, max_beta = params["s"], params["max_beta"]
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"s must be a non-negative number, got {s!r}")
        if not (math.isfinite(max_beta) and 0 < max_beta < 1):
            raise ValueError(f"max_beta must be in the open interval (0, 1), got {max_beta!r}")
        # Nichol & Dhariwal 2021: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T)+s)/(1+s)·π/2); β_t = 1 − ᾱ(t)/ᾱ(t−1), clipped.
        steps = torch.arange(T + 1, dtype=f64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
    raise ValueError(f"unknown schedule kind {kind!r}; choose one of {', '.join(KINDS)}")


def _alpha_bar_T(kind: str, T: int, params: dict[str, float]) -> float:
    return float(torch.prod(1.0 - _betas_for(kind, T, params)))


def _too_noisy(kind: str, T: int, params: dict[str, float]) -> str:
    """Why a schedule whose ᾱ_T underflows is refused, and what would work instead."""
    what = f"the {kind} schedule with T={T:,}"
    if kind != "cosine":
        what += f" and β from {params['beta_start']:g} to {params['beta_end']:g}"
    advice = []
    if _alpha_bar_T(kind, 2, params) >= MIN_ALPHA_BAR:
        lo, hi = 2, T  # ᾱ_T falls as T grows: the largest T that still works, by bisection
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _alpha_bar_T(kind, mid, params) >= MIN_ALPHA_BAR else (lo, mid)
        advice.append(f"T ≤ {lo:,} with these β")
    if kind != "cosine" and params["beta_start"] < 0.5:
        lo, hi = params["beta_start"], params["beta_end"]
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _alpha_bar_T(kind, T, {**params, "beta_end": mid}) >= MIN_ALPHA_BAR else (lo, mid)
        if _alpha_bar_T(kind, T, {**params, "beta_end": lo}) >= MIN_ALPHA_BAR:
            advice.append(f"beta_end ≤ {lo:.3g} with T={T:,}")
    hint = "; works: " + " or ".join(advice) if advice else "; use smaller β (the defaults: 1e-4 to 0.02, T=1000)"
    return (f"{what} drives ᾱ_T below {MIN_ALPHA_BAR:g} (the signal is gone beyond what float32 represents, so "
            f"training and sampling would divide by zero or give uniform grey){hint}")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """β_1..β_T and the quantities derived from them, all 1-D float64 tensors of length T (index i ↔ t = i + 1)."""

    kind: str
    T: int
    params: dict[str, float]
    betas: torch.Tensor
    alphas: torch.Tensor = field(init=False)
    alpha_bars: torch.Tensor = field(init=False)
    alpha_bars_prev: torch.Tensor = field(init=False)
    sqrt_alphas: torch.Tensor = field(init=False)
    sqrt_alpha_bars: torch.Tensor = field(init=False)
    sqrt_one_minus_alpha_bars: torch.Tensor = field(init=False)
    sqrt_recip_alphas: torch.Tensor = field(init=False)
    sqrt_recip_alpha_bars: torch.Tensor = field(init=False)
    sqrt_recipm1_alpha_bars: torch.Tensor = field(init=False)
    posterior_variance: torch.Tensor = field(init=False)
    posterior_log_variance_clipped: torch.Tensor = field(init=False)
    posterior_mean_coef1: torch.Tensor = field(init=False)
    posterior_mean_coef2: torch.Tensor = field(init=False)
    snr: torch.Tensor = field(init=False)
    log_snr: torch.Tensor = field(init=False)
    timestep_map: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        b = self.betas
        if b.ndim != 1 or b.dtype != torch.float64:
            raise ValueError("betas must be a 1-D float64 tensor")
        if len(b) < 2:
            raise ValueError(f"T must be at least 2, got {len(b)}")
        if not bool(torch.isfinite(b).all()) or bool((b <= 0).any()) or bool((b >= 1).any()):
            raise ValueError("every beta must be in the open interval (0, 1)")
        if len(b) > MAX_T:
            raise ValueError(f"T must be at most {MAX_T:,}, got {len(b):,}")
        set_ = object.__setattr__
        alphas = 1.0 - b
        alpha_bars = torch.cumprod(alphas, 0)
        if not float(alpha_bars[-1]) >= MIN_ALPHA_BAR:
            raise ValueError(f"ᾱ_T = {float(alpha_bars[-1]):.3g} is below {MIN_ALPHA_BAR:g}: the βs together destroy "
                             f"the signal beyond what float32 can represent; use fewer steps or smaller βs")
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=b.dtype), alpha_bars[:-1]])  # ᾱ_0 = 1
        set_(self, "alphas", alphas)
        set_(self, "alpha_bars", alpha_bars)
        set_(self, "alpha_bars_prev", alpha_bars_prev)
        set_(self, "sqrt_alphas", alphas.sqrt())
        set_(self, "sqrt_alpha_bars", alpha_bars.sqrt())
        set_(self, "sqrt_one_minus_alpha_bars", (1.0 - alpha_bars).sqrt())
        set_(self, "sqrt_recip_alphas", (1.0 / alphas).sqrt())
        set_(self, "sqrt_recip_alpha_bars", (1.0 / alpha_bars).sqrt())
        set_(self, "sqrt_recipm1_alpha_bars", (1.0 / alpha_bars - 1.0).sqrt())
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); β̃_1 = 0.
        post_var = b * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
        set_(self, "posterior_variance", post_var)
        # log β̃ with β̃_1 = 0 replaced by β̃_2, as improved-diffusion does, so it stays finite.
        set_(self, "posterior_log_variance_clipped", torch.log(torch.cat([post_var[1:2], post_var[1:]])))
        set_(self, "posterior_mean_coef1", b * alpha_bars_prev.sqrt() / (1.0 - alpha_bars))
        set_(self, "posterior_mean_coef2", (1.0 - alpha_bars_prev) * alphas.sqrt() / (1.0 - alpha_bars))
        snr = alpha_bars / (1.0 - alpha_bars)
        set_(self, "snr", snr)
        set_(self, "log_snr", torch.log(snr))
        if "timestep_map" not in self.__dict__:
            set_(self, "timestep_map", torch.arange(len(b)))

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str = "linear", T: int = 1000, **params: float) -> "NoiseSchedule":
        """Build a schedule by name: ``linear`` (the seeds'), ``cosine``, ``sigmoid`` or ``quadratic``, for any T ≥ 2."""
        if kind not in KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}; choose one of {', '.join(KINDS)}")
        if isinstance(T, bool) or not isinstance(T, int):
            raise ValueError(f"T must be an integer, got {T!r}")
        if T < 2:
            raise ValueError(f"T must be at least 2, got {T}")
        if T > MAX_T:
            raise ValueError(f"T must be at most {MAX_T:,}, got {T:,}")
        defaults = DEFAULT_PARAMS[kind]
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(f"unknown parameter(s) for the {kind} schedule: {', '.join(sorted(unknown))}")
        full = {k: float(params.get(k, v)) for k, v in defaults.items()}
        betas = _betas_for(kind, T, full)
        if not float(torch.prod(1.0 - betas)) >= MIN_ALPHA_BAR:
            raise ValueError(_too_noisy(kind, T, full))
        return cls(kind=kind, T=T, params=full, betas=betas)

    @classmethod
    def from_betas(cls, betas: Sequence[float] | torch.Tensor, kind: str = "custom") -> "NoiseSchedule":
        b = torch.as_tensor(betas, dtype=torch.float64).flatten().clone()
        return cls(kind=kind, T=len(b), params={}, betas=b)

    def respace(self, timesteps: Sequence[int] | torch.Tensor) -> "NoiseSchedule":
        """A shorter schedule over a subset of timesteps with the same ᾱ there (improved-diffusion's respacing).

        β'_k = 1 − ᾱ_{τ_k} / ᾱ_{τ_{k−1}}; ``timestep_map[k]`` is the original index τ_k that the model must be given.
        """
        ts = sorted({int(t) for t in torch.as_tensor(timesteps).flatten().tolist()})
        if not ts or ts[0] < 0 or ts[-1] >= self.T:
            raise ValueError(f"timesteps must lie in 0..{self.T - 1}")
        if len(ts) < 2:
            raise ValueError("respacing needs at least 2 timesteps")
        ab = self.alpha_bars[ts]
        prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        new = NoiseSchedule(kind=f"{self.kind}-respaced", T=len(ts), params=dict(self.params), betas=1.0 - ab / prev)
        object.__setattr__(new, "timestep_map", torch.as_tensor(ts, dtype=torch.long))
        return new

    # ---- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        if self.kind in KINDS:
            return {"kind": self.kind, "T": self.T, "params": dict(self.params)}
        return {"kind": "custom", "T": self.T, "betas": self.betas.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseSchedule":
        if not isinstance(d, dict):
            raise ValueError("schedule must be a JSON object")
        kind = d.get("kind")
        if kind == "custom":
            return cls.from_betas(d.get("betas", []))
        return cls.create(kind, int(d.get("T", 1000)), **dict(d.get("params", {})))

    def describe(self) -> str:
        p = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.kind} (T={self.T}{', ' + p if p else ''})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NoiseSchedule)
            and self.T == other.T
            and torch.equal(self.betas, other.betas)
            and torch.equal(self.timestep_map, other.timestep_map)
        )

    __hash__ = None  # type: ignore[assignment]

    # ---- helpers for batched formulas ---------------------------------------------------------------------------
    def at(self, name: str, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The attribute ``name`` at index t, shaped to broadcast against ``like`` (B, ...) and in its dtype/device.

        t may be an int (same for the whole batch) or a LongTensor of shape (B,). Index −1 is the clean image:
        it is only meaningful for ᾱ-type quantities, where ``alpha_bar_at`` handles it.
        """
        arr = getattr(self, name)
        if isinstance(t, int):
            return arr[t].to(device=like.device, dtype=like.dtype)
        t = torch.as_tensor(t)
        vals = arr.to(like.device)[t.to(like.device).long()].to(like.dtype)
        return vals.reshape(vals.shape + (1,) * (like.ndim - vals.ndim))

    def sqrt_alpha_bar_pair(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ, √(1−ᾱ)) at timesteps t (B,), shaped to broadcast against ``like``. A fractional t (an ODE sampler's
        Karras grid) takes σ = √((1−ᾱ)/ᾱ) interpolated linearly between trained indices, as those grids are built."""
        if not torch.is_floating_point(t) or bool((t == t.round()).all()):
            ti = t.round().long()
            return self.at("sqrt_alpha_bars", ti, like), self.at("sqrt_one_minus_alpha_bars", ti, like)
        sig = ((1.0 - self.alpha_bars) / self.alpha_bars).sqrt().to(t.device)
        tc = t.double().clamp(0, self.T - 1)
        i0 = tc.floor().long().clamp(max=self.T - 2)
        s = sig[i0] + (tc - i0) * (sig[i0 + 1] - sig[i0])
        a = (1.0 / (1.0 + s * s)).sqrt()
        shape = a.shape + (1,) * (like.ndim - a.ndim)
        return a.to(like.dtype).reshape(shape), (s * a).to(like.dtype).reshape(shape)

    def alpha_bar_at(self, t: int | torch.Tensor) -> torch.Tensor:
        """ᾱ at index t, with index −1 meaning ᾱ = 1 (the clean image)."""
        padded = torch.cat([torch.ones(1, dtype=self.alpha_bars.dtype), self.alpha_bars])
        return padded[torch.as_tensor(t) + 1]
