"""The variational bound −log p_θ(x_0) ≤ L_T + Σ_{t>1} L_{t−1} + L_0, term by term, in nats and bits per dimension.

Ho et al. (2020) eq. 5, measured the way improved-diffusion's ``_vb_terms_bpd`` does: for each t one x_t is drawn
from q(x_t | x_0); L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) between two diagonal Gaussians, with
p_θ's mean the posterior mean at x̂_0 = x̂_0(x_t, ε_θ) (clipped to [−1, 1] unless ``clip_x0=False``) and its variance
σ_t² = β_t or β̃_t; L_0 = −log p_θ(x_0 | x_1), the Gaussian N(μ_θ(x_1, 1), σ_1²) integrated over the 8-bit bin of each
pixel (width 2/255, the end bins open to ±∞); L_T = KL(q(x_T | x_0) ‖ N(0, I)) needs no model.

Index convention as everywhere: index i is the paper's t = i + 1, so index 0 carries L_0 and index i ≥ 1 carries
the paper's L_{t−1} = L_i. β̃_1 = 0, so for σ² = β̃ the decoder uses β̃_2 instead (improved-diffusion's clipped log
variance); for σ² = β it uses β_1. Every value here is per dimension (a mean over pixels and channels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .reverse import predict_x0_from_eps, q_posterior
from .schedule import NoiseSchedule

VARIANCES = ("beta", "beta_tilde")
LN2 = math.log(2.0)
HALF_BIN = 1.0 / 255.0          # 8-bit data on [−1, 1]: pixel values 2k/255 − 1, bins of width 2/255
EDGE = 1.0 - 1e-3               # values beyond ±EDGE are the end bins, open to ±∞

NOISE_SEED_BASE = 0x5EED_1234  # torch's CPU generator keeps 32 bits of a seed

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- Gaussian pieces ----------------------------------------------------------------------------------------------
def normal_kl(mean1, var1, mean2, var2) -> torch.Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) element by element, in nats; variances, not log-variances."""
    mean1, mean2 = torch.as_tensor(mean1), torch.as_tensor(mean2)
    var1 = torch.as_tensor(var1, dtype=mean1.dtype, device=mean1.device)
    var2 = torch.as_tensor(var2, dtype=mean1.dtype, device=mean1.device)
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _log_diff_ndtr(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Φ(hi) − Φ(lo)) for lo < hi, accurate in both tails (no clamp: the far tails keep their real size)."""
    # Above 0, Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi): work on the side where Φ is small, where log Φ is exact.
    flip = lo > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1(log_a - log_b))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, var) -> torch.Tensor:
    """log P(x) per element for 8-bit data x in [−1, 1] under N(mean, var) integrated over x's bin, in nats.

    The bin of x is [x − 1/255, x + 1/255]; the lowest (x = −1) reaches down to −∞ and the highest (x = 1) up to +∞,
    so the 256 probabilities of a pixel sum to 1 (Ho et al.'s decoder; improved-diffusion's losses.py).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    mean = torch.as_tensor(mean, dtype=torch.float64, device=x.device)
    std = torch.as_tensor(var, dtype=torch.float64, device=x.device).sqrt()
    lo = (x - HALF_BIN - mean) / std
    hi = (x + HALF_BIN - mean) / std
    lo = torch.where(x < -EDGE, torch.full_like(lo, -math.inf), lo)
    hi = torch.where(x > EDGE, torch.full_like(hi, math.inf), hi)
    return _log_diff_ndtr(lo, hi)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, var) -> torch.Tensor:
    """log N(x; mean, var) per element, in nats: the decoder for continuous data."""
    var = torch.as_tensor(var, dtype=torch.float64, device=x.device)
    return -0.5 * (torch.log(2 * math.pi * var) + (x.double() - mean.double()) ** 2 / var)


# ---- the schedule's side ------------------------------------------------------------------------------------------
def model_variances(schedule: NoiseSchedule, variance: str) -> torch.Tensor:
    """σ_t² for every index, float64 of length T: β_t, or β̃_t with β̃_1 = 0 replaced by β̃_2 for the decoder."""
    if variance == "beta":
        return schedule.betas.clone()
    if variance == "beta_tilde":
        return torch.exp(schedule.posterior_log_variance_clipped)
    raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")


