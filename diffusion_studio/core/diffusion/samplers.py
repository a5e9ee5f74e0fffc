"""Reverse samplers that yield a Frame per step: DDPM (all or respaced steps), DDIM, and the ODE solvers (ode.py)."""
from __future__ import annotations

from typing import Callable, Iterator, Literal

import numpy as np

import torch

from . import ode
from .frame import Frame
from .reverse import Variance, ddim_step, ddpm_step
from .schedule import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ε_θ(x_t, t) with t a LongTensor (B,) of 0-based indices


SPACINGS = ("linspace", "leading", "trailing")


def spaced_timesteps(T: int, n: int, spacing: str = "linspace") -> list[int]:
    """n timestep indices from high to low, as diffusers' timestep_spacing names them (steps_offset 0):

    linspace — T − 1 down to 0 evenly, both ends included, rounded (no off-by-one at either end; the default);
    leading — k·⌊T/n⌋ for k = n − 1 … 0: ends at 0 and starts at (n − 1)·⌊T/n⌋, below T − 1;
    trailing — round(T − k·T/n) − 1 for k = 0 … n − 1 (starts at T − 1, ends near T/n − 1).
    """
    if not 1 <= n <= T:
        raise ValueError(f"number of steps must be in 1..{T}, got {n}")
    if spacing == "linspace":
        if n == 1:
            return [T - 1]
        ts = torch.linspace(0, T - 1, n, dtype=torch.float64).round().long().tolist()
        return sorted(set(ts), reverse=True)
    if spacing == "leading":
        return [k * (T // n) for k in range(n - 1, -1, -1)]
    if spacing == "trailing":  # numpy's arange, as diffusers computes it; it can give n + 1 values: keep n
        return [int(v) - 1 for v in np.arange(T, 0, -T / n).round()[:n]]
    raise ValueError(f"timestep_spacing: must be one of {', '.join(SPACINGS)}, got {spacing!r}")


def _start(shape, device, seed, x_T, dtype=torch.float32):
    gen = torch.Generator(device=device).manual_seed(int(seed))
    x = torch.randn(shape, generator=gen, device=device, dtype=dtype) if x_T is None else x_T.to(device, dtype).clone()
    return gen, x


def _want(step: int, n: int, every: int) -> bool:
    return step == n or step % every == 0


def _clone(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().float().clone()


# no_grad, not inference_mode: tensors made under inference_mode stay "inference tensors" forever, and a consumer that
# edits a frame in place (clamp_, mul_) outside it would get a RuntimeError.
@torch.no_grad()
def ddpm_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int | None = None,
    variance: Variance = "beta_tilde",
    clip_x0: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    every: int = 1,
    include_start: bool = False,
    x_T: torch.Tensor | None = None,
    timestep_spacing: str = "linspace",
) -> Iterator[Frame]:
    """Algorithm 2 over all T steps, or over ``steps`` spaced ones (``timestep_spacing``) with the respaced βs."""
    every = max(1, int(every))
    full = steps is None or steps == schedule.T
    ts = list(range(schedule.T - 1, -1, -1)) if full else spaced_timesteps(schedule.T, steps, timestep_spacing)
    if len(ts) == 1:
        # One step, x_T → x_0: the respaced β' = 1 − ᾱ_T with ᾱ'_prev = 1 makes the mean x̂_0 and adds no noise, which
        # is exactly DDIM's one-step jump (a one-step NoiseSchedule cannot be built: T ≥ 2).
        yield from ddim_sample(model_fn, schedule, shape, steps=1, clip_x0=clip_x0, seed=seed, device=device,
                               every=every, include_start=include_start, x_T=x_T)
        return
    sched = schedule if full else schedule.respace(ts)
    tmap = sched.timestep_map.tolist()
    n = sched.T
    gen, x = _start(shape, device, seed, x_T)
    if include_start:
        yield Frame(0, n, tmap[-1], None, _clone(x), None, None)
    for step, k in enumerate(range(n - 1, -1, -1), start=1):
        t_model = tmap[k]
        eps = model_fn(x, torch.full((shape[0],), t_model, device=device, dtype=torch.long)).float()
        res = ddpm_step(sched, x, k, eps, variance=variance, clip_x0=clip_x0, generator=gen)
        x = res.x_prev
        if _want(step, n, every):
            t_now = tmap[k - 1] if k > 0 else -1
            yield Frame(step, n, t_now, t_model, _clone(x), _clone(res.x0_pred), _clone(eps))


@torch.no_grad()
def ddim_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int = 50,
    eta: float = 0.0,
    clip_x0: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    every: int = 1,
    include_start: bool = False,
    x_T: torch.Tensor | None = None,
    timestep_spacing: str = "linspace",
) -> Iterator[Frame]:
    """DDIM over ``steps`` timesteps (``timestep_spacing``), each step to the next one, then the jump to x_0 (ᾱ = 1).

    diffusers' DDIMScheduler (set_alpha_to_one) steps t → t − ⌊T/N⌋ whatever the spacing: the same steps as these
    for 'leading', and for 'trailing' when N divides T."""
    every = max(1, int(every))
    ts = spaced_timesteps(schedule.T, steps, timestep_spacing)
    n = len(ts)
    gen, x = _start(shape, device, seed, x_T)
    if include_start:
        yield Frame(0, n, ts[0], None, _clone(x), None, None)
    for step, t in enumerate(ts, start=1):
        t_prev = ts[step] if step < n else -1
        eps = model_fn(x, torch.full((shape[0],), t, device=device, dtype=torch.long)).float()
        res = ddim_step(schedule, x, t, t_prev, eps, eta=eta, clip_x0=clip_x0, generator=gen)
        x = res.x_prev
        if _want(step, n, every):
            yield Frame(step, n, t_prev, t, _clone(x), _clone(res.x0_pred), _clone(eps))


SAMPLERS = ("ddpm", "ddim", *ode.SAMPLERS)
SamplerName = Literal["ddpm", "ddim", "euler", "heun", "dpm++2m", "unipc", "euler_a"]


def sample_frames(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    sampler: SamplerName = "ddim",
    **kw,
) -> Iterator[Frame]:
    """Dispatch by name: ``ddpm`` (kw: steps, variance, clip_x0, timestep_spacing), ``ddim`` (kw: steps, eta, clip_x0,
    timestep_spacing) or an ODE solver of ode.py (kw: steps, timestep_spacing, karras, clip_x0). Options a sampler
    does not take are dropped when left at their defaults and refused otherwise."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    eta, variance, karras = kw.pop("eta", 0.0), kw.pop("variance", "beta_tilde"), kw.pop("karras", False)
    if karras and sampler in ("ddpm", "ddim"):
        raise ValueError(f"karras: Karras σ spacing is for the ODE samplers ({', '.join(ode.SAMPLERS)}), not {sampler}")
    if sampler == "ddpm":
        return ddpm_sample(model_fn, schedule, shape, variance=variance, **kw)
    if sampler == "ddim":
        return ddim_sample(model_fn, schedule, shape, eta=eta, **kw)
    if eta:
        raise ValueError(f"eta: only DDIM takes η (euler_a is the ancestral, η = 1 form), not {sampler}")
    return ode.sample_ode(sampler, model_fn, schedule, shape, karras=karras, **kw)


def model_evals(sampler: str, steps: int) -> int:
    """How many times ``sampler`` calls ε_θ for ``steps`` (num_inference_steps): N, but Heun 2N − 1."""
    return steps if sampler in ("ddpm", "ddim") else ode.model_evals(sampler, steps)


def sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], sampler: SamplerName = "ddim", **kw) -> torch.Tensor:
    """Run a sampler to the end and return the final x_0 (only the last frame is kept)."""
    kw["every"] = 10**9
    last = None
    for last in sample_frames(model_fn, schedule, shape, sampler, **kw):
        pass
    assert last is not None and last.is_final
    return last.x
