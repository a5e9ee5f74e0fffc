"""Probability-flow ODE samplers (Euler, Heun, DPM-Solver++(2M), UniPC, Euler-ancestral) matching diffusers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch

from .frame import Frame
from .schedule import NoiseSchedule

__all__ = [
    "SAMPLERS", "SPACINGS", "OdeGrid", "ode_grid", "karras_sigmas", "sigma_to_t", "model_evals", "sample_ode",
    "euler_sample", "heun_sample", "dpmpp_2m_sample", "unipc_sample", "euler_ancestral_sample",
]

# ε_θ(x_t, t): x_t in the model's (VP) scaling; t a (B,) tensor of timestep indices. It is a LongTensor when every
# timestep of the run is a whole number and a float32 tensor otherwise (Karras σs with Euler/Heun, or Euler's
# linspace grid when (T − 1)/(N − 1) is not whole), so the model must accept fractional t (our UNet embeds t.float()).
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SamplerName = Literal["euler", "heun", "dpm++2m", "unipc", "euler_a"]
Spacing = Literal["linspace", "leading", "trailing"]

SAMPLERS: tuple[str, ...] = ("euler", "heun", "dpm++2m", "unipc", "euler_a")
SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing")
# Which diffusers grid a sampler uses: Euler/Heun/Euler-a build N points in σ ("sigma" schedulers), the multistep
# solvers build N + 1 points and drop t = 0, and give Karras σs the whole trained range ("multistep" schedulers).
_MULTISTEP = {"dpm++2m", "unipc"}
KARRAS_RHO = 7.0


# ---- the timestep / σ grid -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class OdeGrid:
    """The points an ODE sampler visits: model timesteps t_0 > … > t_{N−1} and noise levels σ_0 > … > σ_{N−1} > σ_N = 0.

    σ = √((1 − ᾱ)/ᾱ) is the noise-to-signal ratio of x_t; the ODE state is x̃ = x_t/√ᾱ = x_t·√(1 + σ²). ``timesteps[i]``
    is the index given to the model at step i (may be fractional); ``sigmas[i]`` is the σ the solver uses there.
    Both are float64 tensors; σ_N = 0 is the clean image (ᾱ = 1).
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    def __post_init__(self) -> None:
        t = torch.as_tensor(self.timesteps, dtype=torch.float64).flatten()
        s = torch.as_tensor(self.sigmas, dtype=torch.float64).flatten()
        object.__setattr__(self, "timesteps", t)
        object.__setattr__(self, "sigmas", s)
        if len(t) < 1 or len(s) != len(t) + 1:
            raise ValueError(f"need N ≥ 1 timesteps and N + 1 sigmas, got {len(t)} and {len(s)}")
        if float(s[-1]) != 0.0 or not bool((s[:-1] > 0).all()) or not bool((s[1:] < s[:-1]).all()):
            raise ValueError("sigmas must be positive, strictly decreasing and end with 0 (too many steps for T?)")

    @classmethod
    def from_timesteps(cls, schedule: NoiseSchedule, timesteps: Sequence[float] | torch.Tensor) -> "OdeGrid":
        """A grid through the given (decreasing, possibly fractional) timesteps, σ linearly interpolated, then σ = 0."""
        t = np.asarray(torch.as_tensor(timesteps, dtype=torch.float64).flatten().tolist(), dtype=np.float64)
        sig = np.interp(t, np.arange(schedule.T), _sigma_table(schedule))
        return cls(torch.from_numpy(t), torch.from_numpy(np.append(sig, 0.0)))

    @property
    def n_steps(self) -> int:
        return len(self.timesteps)

    @property
    def integral(self) -> bool:
        """True when every model timestep is a whole number (then the model is given a LongTensor)."""
        return bool((self.timesteps == self.timesteps.round()).all())

    @property
    def alpha_bars(self) -> torch.Tensor:
        """ᾱ = 1/(1 + σ²) at every grid point (1 at the end)."""
        return 1.0 / (1.0 + self.sigmas**2)

    def t_values(self) -> list[int] | list[float]:
        """The timesteps as Python ints when they are all whole, floats otherwise (what Frames carry)."""
        return [int(v) for v in self.timesteps.tolist()] if self.integral else self.timesteps.tolist()