def eps_weights(schedule: NoiseSchedule, variance: str) -> torch.Tensor:
    """λ_t with L_{t−1} = λ_t · E‖ε − ε_θ‖² (per dimension) + a variance term, for t ≥ 2 (index ≥ 1):
    λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)). L_simple sets every λ_t to 1; index 0 (the decoder) is NaN."""
    lam = schedule.betas ** 2 / (2 * model_variances(schedule, variance) * schedule.alphas * (1 - schedule.alpha_bars))
    lam[0] = math.nan
    return lam


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per image, nats per dimension; shape (B,)."""
    x0 = x0.double()
    mean = schedule.sqrt_alpha_bars[-1].item() * x0
    var = 1.0 - schedule.alpha_bars[-1].item()
    return normal_kl(mean, var, torch.zeros_like(mean), 1.0).flatten(1).mean(1)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


# ---- timesteps ----------------------------------------------------------------------------------------------------
MIN_BLOCKS = 20  # fewer blocks than this and their spread cannot be judged (the interval undercovers)


def max_every(T: int) -> int:
    """The coarsest quick look that still leaves MIN_BLOCKS blocks: T // 20 (50 for T = 1000), at least 1."""
    return max(1, T // MIN_BLOCKS)


def subset_timesteps(T: int, every: int = 1, design_seed: int = 0) -> list[int]:
    """The indices a quick look evaluates, from T − 1 down to 0: all of 0..every−1 (L_0 and the steep head of the
    curve), then ONE index drawn at random from each block [every, 2·every), [2·every, 3·every), … (stratified random
    sampling, seeded by ``design_seed``). Each drawn term stands for its block (``subset_weights``), so the weighted
    sum is an unbiased estimate of the full sum; every = 1 is the full T."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a whole number ≥ 1, got {every!r}")
    if every > max_every(T):
        raise ValueError(f"every must be at most {max_every(T)} for T = {T} (at least {MIN_BLOCKS} blocks), "
                         f"got {every}")
    if every == 1:
        return list(range(T - 1, -1, -1))
    rng = np.random.default_rng(design_seed)
    drawn = [int(rng.integers(a, min(a + every, T))) for a in range(every, T, every)]
    return sorted(drawn, reverse=True) + list(range(every - 1, -1, -1))


def subset_weights(T: int, every: int, ts: Sequence[int]) -> dict[int, int]:
    """How many indices each evaluated index stands for: 1 in the head (< every), its block's size after it."""
    if every == 1:
        return {int(t): 1 for t in ts}
    return {int(t): 1 if t < every else min(t // every * every + every, T) - t // every * every for t in ts}


# ---- one t --------------------------------------------------------------------------------------------------------
@dataclass
class Probe:
    """What q and p_θ are at one t for one image: means (C, H, W float32) and the scalar variances."""

    x_t: np.ndarray
    q_mean: np.ndarray          # μ̃_t(x_t, x_0); at index 0 the data x_0 itself
    p_mean: np.ndarray          # μ_θ(x_t, t)
    q_var: float                # β̃_t; 0 at index 0 (the data is a point)
    p_var: dict[str, float]     # σ_t² per variance choice
    mean_gap: float = 0.0       # ‖μ̃_t − μ_θ‖² per dimension (at index 0: ‖x_0 − μ_θ‖²)
    terms: dict[str, float] = field(default_factory=dict)  # this image's term per variance, nats/dim


@dataclass
class TermsAt:
    """The bound's term at one index t for every image (nats per dimension), with the ε- and x̂_0-errors beside it."""

    t: int
    terms: dict[str, torch.Tensor]      # variance → (B,): L_{t−1} (KL) for t ≥ 1, L_0 (decoder NLL) for t = 0
    eps_mse: torch.Tensor               # (B,) ‖ε − ε_θ‖² per dimension
    x0_mse: torch.Tensor                # (B,) ‖x_0 − x̂_0‖² per dimension (x̂_0 clipped when clip_x0)
    probe: Probe | None = None


def _noise(x0: torch.Tensor, seed: int, t: int) -> torch.Tensor:
    # One generator per t, so a subset of t draws exactly the x_t the full run draws at those t; the offset keeps
    # these streams apart from a caller's own small seeds (x_0 drawn with seed 2 must not be the noise of t = 2).
    g = torch.Generator().manual_seed((NOISE_SEED_BASE + seed * 1_000_003 + t) % 2**32)
    return torch.randn(x0.shape, generator=g, dtype=torch.float64).to(x0.device)


def _sigma2(schedule: NoiseSchedule, variance: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    v = model_variances(schedule, variance).to(like.device)[t]
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


@torch.no_grad()
def _row_terms(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
               variances: Sequence[str], clip_x0: bool, discrete: bool, batch: int | None, in_dtype: torch.dtype):
    """The term of each row at its own index t[row] (float64 x0 and ε given): a KL for t ≥ 1, the decoder's NLL at 0."""
    x_t = schedule.at("sqrt_alpha_bars", t, x0) * x0 + schedule.at("sqrt_one_minus_alpha_bars", t, x0) * eps
    model_t = schedule.timestep_map.to(t.device)[t]
    n = x0.shape[0]
    step = batch or n
    eps_pred = torch.cat([eps_fn(x_t[a:a + step].to(in_dtype), model_t[a:a + step]).double()
                          for a in range(0, n, step)])
    x0_pred = predict_x0_from_eps(schedule, x_t, t, eps_pred)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
    p_mean, _ = q_posterior(schedule, x0_pred, x_t, t)
    q_mean, q_var = q_posterior(schedule, x0, x_t, t)
    last = t == 0
    q_var = torch.where(last.reshape(q_var.shape), torch.ones_like(q_var), q_var)  # β̃_1 = 0: L_0 is no KL
    out: dict[str, torch.Tensor] = {}
    for v in variances:
        sig2 = _sigma2(schedule, v, t, x0)
        term = mean_flat(normal_kl(q_mean, q_var, p_mean, sig2))
        if bool(last.any()):
            ll = discretized_gaussian_log_likelihood if discrete else gaussian_log_density
            term[last] = -mean_flat(ll(x0[last], p_mean[last], sig2[last]))
        out[v] = term
    return out, mean_flat((eps - eps_pred) ** 2), mean_flat((x0 - x0_pred) ** 2), x_t, q_mean, p_mean


def terms_at(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, t: int, *,
             variances: Sequence[str] = VARIANCES, clip_x0: bool = True, discrete: bool = True, seed: int = 0,
             batch: int | None = None, probe: bool = False) -> TermsAt:
    """The bound's term at index t for each image of x0 (B, ...), in nats per dimension.

    ε_θ comes from ``eps_fn`` (core.eps.model_fn for a trained model), fed x_t in x0's dtype in chunks of ``batch``;
    everything after it runs in float64. The same ``seed`` and t always give the same x_t.
    """
    x0_64 = x0.double()
    t_vec = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
    out, eps_mse, x0_mse, x_t, q_mean, p_mean = _row_terms(eps_fn, schedule, x0_64, _noise(x0, seed, t), t_vec,
                                                           variances, clip_x0, discrete, batch, x0.dtype)
    pr = None
    if probe:
        def img(a: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(a[0].float().cpu().numpy())
        q_var = 0.0 if t == 0 else float(schedule.posterior_variance[t])
        q0 = x0_64 if t == 0 else q_mean
        pr = Probe(img(x_t), img(q0), img(p_mean), q_var,
                   {v: float(model_variances(schedule, v)[t]) for v in variances},
                   float(((q0[0] - p_mean[0]) ** 2).mean()), {v: float(out[v][0]) for v in variances})
    return TermsAt(int(t), out, eps_mse, x0_mse, pr)


def bound_one_shot(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, *,
                   variances: Sequence[str] = VARIANCES, clip_x0: bool = True, discrete: bool = True, seed: int = 0,
                   rows: int = 4096) -> dict[str, torch.Tensor]:
    """The whole bound per image (nats/dim) without the per-t loop: every (image, t) pair is a row of one long
    batch, ``rows`` at a time, each at its own t, as a training step sees them. Same x_t as ``vlb_terms`` draws."""
    n, T = x0.shape[0], schedule.T
    total = {v: prior_kl(schedule, x0).to(x0.device) for v in variances}
    pairs = [(i, t) for t in range(T) for i in range(n)]
    noise = {}
    for a in range(0, len(pairs), rows):
        chunk = pairs[a:a + rows]
        for t in {t for _, t in chunk} - set(noise):
            noise[t] = _noise(x0, seed, t)
        idx = torch.tensor([i for i, _ in chunk], device=x0.device)
        t_vec = torch.tensor([t for _, t in chunk], dtype=torch.long, device=x0.device)
        eps = torch.stack([noise[t][i] for i, t in chunk])
        out = _row_terms(eps_fn, schedule, x0.double()[idx], eps, t_vec, variances, clip_x0, discrete, None,
                         x0.dtype)[0]
        for v in variances:
            total[v].index_add_(0, idx, out[v])
        for t in {t for _, t in chunk} - {t for _, t in pairs[a + rows:a + rows + 1]}:
            noise.pop(t, None)
    return total


def vlb_terms(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, *, timesteps: Sequence[int] | None = None,
              **kw) -> Iterator[TermsAt]:
    """Yield ``terms_at`` for each index in ``timesteps`` (default: all, T − 1 down to 0), one model pass each.

    A generator, so a caller can draw the curve while it fills and stop at any t (keyword arguments as terms_at).
    """
    ts = list(range(schedule.T - 1, -1, -1)) if timesteps is None else [int(t) for t in timesteps]
    for t in ts:
        if not 0 <= t < schedule.T:
            raise ValueError(f"timestep index {t} is outside 0..{schedule.T - 1}")
        yield terms_at(eps_fn, schedule, x0, t, **kw)


# ---- adding the terms up ------------------------------------------------------------------------------------------
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """Student's t 97.5 % quantile (two-sided 95 %), tabulated to df 30 and the normal's 1.96 beyond."""
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of its 95 % confidence interval) over the entries of values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()) if v.size else math.nan, math.inf
    return float(v.mean()), t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)


def subset_sum_se(y: np.ndarray, w: np.ndarray) -> float:
    """Standard error of Σ w_h y_h, the stratified estimate of a sum from one random term y_h per block of w_h.

    One draw per block leaves each block's spread unseen; it is taken from the neighbouring draw ("collapsed
    strata": V_h ≈ (y_h − y_{h−1})² / 2), with the finite-population factor (1 − 1/w_h). A trend makes this
    conservative; blocks of one (the head, or the full T) add nothing. ``y`` in ascending t.
    """
    y, w = np.asarray(y, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if y.size == 0 or bool(np.all(w <= 1)):
        return 0.0
    if y.size < 2:
        return math.inf
    d = np.diff(y)
    d = np.concatenate([d[:1], d])
    return math.sqrt(float(np.sum(w * w * d * d / 2 * (1 - 1 / w))))


@dataclass
class VLB:
    """The bound's terms for n images at the evaluated indices (all T, or every k-th with L_0 always)."""

    T: int
    variances: tuple[str, ...]
    clip_x0: bool
    discrete: bool
    every: int = 1
    design_seed: int = 0
    prior: np.ndarray = field(default_factory=lambda: np.zeros(0))   # (n,) L_T, nats/dim
    ts: list[int] = field(default_factory=list)                      # indices in the order they came
    terms: dict[str, list[np.ndarray]] = field(default_factory=dict)  # variance → per t (n,) nats/dim
    eps_mse: list[np.ndarray] = field(default_factory=list)
    x0_mse: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def start(cls, schedule: NoiseSchedule, x0: torch.Tensor, variances=VARIANCES, clip_x0=True, discrete=True,
              every: int = 1, design_seed: int = 0) -> "VLB":
        return cls(schedule.T, tuple(variances), clip_x0, discrete, every, design_seed,
                   prior=prior_kl(schedule, x0).cpu().numpy(), terms={v: [] for v in variances})

    def add(self, item: TermsAt) -> None:
        self.ts.append(item.t)
        for v in self.variances:
            self.terms[v].append(item.terms[v].cpu().numpy())
        self.eps_mse.append(item.eps_mse.cpu().numpy())
        self.x0_mse.append(item.x0_mse.cpu().numpy())

    @property
    def n(self) -> int:
        return int(self.prior.size)

    @property
    def complete(self) -> bool:
        return len(self.ts) == len(subset_timesteps(self.T, self.every, self.design_seed))

    @property
    def is_estimate(self) -> bool:
        return 1 < self.every < self.T

    def per_t(self, variance: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices ascending, mean over images of the term there), nats per dimension."""
        order = np.argsort(self.ts)
        return np.asarray(self.ts)[order], np.stack(self.terms[variance])[order].mean(1)

    def decoder(self, variance: str) -> np.ndarray:
        """L_0 per image (nats/dim); NaN until index 0 has been evaluated."""
        return self.terms[variance][self.ts.index(0)] if 0 in self.ts else np.full(self.n, np.nan)

    def weights(self) -> dict[int, int]:
        return subset_weights(self.T, self.every, self.ts)

    def totals(self, variance: str) -> np.ndarray:
        """The bound per image in nats per dimension: L_T + L_0 + Σ_{evaluated t ≥ 1} w_t L_{t−1} (w_t = 1 for the
        full T; a block's size for a quick look's drawn t)."""
        w = self.weights()
        rows = [w[t] * r for t, r in zip(self.ts, self.terms[variance]) if t != 0]
        middle = np.sum(rows, axis=0) if rows else np.zeros(self.n)
        return self.prior + self.decoder(variance) + middle

    def curve_bits(self, variance: str) -> tuple[np.ndarray, np.ndarray]:
        """(the paper's t ascending, the mean term there in bits/dim): L_0 at t = 1, L_{t−1} at t ≥ 2."""
        ts, y = self.per_t(variance)
        return ts + 1, y / LN2

    def cumulative_bits(self, variance: str) -> tuple[np.ndarray, np.ndarray]:
        """(the paper's t ascending, Σ of the weighted terms up to t in bits/dim): how the bound builds up from
        t = 1; at t = T plus L_T it is the total (an estimate for a quick look)."""
        ts, y = self.per_t(variance)
        w = self.weights()
        return ts + 1, np.cumsum(y * np.array([w[int(t)] for t in ts])) / LN2

    def share_up_to(self, variance: str, t_paper: int) -> float:
        """The fraction of the bound (without L_T) that the terms at t ≤ t_paper carry."""
        t, cum = self.cumulative_bits(variance)
        if cum.size == 0 or cum[-1] <= 0:
            return math.nan
        return float(cum[t <= t_paper][-1] / cum[-1]) if bool((t <= t_paper).any()) else 0.0

    def subset(self, every: int, design_seed: int = 0) -> "VLB":
        """This full run's rows at the indices a quick look with (every, design_seed) would evaluate: what that
        run would have measured (each t draws the same x_t either way)."""
        if self.every != 1:
            raise ValueError("subset() needs a run over all T")
        keep = subset_timesteps(self.T, every, design_seed)
        pos = {t: i for i, t in enumerate(self.ts)}
        out = VLB(self.T, self.variances, self.clip_x0, self.discrete, every, design_seed, prior=self.prior,
                  terms={v: [] for v in self.variances})
        for t in keep:
            if t in pos:
                out.ts.append(t)
                for v in self.variances:
                    out.terms[v].append(self.terms[v][pos[t]])
                out.eps_mse.append(self.eps_mse[pos[t]])
                out.x0_mse.append(self.x0_mse[pos[t]])
        return out

    def bits_per_dim(self, variance: str) -> dict[str, float]:
        """Mean bound in bits/dim with its 95 % interval: over images ('ci'), from sampling t ('t_se', 1.96×), and
        both combined ('half_width'); L_T and L_0 in bits/dim beside it."""
        mean, ci = mean_ci(self.totals(variance) / LN2)
        ts, y = self.per_t(variance)
        w = self.weights()
        drawn = ts >= self.every if self.is_estimate else np.zeros(ts.shape, bool)
        t_err = 1.96 * subset_sum_se(y[drawn] / LN2, np.array([w[int(t)] for t in ts[drawn]]))
        return {"bits_per_dim": mean, "ci": ci, "t_err": t_err, "half_width": math.hypot(ci, t_err),
                "prior": float(self.prior.mean() / LN2), "decoder": float(self.decoder(variance).mean() / LN2),
                "n": self.n, "evaluated": len(self.ts), "estimate": self.is_estimate}


def evaluate(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, *, variances: Sequence[str] = VARIANCES,
             clip_x0: bool = True, discrete: bool = True, every: int = 1, design_seed: int = 0, seed: int = 0,
             batch: int | None = None, probe: bool = False) -> Iterator[tuple[VLB, TermsAt]]:
    """Run the bound over the chosen indices, yielding (the running VLB, the newest TermsAt) after each t."""
    acc = VLB.start(schedule, x0, variances, clip_x0, discrete, every, design_seed)
    for item in vlb_terms(eps_fn, schedule, x0, timesteps=subset_timesteps(schedule.T, every, design_seed),
                          variances=variances, clip_x0=clip_x0, discrete=discrete, seed=seed, batch=batch,
                          probe=probe):
        acc.add(item)
        yield acc, item
    return acc


def vlb_total(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, **kw) -> VLB:
    """The whole run at once (what ``evaluate`` builds step by step)."""
    acc = None
    for acc, _ in evaluate(eps_fn, schedule, x0, **kw):
        pass
    assert acc is not None
    return acc
