"""Reverse samplers that yield a frame per step (DDPM over all or a respaced subset of steps, DDIM with N steps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch

from .reverse import Variance, ddim_step, ddpm_step
from .schedule import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ε_θ(x_t, t) with t a LongTensor (B,) of 0-based indices


@dataclass
class Frame:
    """One step of reverse sampling, cloned so later steps cannot change it.

    ``x`` is the sample at timestep index ``t`` (−1: the finished x_0; T − 1 at the start: pure noise x_T).
    ``x0_pred`` and ``eps_pred`` are the model's predictions, made at index ``t_model``, that produced ``x``
    (None for the starting frame). ``step`` counts finished steps out of ``n_steps``.
    """

    step: int
    n_steps: int
    t: int
    t_model: int | None
    x: torch.Tensor
    x0_pred: torch.Tensor | None
    eps_pred: torch.Tensor | None

    @property
    def is_final(self) -> bool:
        return self.t == -1

    @property
    def paper_t(self) -> int:
        """The paper's t of ``x``: index + 1, so x_0 is 0 and x_T is T."""
        return self.t + 1


def spaced_timesteps(T: int, n: int) -> list[int]:
    """n timestep indices from T − 1 down to 0, evenly spaced, both ends included (no off-by-one at either end)."""
    if not 1 <= n <= T:
        raise ValueError(f"number of steps must be in 1..{T}, got {n}")
    if n == 1:
        return [T - 1]
    ts = torch.linspace(0, T - 1, n, dtype=torch.float64).round().long().tolist()
    return sorted(set(ts), reverse=True)


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
) -> Iterator[Frame]:
    """Algorithm 2 over all T steps, or over ``steps`` evenly spaced ones with the respaced βs; yields Frames."""
    every = max(1, int(every))
    full = steps is None or steps == schedule.T
    ts = list(range(schedule.T - 1, -1, -1)) if full else spaced_timesteps(schedule.T, steps)
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
) -> Iterator[Frame]:
    """DDIM over ``steps`` timesteps from T − 1 to 0, then the jump to x_0; yields Frames."""
    every = max(1, int(every))
    ts = spaced_timesteps(schedule.T, steps)
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


SamplerName = Literal["ddpm", "ddim"]


def sample_frames(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    sampler: SamplerName = "ddim",
    **kw,
) -> Iterator[Frame]:
    """Dispatch by name: ``ddpm`` (kw: steps, variance, clip_x0) or ``ddim`` (kw: steps, eta, clip_x0)."""
    if sampler == "ddpm":
        kw.pop("eta", None)
        return ddpm_sample(model_fn, schedule, shape, **kw)
    if sampler == "ddim":
        kw.pop("variance", None)
        return ddim_sample(model_fn, schedule, shape, **kw)
    raise ValueError(f"unknown sampler {sampler!r}; choose ddpm or ddim")


def sample(model_fn: ModelFn, schedule: NoiseSchedule, shape: tuple[int, ...], sampler: SamplerName = "ddim", **kw) -> torch.Tensor:
    """Run a sampler to the end and return the final x_0 (only the last frame is kept)."""
    kw["every"] = 10**9
    last = None
    for last in sample_frames(model_fn, schedule, shape, sampler, **kw):
        pass
    assert last is not None and last.is_final
    return last.x
