"""The Likelihood view's background work, Qt-free: load the images, run core.vlb's generator for one or two models,
and hand the GUI ready-to-draw frames (curves already in bits/dim), so the GUI thread only sets data."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..core.diffusion import vlb
from ..core.diffusion.eps import model_fn
from ..data import load_dataset
from ..data.specs import held_out_split

PROBE_BUDGET_BYTES = 64 * 2**20   # the hover's per-t images for one image: all t when they fit, else every k-th t
SMALL_T = 10                      # "small t" in the explanation: the paper's t ≤ 10


@dataclass
class Job:
    """One model to measure: its key in the view ("A" the loaded model, "B" the comparison), the LoadedModel."""

    key: str
    name: str
    model: Any          # gui.state.LoadedModel
    spec: str
    n: int
    every: int
    clip_x0: bool
    seed: int = 0


@dataclass
class Started:
    key: str
    name: str
    note: str           # which images, and whether the model trained on them
    n: int
    total: int          # indices to evaluate
    T: int


@dataclass
class Frame:
    """Everything the view draws after one more t of one model (copies: the worker goes on with its own)."""

    key: str
    name: str
    t: int                                          # the paper's t just evaluated
    done: int
    total: int
    T: int
    curves: dict[str, tuple[np.ndarray, np.ndarray]]       # variance → (t, bits/dim), t ascending
    cumulative: dict[str, tuple[np.ndarray, np.ndarray]]   # variance → (t, Σ up to t, bits/dim)
    summary: dict[str, dict[str, Any]]                     # variance → VLB.bits_per_dim (final when done == total)
    share_small_t: dict[str, float]                        # variance → share of the bound at t ≤ SMALL_T
    prior_bits: float                                      # L_T, bits/dim
    eps_weights: dict[str, np.ndarray] = field(default_factory=dict)  # λ_t per variance (shared arrays)
    probe: vlb.Probe | None = None
    term_bits: dict[str, float] = field(default_factory=dict)        # this t's term, bits/dim, per variance
    eps_mse: float = math.nan
    estimate: bool = False


def unsupported(meta: dict) -> str | None:
    """Why the bound cannot be measured for a model ("is a latent model; …"), or None. The bound is on 8-bit pixels:
    its L_0 is a discrete decoder over pixel bins, which latents and 2-D points do not have."""
    from ..core.io.space import is_latent_meta, is_points_meta

    if is_latent_meta(meta):
        return ("is a latent model; the bound here is on 8-bit pixels (its L_0 is a discrete decoder over pixel "
                "bins) and does not cover latent models yet")
    if is_points_meta(meta):
        return "is a 2-D points model; the bound here is on 8-bit images and does not cover points"
    return None


def data_note(spec: str, trained_on: str | None) -> str:
    """Whether these images are held out from the model's training, as far as the checkpoint tells."""
    if held_out_split(spec):  # builtin:mnist, mnist:PATH and cifar10:PATH are scored on their test split
        return "test split: held out"
    if trained_on and trained_on.strip() == spec.strip():
        return "the model's own training images (not held out)"
    return "not the model's training data" + (f" ({trained_on})" if trained_on else "")


def probe_stride(T: int, pixels: int) -> int:
    """Keep the hover's images at every k-th t so that T/k of them (3 float32 images each) fit the budget."""
    return max(1, math.ceil(T * 3 * 4 * pixels / PROBE_BUDGET_BYTES))


def load_images(model, spec: str, n: int, seed: int) -> tuple[torch.Tensor, int]:
    """A seeded random subset of n images of ``spec`` at the model's size and channels (the test split of data that
    has one: builtin:mnist, mnist:PATH, cifar10:PATH; as the nll command does)."""
    c = model.config
    ds = load_dataset(spec, c.image_size, channels=c.in_channels, **held_out_split(spec))
    k = min(n, len(ds))
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:k].sort().values
    return ds.batch(idx).float(), len(ds)


def likelihood_factory(jobs: list[Job], device: torch.device | str):
    """A GeneratorWorker factory: for each job, Started, then one Frame per t (the worker stops between any two)."""

    def run() -> Iterator[Started | Frame]:
        for job in jobs:
            yield from _one(job, torch.device(device))

    return run