def _sigma_table(schedule: NoiseSchedule) -> np.ndarray:
    """σ_i = √((1 − ᾱ_i)/ᾱ_i) for every trained index i, float64, increasing in i."""
    ab = schedule.alpha_bars.to(torch.float64).cpu().numpy()
    return np.sqrt((1.0 - ab) / ab)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = KARRAS_RHO) -> np.ndarray:
    """Karras et al. (2022) eq. 5: σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..n−1 (ρ = 7)."""
    ramp = np.linspace(0.0, 1.0, n)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_to_t(sigmas: np.ndarray, schedule: NoiseSchedule) -> np.ndarray:
    """Fractional timestep of each σ: linear interpolation of log σ between neighbouring trained indices (diffusers'
    ``_sigma_to_t``), clamped to [0, T − 1]."""
    log_table = np.log(_sigma_table(schedule))
    log_s = np.log(np.maximum(np.asarray(sigmas, dtype=np.float64), 1e-10))
    lo = np.clip(np.searchsorted(log_table, log_s, side="right") - 1, 0, len(log_table) - 2)
    w = np.clip((log_s - log_table[lo]) / (log_table[lo + 1] - log_table[lo]), 0.0, 1.0)
    return lo + w


def _spaced(T: int, n: int, spacing: str, multistep: bool) -> np.ndarray:
    """diffusers' timestep grids (steps_offset = 0), decreasing, float64.

    linspace: σ-schedulers take N points of linspace(0, T−1) (float32, not rounded); multistep ones N + 1 points,
    rounded, dropping the last (0). leading: k·⌊T/M⌋ for k < M (M = N, or N + 1 dropping 0). trailing:
    round(T − k·T/N) − 1 for k < N, computed like numpy's arange.
    """
    if spacing == "linspace":
        if not multistep:
            if n == 1:  # diffusers: np.linspace(0, T−1, 1) = [0], a "sample" that starts at σ_min; we start at T − 1
                return np.array([T - 1.0])
            return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].astype(np.float64)
        return np.linspace(0, T - 1, n + 1).round()[::-1][:n].copy()
    if spacing == "leading":
        m = n + 1 if multistep else n
        return (np.arange(m) * (T // m))[::-1][:n].astype(np.float64)
    if spacing == "trailing":  # diffusers' arange can give N + 1 values (e.g. N = 61, T = 1000): keep the first N
        return np.arange(T, 0, -T / n)[:n].round() - 1.0
    raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")


def ode_grid(
    name: SamplerName,
    schedule: NoiseSchedule,
    steps: int,
    *,
    timestep_spacing: Spacing = "linspace",
    karras: bool = False,
) -> OdeGrid:
    """The timesteps and σs sampler ``name`` visits with ``steps`` (num_inference_steps), as diffusers builds them.

    σ-schedulers (euler, heun, euler_a): σ_i = σ(t_i) by linear interpolation in t; with ``karras`` the σs are
    Karras-spaced between σ(t_{N−1}) and σ(t_0) and t_i = sigma_to_t(σ_i) stays fractional. Multistep solvers
    (dpm++2m, unipc): σ_i = σ(t_i) at whole t_i; with ``karras`` the σs span the whole trained range
    [σ(0), σ(T−1)] (the spacing is then irrelevant) and t_i = round(sigma_to_t(σ_i)), so the model sees a whole
    timestep near, not at, the σ the solver uses. Every grid ends with σ_N = 0. steps_offset is diffusers' default 0.
    Differences from diffusers: N = 1 'linspace' for σ-schedulers is t = T − 1 (diffusers: 0), and 'trailing' keeps
    exactly N steps where numpy's arange gives N + 1 (diffusers then adds a step at t = −1).
    """
    _check_name(name)
    T = schedule.T
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in 1..{T}, got {steps!r}")
    multistep = name in _MULTISTEP
    t = _spaced(T, int(steps), timestep_spacing, multistep)
    table = _sigma_table(schedule)
    sig = np.interp(t, np.arange(T), table)
    if karras:
        sigma_min, sigma_max = (table[0], table[-1]) if multistep else (sig[-1], sig[0])
        sig = karras_sigmas(float(sigma_min), float(sigma_max), int(steps))
        t = sigma_to_t(sig, schedule)
        if multistep:
            t = t.round()
    return OdeGrid(torch.from_numpy(t.copy()), torch.from_numpy(np.append(sig, 0.0)))


def model_evals(name: str, steps: int) -> int:
    """How many times sampler ``name`` calls the model for ``steps`` steps: Heun 2N − 1 (no corrector into σ = 0),
    every other sampler N (UniPC's corrector reuses the next step's evaluation)."""
    _check_name(name)
    return 2 * steps - 1 if name == "heun" else steps


def _check_name(name: str) -> None:
    if name not in SAMPLERS:
        raise ValueError(f"unknown ODE sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


# ---- small pieces of the math (scalars in float64, tensors in float32) -----------------------------------------------
def _alpha(sigma: float) -> float:
    """√ᾱ = 1/√(1 + σ²): multiplies x̃ back into the model's scaling, x_t = √ᾱ·x̃."""
    return 1.0 / math.sqrt(1.0 + sigma * sigma)


def _x0_tilde(x_tilde: torch.Tensor, sigma: float, eps: torch.Tensor, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂₀ = x̃ − σ ε; with ``clip`` x̂₀ is clamped to [−1, 1] and ε recomputed as (x̃ − x̂₀)/σ."""
    x0 = x_tilde - sigma * eps
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x_tilde - x0) / sigma
    return x0, eps


def _x0_vp(x: torch.Tensor, sigma: float, eps: torch.Tensor, clip: bool) -> torch.Tensor:
    """x̂₀ = (x_t − √(1−ᾱ) ε)/√ᾱ, clamped to [−1, 1] with ``clip``."""
    a = _alpha(sigma)
    x0 = (x - (sigma * a) * eps) / a
    return x0.clamp(-1.0, 1.0) if clip else x0


def _eps_vp(x: torch.Tensor, sigma: float, x0: torch.Tensor) -> torch.Tensor:
    """The ε that pairs with x̂₀ at x_t: ε = (x_t − √ᾱ x̂₀)/√(1−ᾱ)."""
    a = _alpha(sigma)
    return (x - a * x0) / (sigma * a)


def _lam(sigma: float) -> float:
    """λ = log(α_t/σ_t) = log √(ᾱ/(1−ᾱ)) = −log σ (Lu et al.'s half log-SNR)."""
    return -math.log(sigma)


def _ddim_vp(x: torch.Tensor, sigma: float, sigma_next: float, x0: torch.Tensor) -> torch.Tensor:
    """The exponential-integrator (DDIM) step with data prediction D from σ to σ':
    x_{t'} = (σ_{t'}/σ_t)·x_t − α_{t'}(e^{−h} − 1)·D, h = λ' − λ, i.e. x̃' = (σ'/σ)·x̃ + (1 − σ'/σ)·D."""
    if sigma_next == 0.0:
        return x0.clone()
    c_x = (sigma_next * _alpha(sigma_next)) / (sigma * _alpha(sigma))
    c_d = -_alpha(sigma_next) * math.expm1(-(_lam(sigma_next) - _lam(sigma)))
    return c_x * x + c_d * x0


# ---- the solvers: generators of (x_t after the step, x̂₀ used, ε used) -------------------------------------------
Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
EpsAt = Callable[[torch.Tensor, int], torch.Tensor]  # ε̂(x_t, grid.timesteps[i]) as float32


def _euler(eps_at: EpsAt, grid: OdeGrid, x: torch.Tensor, clip: bool) -> Iterator[Step]:
    """Euler on dx̃/dσ = ε̂: x̃_{i+1} = x̃_i + (σ_{i+1} − σ_i)·ε̂ — DDIM with η = 0 on the same grid."""
    sig = grid.sigmas.tolist()
    xt = x / _alpha(sig[0])
    for i in range(grid.n_steps):
        x0, eps = _x0_tilde(xt, sig[i], eps_at(xt * _alpha(sig[i]), i), clip)
        xt = xt + (sig[i + 1] - sig[i]) * eps
        yield xt * _alpha(sig[i + 1]), x0, eps


def _heun(eps_at: EpsAt, grid: OdeGrid, x: torch.Tensor, clip: bool) -> Iterator[Step]:
    """Heun (Karras et al. Alg. 1): Euler predictor x̃' then x̃_{i+1} = x̃_i + (σ_{i+1} − σ_i)·(ε̂_i + ε̂'_{i+1})/2;
    the last step, into σ = 0, is plain Euler. Yields the averaged ε and x̂₀ = x̃_i − σ_i·ε_avg."""
    sig = grid.sigmas.tolist()
    xt = x / _alpha(sig[0])
    for i in range(grid.n_steps):
        s, s_next = sig[i], sig[i + 1]
        x0, eps = _x0_tilde(xt, s, eps_at(xt * _alpha(s), i), clip)
        if s_next > 0:
            x_pred = xt + (s_next - s) * eps
            _, eps2 = _x0_tilde(x_pred, s_next, eps_at(x_pred * _alpha(s_next), i + 1), clip)
            eps = (eps + eps2) / 2
            x0 = xt - s * eps
        xt = xt + (s_next - s) * eps
        yield xt * _alpha(s_next), x0, eps


def _euler_ancestral(
    eps_at: EpsAt, grid: OdeGrid, x: torch.Tensor, clip: bool, noise: Callable[[int], torch.Tensor]
) -> Iterator[Step]:
    """Euler ancestral: σ_up = √(σ'²(σ² − σ'²)/σ²), σ_down = √(σ'² − σ_up²); x̃' = x̃ + (σ_down − σ)·ε̂ + σ_up·z.
    This is DDIM with η = 1 (σ_up·√ᾱ' is DDIM's σ_t). One z is drawn per step, also the last (σ_up = 0 there)."""
    sig = grid.sigmas.tolist()
    xt = x / _alpha(sig[0])
    for i in range(grid.n_steps):
        s, s_next = sig[i], sig[i + 1]
        x0, eps = _x0_tilde(xt, s, eps_at(xt * _alpha(s), i), clip)
        s_up = math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
        s_down = math.sqrt(s_next**2 - s_up**2)
        xt = xt + (s_down - s) * eps + s_up * noise(i)
        yield xt * _alpha(s_next), x0, eps


def _dpmpp_2m(eps_at: EpsAt, grid: OdeGrid, x: torch.Tensor, clip: bool) -> Iterator[Step]:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): the DDIM step with D = x̂₀_i + (x̂₀_i − x̂₀_{i−1})/(2r),
    r = h_{i−1}/h_i, h = λ_{i+1} − λ_i; first order (D = x̂₀_i) at the first step and into σ = 0."""
    sig = grid.sigmas.tolist()
    prev = None
    for i in range(grid.n_steps):
        s, s_next = sig[i], sig[i + 1]
        x0 = _x0_vp(x, s, eps_at(x, i), clip)
        d = x0
        if prev is not None and s_next > 0:
            r = (_lam(s) - _lam(sig[i - 1])) / (_lam(s_next) - _lam(s))
            d = x0 + (x0 - prev) / (2 * r)
        x_next = _ddim_vp(x, s, s_next, d)
        yield x_next, d, _eps_vp(x, s, d)
        x, prev = x_next, x0


def _unipc_rhos(h: float, r1: float) -> tuple[float, float]:
    """UniC-2 weights for B(h) = e^{−h} − 1 (bh2): solve [[1, 1], [r1, 1]]·ρ = [g1, 2·g2]/B with hh = −h,
    g1 = (e^{hh} − 1)/hh − 1, g2 = g1/hh − 1/2 (Zhao et al. 2023, Alg. for UniC-p)."""
    hh = -h
    b_h = math.expm1(hh)
    g1 = b_h / hh - 1.0
    g2 = g1 / hh - 0.5
    b1, b2 = g1 / b_h, 2.0 * g2 / b_h
    rho0 = (b1 - b2) / (1.0 - r1)
    return rho0, b1 - rho0


def _unipc(eps_at: EpsAt, grid: OdeGrid, x: torch.Tensor, clip: bool) -> Iterator[Step]:
    """UniPC (bh2, order 2; Zhao et al. 2023). Each step i: evaluate x̂₀_i at x_i, correct x_i with UniC (which re-does
    the previous step using x̂₀_i as well), then predict x_{i+1} with UniP-2 (for bh2 identical to DPM-Solver++(2M)).
    Orders warm up (1 at the first step) and drop to 1 for the last step. The frame's x is the predicted x_{i+1};
    its x̂₀/ε are those of the predictor from the corrected x_i."""
    sig, n = grid.sigmas.tolist(), grid.n_steps
    x0s: list[torch.Tensor] = []
    last_x, last_order = x, 0
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        x0 = _x0_vp(x, s, eps_at(x, i), clip)
        if i > 0:
            x = _ddim_vp(last_x, sig[i - 1], s, _unic_x0(x0s, sig, i, x0, last_order))
        order = min(2, n - i, i + 1)
        d = x0
        if order == 2:
            r = (_lam(s) - _lam(sig[i - 1])) / (_lam(s_next) - _lam(s))
            d = x0 + 0.5 * (x0 - x0s[-1]) / r
        x_next = _ddim_vp(x, s, s_next, d)
        yield x_next, d, _eps_vp(x, s, d)
        x0s.append(x0)
        last_x, last_order, x = x, order, x_next


def _unic_x0(x0s: list[torch.Tensor], sig: list[float], i: int, x0_new: torch.Tensor, order: int) -> torch.Tensor:
    """UniC's data prediction for re-doing step i−1 → i: m0 + Σ ρ_k D_k with m0 = x̂₀_{i−1}, D_last = x̂₀_i − m0
    (order 1: ρ = 1/2, the trapezoid rule; order 2 adds D1 = (x̂₀_{i−2} − m0)/r1, r1 = (λ_{i−2} − λ_{i−1})/h)."""
    m0 = x0s[-1]
    if order == 1:
        return m0 + 0.5 * (x0_new - m0)
    h = _lam(sig[i]) - _lam(sig[i - 1])
    r1 = (_lam(sig[i - 2]) - _lam(sig[i - 1])) / h
    rho0, rho1 = _unipc_rhos(h, r1)
    return m0 + rho0 * ((x0s[-2] - m0) / r1) + rho1 * (x0_new - m0)


# ---- driving a sampler and turning its steps into Frames -------------------------------------------------------------
def _eps_caller(model_fn: ModelFn, grid: OdeGrid, batch: int, device: torch.device | str) -> EpsAt:
    dtype = torch.long if grid.integral else torch.float32
    ts = grid.t_values()

    def eps_at(x: torch.Tensor, i: int) -> torch.Tensor:
        return model_fn(x, torch.full((batch,), ts[i], dtype=dtype, device=device)).float()

    return eps_at


def _noise_source(
    x: torch.Tensor, gen: torch.Generator, noises: Sequence[torch.Tensor] | None, n_steps: int
) -> Callable[[int], torch.Tensor]:
    """z for step i: ``noises[i]`` (the last, multiplied by σ_up = 0, may be left out) or a draw from ``gen``."""
    if noises is None:
        return lambda i: torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    if len(noises) < n_steps - 1:
        raise ValueError(f"euler_a needs a noise tensor for each of the first {n_steps - 1} steps, got {len(noises)}")
    return lambda i: noises[i].to(x) if i < len(noises) else torch.zeros_like(x)


def _clone(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().float().clone()


@torch.no_grad()
def _run(steps: Iterator[Step], grid: OdeGrid, x_T: torch.Tensor, every: int, include_start: bool) -> Iterator[Frame]:
    n, ts = grid.n_steps, grid.t_values()
    if include_start:
        yield Frame(0, n, ts[0], None, _clone(x_T), None, None)
    for step, (x, x0, eps) in enumerate(steps, start=1):
        if step == n or step % every == 0:
            yield Frame(step, n, ts[step] if step < n else -1, ts[step - 1], _clone(x), _clone(x0), _clone(eps))


def sample_ode(
    name: SamplerName,
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int | None = None,
    timestep_spacing: Spacing = "linspace",
    karras: bool = False,
    seed: int = 0,
    x_T: torch.Tensor | None = None,
    every: int = 1,
    include_start: bool = False,
    device: str | torch.device = "cpu",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    noises: Sequence[torch.Tensor] | None = None,
    grid: OdeGrid | None = None,
) -> Iterator[Frame]:
    """Run ODE sampler ``name`` (euler, heun, dpm++2m, unipc, euler_a) for ``steps`` steps; yields a Frame per step.

    ``model_fn(x_t, t)`` returns ε̂; t is a LongTensor (B,) when the grid's timesteps are all whole and a float32
    tensor otherwise (Karras σs for euler/heun/euler_a, or Euler's unrounded linspace), so it must accept float t.
    ``steps`` is num_inference_steps; ``timestep_spacing`` and ``karras`` pick diffusers' grid (see ode_grid).

    x_T ~ N(0, I) from ``torch.Generator(device).manual_seed(seed)`` (or the given ``x_T``), exactly as ddim_sample
    draws it, and the ODE starts from x̃ = x_T/√ᾱ_{t_0}. Frames carry x_t in the model's scaling (x_t = √ᾱ·x̃), the x̂₀
    and ε the step used (x_{t'} = √ᾱ'·x̂₀ + √(1−ᾱ')·ε for the deterministic samplers), ``t`` the next grid timestep
    (−1 for the final x₀) and ``t_model`` the step's first model timestep (fractional where the grid is).
    ``grid`` overrides steps/timestep_spacing/karras. euler_a's noise: ``noises[i]`` for step i if given, else
    ``generator`` (also used for x_T when given), else the seeded generator continuing after x_T.
    ``clip_x0`` clamps every x̂₀ to [−1, 1] (diffusers: thresholding with sample_max_value = 1, Heun's clip_sample).
    """
    _check_name(name)
    if grid is None:
        if steps is None:
            raise ValueError("give steps (num_inference_steps) or a grid")
        grid = ode_grid(name, schedule, steps, timestep_spacing=timestep_spacing, karras=karras)
    gen = generator if generator is not None else torch.Generator(device=device).manual_seed(int(seed))
    if x_T is None:
        x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    else:
        x = x_T.to(device=device, dtype=torch.float32).clone()
    eps_at = _eps_caller(model_fn, grid, shape[0], device)
    if name == "euler_a":
        solver = _euler_ancestral(eps_at, grid, x, clip_x0, _noise_source(x, gen, noises, grid.n_steps))
    else:
        solver = {"euler": _euler, "heun": _heun, "dpm++2m": _dpmpp_2m, "unipc": _unipc}[name](eps_at, grid, x, clip_x0)
    return _run(solver, grid, x, max(1, int(every)), include_start)


def euler_sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], **kw) -> Iterator[Frame]:
    """Euler on the probability-flow ODE (diffusers' EulerDiscreteScheduler); kw as for sample_ode."""
    return sample_ode("euler", model_fn, schedule, shape, **kw)


def heun_sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], **kw) -> Iterator[Frame]:
    """Heun's second-order method, 2N − 1 model calls (diffusers' HeunDiscreteScheduler); kw as for sample_ode."""
    return sample_ode("heun", model_fn, schedule, shape, **kw)


def dpmpp_2m_sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], **kw) -> Iterator[Frame]:
    """DPM-Solver++(2M) (diffusers' DPMSolverMultistepScheduler, dpmsolver++, order 2); kw as for sample_ode."""
    return sample_ode("dpm++2m", model_fn, schedule, shape, **kw)


def unipc_sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], **kw) -> Iterator[Frame]:
    """UniPC, bh2, order 2, predictor + corrector (diffusers' UniPCMultistepScheduler); kw as for sample_ode."""
    return sample_ode("unipc", model_fn, schedule, shape, **kw)


def euler_ancestral_sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], **kw) -> Iterator[Frame]:
    """Euler ancestral, i.e. DDIM η = 1 in σ form (diffusers' EulerAncestralDiscreteScheduler); kw as for sample_ode.
    karras=True works (σs as for euler) but diffusers has no such option to check it against."""
    return sample_ode("euler_a", model_fn, schedule, shape, **kw)
