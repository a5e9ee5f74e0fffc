"""The forward (noising) process: the closed form q(x_t | x_0) and the step-by-step chain q(x_t | x_{t−1})."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from .schedule import NoiseSchedule


def q_sample(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: int | torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (the seeds' closed form). t: an int, or a LongTensor (B,) of 0-based indices."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    a = schedule.at("sqrt_alpha_bars", t, x0)
    b = schedule.at("sqrt_one_minus_alpha_bars", t, x0)
    return a * x0 + b * noise


def q_mean_variance(schedule: NoiseSchedule, x0: torch.Tensor, t: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean √ᾱ_t x_0 and variance (1 − ᾱ_t) of q(x_t | x_0)."""
    mean = schedule.at("sqrt_alpha_bars", t, x0) * x0
    var = (1.0 - schedule.at("alpha_bars", t, x0)).expand_as(x0)
    return mean, var


def q_step(
    schedule: NoiseSchedule,
    x_prev: torch.Tensor,
    t: int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One step of the chain, x_t = √α_t x_{t−1} + √(1−α_t) z, from index t − 1 to index t (t = 0 starts at x_0)."""
    if noise is None:
        noise = torch.randn(x_prev.shape, generator=generator, device=x_prev.device, dtype=x_prev.dtype)
    a = float(schedule.sqrt_alphas[t])
    b = float(schedule.betas[t]) ** 0.5
    return a * x_prev + b * noise


def forward_chain(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    t_end: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (t, x_t) for t = 0, 1, ..., t_end by iterating q(x_t | x_{t−1}); each yielded tensor is a fresh one."""
    t_end = schedule.T - 1 if t_end is None else t_end
    x = x0
    for t in range(t_end + 1):
        x = q_step(schedule, x, t, generator=generator)
        yield t, x


def q_sample_chain(
    schedule: NoiseSchedule, x0: torch.Tensor, t: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x_t reached by t + 1 chain steps from x_0: same distribution as ``q_sample`` at t, different noise draws."""
    x = x0
    for _, x in forward_chain(schedule, x0, generator, t_end=t):
        pass
    return x


class ChainCache:
    """The step-by-step chain for one image, with snapshots every ``every`` steps so any t is cheap to revisit.

    Scrubbing back and forth through the chain would otherwise replay up to T steps per slider move; with snapshots
    the cost is at most ``every`` steps. The chain's noise is fixed by ``seed``, so revisiting t gives the same x_t.
    """

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor, seed: int = 0, every: int = 25):
        self.schedule, self.x0, self.seed, self.every = schedule, x0, seed, max(1, every)
        self._snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # t → (x_t, generator state after t)

    def get(self, t: int) -> torch.Tensor:
        if not 0 <= t < self.schedule.T:
            raise ValueError(f"t must be in 0..{self.schedule.T - 1}, got {t}")
        known = [s for s in self._snapshots if s <= t]
        gen = torch.Generator().manual_seed(self.seed)
        if known:
            start = max(known)
            x, state = self._snapshots[start]
            gen.set_state(state)
        else:
            start, x = -1, self.x0
        for s in range(start + 1, t + 1):
            x = q_step(self.schedule, x, s, generator=gen)
            if s % self.every == 0 and s not in self._snapshots:
                self._snapshots[s] = (x, gen.get_state())
        # A copy: x may be a snapshot, and a caller editing it in place (clamping for display) would corrupt the cache.
        return x.clone()


class ForwardScrubber:
    """x_t for one image at any t, straight to displayable uint8 (H, W, C), with ε drawn once per image.

    Keeps 127.5·x_0 and 127.5·ε in channels-last float32 so a slider move is one fused affine,
    u8 = clamp(√ᾱ_t · 127.5x_0 + √(1−ᾱ_t) · 127.5ε + 127.5), with no fresh randn and no transposes.
    The affine runs in numpy, single-threaded, over cache-sized chunks: it does not touch torch's OpenMP pool, whose
    threads would fight a training worker for the cores (a 2-thread torch op on a busy 2-core CPU took 10–100× longer),
    and chunks that stay in L2 made it ~1.8× faster than whole-image passes (bench/bench_scrub.py).
    """

    CHUNK = 65536  # floats per chunk: x_0, ε and two scratch chunks (1 MB) stay in a core's L2 cache

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor, seed: int = 0, noise: torch.Tensor | None = None,
                 display_range: float = 1.0):
        """``display_range`` L: frames map values in [−L, L] to black…white (clipped outside), the same for x_0, ε and
        x_t, so panes drawn from one scrubber share one colour mapping."""
        if x0.ndim != 3:
            raise ValueError("x0 must be (C, H, W)")
        if not (math.isfinite(display_range) and display_range > 0):
            raise ValueError(f"display_range must be a positive number, got {display_range!r}")
        self.display_range = float(display_range)
        self.schedule = schedule
        self.x0 = x0.detach().float()
        if noise is None:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        self.noise = noise.detach().float()
        self._x0_hwc = (self.x0.permute(1, 2, 0) * (127.5 / self.display_range)).cpu().contiguous()
        self._eps_hwc = (self.noise.permute(1, 2, 0) * (127.5 / self.display_range)).cpu().contiguous()
        ab = schedule.alpha_bar_at(torch.arange(-1, schedule.T))  # index −1 (the clean image) included
        self._a = ab.sqrt().tolist()
        self._b = (1.0 - ab).sqrt().tolist()
        self._u8 = torch.empty(self._x0_hwc.shape, dtype=torch.uint8)
        n, k = self._x0_hwc.numel(), self.CHUNK
        x0f, epsf, u8f = self._x0_hwc.numpy().reshape(-1), self._eps_hwc.numpy().reshape(-1), self._u8.numpy().reshape(-1)
        buf, tmp = np.empty(min(n, k), np.float32), np.empty(min(n, k), np.float32)
        self._chunks = [(x0f[i:i + k], epsf[i:i + k], buf[:min(k, n - i)], tmp[:min(k, n - i)], u8f[i:i + k])
                        for i in range(0, n, k)]

    def coefficients(self, t: int) -> tuple[float, float]:
        """(√ᾱ_t, √(1−ᾱ_t)) at index t, where index −1 is the clean image (1, 0)."""
        if not -1 <= t < self.schedule.T:
            raise ValueError(f"t must be in -1..{self.schedule.T - 1}, got {t}")
        return self._a[t + 1], self._b[t + 1]

    def x_t(self, t: int) -> torch.Tensor:
        """x_t as a float tensor (C, H, W) in model units (the same numbers as ``q_sample``)."""
        a, b = self.coefficients(t)
        return a * self.x0 + b * self.noise

    def frame_u8(self, t: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """x_t as uint8 (H, W, C); reuses one buffer, so copy the result if you keep it past the next call."""
        return self._affine_u8(*self.coefficients(t), out)

    def eps_u8(self) -> torch.Tensor:
        """ε on the frames' colour mapping (a fresh tensor): at t = T, where x_T ≈ ε, the two look alike."""
        return self._affine_u8(0.0, 1.0, None).clone()

    def _affine_u8(self, a: float, b: float, out: torch.Tensor | None) -> torch.Tensor:
        for x0, eps, buf, tmp, u8 in self._chunks:
            np.multiply(x0, a, out=buf)
            np.multiply(eps, b, out=tmp)
            np.add(buf, tmp, out=buf)
            np.add(buf, 128.0, out=buf)  # 127.5, plus 0.5 so that the truncating cast below rounds (half up)
            np.clip(buf, 0.0, 255.0, out=buf)
            np.copyto(u8, buf, casting="unsafe")
        if out is None:
            return self._u8
        out.copy_(self._u8)
        return out

    def noise_u8(self) -> torch.Tensor:
        """ε/3 mapped to [0, 255] so ±3σ fills the range (for display_range 1; ``eps_u8`` follows the frames' mapping)."""
        return ((self._eps_hwc * self.display_range / 3.0) + 127.5).clamp(0, 255).round().to(torch.uint8)