def _one(job: Job, device: torch.device) -> Iterator[Started | Frame]:
    lm = job.model
    schedule = lm.schedule
    x0, available = load_images(lm, job.spec, job.n, job.seed)
    if len(x0) < 2:
        raise ValueError(f"{job.spec}: at least 2 images are needed, found {len(x0)}")
    trained_on = (lm.checkpoint.meta.get("data") or {}).get("spec")
    ts = vlb.subset_timesteps(schedule.T, job.every, job.seed)
    yield Started(job.key, job.name, f"{len(x0)} of {available} images of {job.spec}: {data_note(job.spec, trained_on)}",
                  len(x0), len(ts), schedule.T)
    fn = model_fn(lm.model, device, "fp32", schedule=schedule)
    stride = probe_stride(schedule.T, x0[0].numel())
    weights = {v: vlb.eps_weights(schedule, v).numpy() for v in vlb.VARIANCES}
    done = 0
    for acc, item in vlb.evaluate(fn, schedule, x0.to(device), clip_x0=job.clip_x0, every=job.every,
                                  design_seed=job.seed, seed=job.seed, probe=True):
        done += 1
        keep_probe = item.t < SMALL_T or item.t % stride == 0
        yield Frame(
            key=job.key, name=job.name, t=item.t + 1, done=done, total=len(ts), T=schedule.T,
            curves={v: acc.curve_bits(v) for v in vlb.VARIANCES},
            cumulative={v: acc.cumulative_bits(v) for v in vlb.VARIANCES},
            summary={v: acc.bits_per_dim(v) for v in vlb.VARIANCES},
            share_small_t={v: acc.share_up_to(v, SMALL_T) for v in vlb.VARIANCES},
            prior_bits=float(acc.prior.mean() / vlb.LN2),
            eps_weights=weights,
            probe=item.probe if keep_probe else None,
            term_bits={v: float(item.terms[v].mean()) / vlb.LN2 for v in vlb.VARIANCES},
            eps_mse=float(item.eps_mse.mean()),
            estimate=acc.is_estimate,
        )


def explain(frame: Frame | None, variance: str) -> str:
    """The line that tells the learner what the curve shows, with this run's numbers."""
    if frame is None or not frame.curves[variance][0].size:
        return ("Each point is one term Lₜ₋₁ = KL(q(xₜ₋₁ | xₜ, x₀) ‖ p_θ(xₜ₋₁ | xₜ)) of the bound on −log p(x₀), "
                "in bits per dimension; press Compute.")
    lam = frame.eps_weights.get(variance)
    weights = ""
    if lam is not None and lam.size > 2:
        weights = f" ({lam[1]:.2g} at t = 2 → {lam[-1]:.2g} at t = {frame.T})"
    rest = (f"near the data p_θ must get fine detail right; at large t q and p_θ are both nearly noise and agree. "
            f"Lₜ₋₁ = λ_t‖ε − ε_θ‖² + const, λ_t = β_t²/(2σ_t²α_t(1−ᾱ_t)){weights}; L_simple sets every λ_t to 1, "
            f"weighing all t alike rather than the few small t that dominate the bound: better samples, a slightly "
            f"worse bound (Ho et al.).")
    lead = small_t_part(frame, variance)
    return lead + (rest[0].upper() + rest[1:] if not lead or lead.endswith(". ") else rest)


def small_t_part(frame: Frame, variance: str) -> str:
    """The sentence about the small t. Their share of the bound is a share of the whole sum, known once every t is
    in: the run goes from t = T down to 1, so before that (running, or stopped) the small t are not computed yet."""
    if frame.done < frame.total:
        return (f"The run goes from t = {frame.T} down to 1: the terms at t ≤ {SMALL_T} (L₀ included) come last, "
                f"so their share of the bound is known only once every t is in ({frame.done}/{frame.total} "
                f"computed). ")
    share = frame.share_small_t[variance]
    return f"Terms at t ≤ {SMALL_T} carry {100 * share:.0f}% of the bound (L₀ included): " if math.isfinite(share) else ""
