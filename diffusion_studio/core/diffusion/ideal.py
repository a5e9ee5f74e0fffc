"""The ideal denoiser of a finite training set: E[x0 | x_t] as a softmax over the data, an ε-model that memorises."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

CHUNK_BYTES = 64 * 1024 * 1024  # float64 working memory per chunk of the data


def _alpha_bars(schedule: Any) -> torch.Tensor:
    ab = torch.as_tensor(schedule.alpha_bars).to(torch.float64).reshape(-1)
    if len(ab) < 1 or not bool(((ab > 0) & (ab < 1)).all()):
        raise ValueError("schedule.alpha_bars must lie in the open interval (0, 1)")
    return ab


def _alpha_bar_rows(t: Any, batch: int, alpha_bars: torch.Tensor) -> torch.Tensor:
    """ᾱ at each row's timestep (B,) float64: the table at whole indices; at a fractional t (an ODE sampler's Karras
    grid) σ = √((1−ᾱ)/ᾱ) interpolated linearly between indices, as those grids are built."""
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"expected t of shape ({batch},), got {tuple(t.shape)}")
    t = t.detach().cpu().double()
    T = len(alpha_bars)
    if batch and not bool(((t >= 0) & (t <= T - 1)).all()):
        raise ValueError(f"t must be timestep indices in 0..{T - 1}")
    if bool((t == t.round()).all()):
        return alpha_bars[t.long()]
    sig = ((1.0 - alpha_bars) / alpha_bars).sqrt()
    i0 = t.floor().long().clamp(max=T - 2)
    s = sig[i0] + (t - i0) * (sig[i0 + 1] - sig[i0])
    return 1.0 / (1.0 + s * s)


def score(eps: torch.Tensor, schedule: Any, t: Any) -> torch.Tensor:
    """∇ log p_t(x_t) = −ε̂ / √(1 − ᾱ_t), with t a (B,) tensor of indices (or one int), in eps's dtype."""
    ab = _alpha_bar_rows(t, eps.shape[0], _alpha_bars(schedule))
    s = (1.0 - ab).sqrt().to(device=eps.device)
    return (-eps.to(torch.float64) / s.reshape((-1,) + (1,) * (eps.ndim - 1))).to(eps.dtype)


class IdealDenoiser:
    """E[x0 | x_t] = Σ_i w_i x_i, w = softmax_i(−‖x_t − √ᾱ_t x_i‖² / 2(1 − ᾱ_t)), and ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t).

    Callable like an ε-model: ``denoiser(x, t, y=None)``. ``data`` is (N, ...) (points or images, flattened inside);
    with ``labels`` (N,) the denoiser is class-conditional: row b uses only the points of class y[b], and
    y[b] == num_classes (the null class, as the networks) or y=None uses them all. Float64 throughout, streamed over
    the data in chunks of at most ``chunk_bytes`` with a running log-sum-exp, so memory stays bounded.
    """

    def __init__(self, data: Any, schedule: Any, labels: Any = None, num_classes: int | None = None,
                 chunk_bytes: int = CHUNK_BYTES):
        x = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
        x = x.detach().to("cpu", torch.float64)
        if x.ndim < 2 or len(x) < 1:
            raise ValueError(f"data must be (N, ...) with N ≥ 1, got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("data must be finite")
        self.shape = tuple(x.shape[1:])
        self.schedule = schedule
        self.alpha_bars = _alpha_bars(schedule)
        self.chunk_bytes = int(chunk_bytes)
        flat = x.reshape(len(x), -1)
        self.num_classes = None
        self._ranges: list[tuple[int, int]] = []
        if labels is not None:
            lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).cpu()
            if lab.shape != (len(flat),) or lab.is_floating_point() or (len(lab) and int(lab.min()) < 0):
                raise ValueError(f"labels must be ({len(flat)},) non-negative integers")
            k = int(lab.max()) + 1 if num_classes is None else int(num_classes)
            if int(lab.max()) >= k:
                raise ValueError(f"labels go up to {int(lab.max())} but num_classes is {k}")
            order = torch.argsort(lab, stable=True)  # each class a contiguous slice of the data
            flat, lab = flat[order], lab.long()[order]
            counts = torch.bincount(lab, minlength=k).tolist()
            starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
            self._ranges = [(int(starts[c]), int(starts[c + 1])) for c in range(k)]
            self.num_classes = k
            self.labels = lab
        else:
            self.labels = None
        self.data = flat  # (N, D) float64, sorted by class when labelled

    def __len__(self) -> int:
        return len(self.data)

    def __call__(self, x: torch.Tensor, t: Any, y: Any = None) -> torch.Tensor:
        return self.eps(x, t, y)

    def eps(self, x: torch.Tensor, t: Any, y: Any = None) -> torch.Tensor:
        """ε̂(x_t, t) = (x_t − √ᾱ_t x̂0) / √(1 − ᾱ_t), in x's dtype and device."""
        x64, ab, x0 = self._x0(x, t, y)
        ab = ab.reshape(-1, 1)
        eps = (x64 - ab.sqrt() * x0) / (1.0 - ab).sqrt()
        return eps.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def x0_hat(self, x: torch.Tensor, t: Any, y: Any = None) -> torch.Tensor:
        """E[x0 | x_t] under the empirical data distribution, in x's dtype and device."""
        _, _, x0 = self._x0(x, t, y)
        return x0.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    # ---- the computation ------------------------------------------------------------------------------------------
    def _x0(self, x: torch.Tensor, t: Any, y: Any):
        x = torch.as_tensor(x)
        b = x.shape[0] if x.ndim else 0
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.data.shape[1]:
            raise ValueError(f"expected x of shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        x64 = x.detach().to("cpu", torch.float64).reshape(b, -1)
        ab = _alpha_bar_rows(t, b, self.alpha_bars)
        groups = self._groups(ab, y, b)
        x0 = torch.empty_like(x64)
        for (abi, ci), rows in groups.items():
            lo, hi = (0, len(self.data)) if ci is None else self._ranges[ci]
            if hi <= lo:
                raise ValueError(f"class {ci} has no training points")
            x0[rows] = self._posterior_mean(x64[rows], abi, self.data[lo:hi])
        return x64, ab, x0

    def _groups(self, ab: torch.Tensor, y: Any, b: int) -> dict[tuple[float, int | None], torch.Tensor]:
        if y is None:
            cls = [None] * b
        else:
            if self.num_classes is None:
                raise ValueError("this ideal denoiser has no labels; pass y=None")
            yy = torch.as_tensor(y).cpu()
            if yy.ndim == 0:
                yy = yy.expand(b)
            if yy.shape != (b,) or yy.is_floating_point() or bool(((yy < 0) | (yy > self.num_classes)).any()):
                raise ValueError(f"y must be ({b},) integer labels in 0..{self.num_classes} "
                                 f"({self.num_classes} = ∅, all the data)")
            cls = [None if c == self.num_classes else c for c in yy.tolist()]
        groups: dict[tuple[float, int | None], list[int]] = {}
        for row, key in enumerate(zip(ab.tolist(), cls)):
            groups.setdefault(key, []).append(row)
        return {k: torch.as_tensor(v, dtype=torch.long) for k, v in groups.items()}

    def _posterior_mean(self, x_t: torch.Tensor, alpha_bar: float, data: torch.Tensor) -> torch.Tensor:
        """Σ_i softmax_i(−‖x_t − √ᾱ x_i‖² / 2(1−ᾱ)) x_i for rows x_t (B, D) over data (N, D), streamed over N."""
        b, d = x_t.shape
        out = torch.empty_like(x_t)
        # Rows of x_t per pass and data points per chunk such that the chunk's scaled copy and the (rows, chunk)
        # float64 weights (computed in place, with room for a temporary or two) stay within chunk_bytes.
        rows_per = max(1, min(b, self.chunk_bytes // (8 * 4 * 256)))
        a = alpha_bar ** 0.5
        two_var = 2.0 * (1.0 - alpha_bar)
        for r0 in range(0, b, rows_per):
            xs = x_t[r0:r0 + rows_per]
            nb = len(xs)
            per_chunk = max(1, self.chunk_bytes // (8 * (4 * nb + d)))
            m = torch.full((nb,), -torch.inf, dtype=torch.float64)
            s = torch.zeros(nb, dtype=torch.float64)
            num = torch.zeros(nb, d, dtype=torch.float64)
            for c0 in range(0, len(data), per_chunk):
                chunk = data[c0:c0 + per_chunk]
                # Differences, not ‖x‖² − 2x·y + ‖y‖²: the expansion cancels catastrophically when 1 − ᾱ is small.
                w = torch.cdist(xs, a * chunk, compute_mode="donot_use_mm_for_euclid_dist")
                w.square_().div_(-two_var)  # the logits, in place
                m_new = torch.maximum(m, w.max(1).values)
                w.sub_(m_new[:, None]).exp_()
                rescale = torch.exp(m - m_new)  # exp(−inf) = 0 on the first chunk
                s = s * rescale + w.sum(1)
                num = num * rescale[:, None] + w @ chunk
                m = m_new
            out[r0:r0 + nb] = num / s[:, None]
        return out


@dataclass(frozen=True)
class IdealConfig:
    """What the samplers read of a model's config: one sample's shape, the classes, and that it predicts ε."""

    shape: tuple[int, ...]
    num_classes: int | None = None
    prediction: str = "eps"
    preset: str = "ideal"
    text_encoder: None = None

    @property
    def image_size(self) -> int:
        """The side of an image set's pictures (0 for points)."""
        return self.shape[-1] if len(self.shape) == 3 else 0

    @property
    def in_channels(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 0


class IdealNet(nn.Module):
    """The ideal denoiser as a network with no weights: ``forward(x, t, y)`` is its ε̂, so every sampler, guidance
    and the app's views take it wherever they take a trained model."""

    def __init__(self, denoiser: IdealDenoiser):
        super().__init__()
        self.denoiser = denoiser
        self.config = IdealConfig(denoiser.shape, denoiser.num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoiser(x, t, y)
