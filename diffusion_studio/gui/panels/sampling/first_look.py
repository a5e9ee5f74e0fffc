"""The Sampling tab's first look and its labels: a quick DDIM run on the shipped model (unless the user picked
another), a caption saying which model, sampler and seed made the frames, and no frames left from another model."""
from __future__ import annotations

from dataclasses import replace

from ....jobs.sampling import SamplingJob

QUICK_STEPS = 20  # a DDIM run of 20 steps: digits appear within seconds on a 2-core CPU


def quick_job(job: SamplingJob, T: int) -> SamplingJob:
    """The first-look run: the user's images, seed and class, but deterministic DDIM with few steps (a remembered
    DDPM with all T steps took minutes of CPU before anything could be seen)."""
    return replace(job, sampler="ddim", variance="beta_tilde", steps=min(QUICK_STEPS, T), eta=0.0, every=0)


def describe_job(model_name: str, job: SamplingJob) -> str:
    """'builtin:digits · DDIM, 20 steps (η = 0) · seed 0': what made the frames on screen."""
    if job.sampler == "ddim":
        how = f"DDIM, {job.steps} steps (η = {job.eta:g})"
    else:
        how = f"DDPM σ² = {'β̃' if job.variance == 'beta_tilde' else 'β'}, {job.steps} steps"
    return f"{model_name} · {how} · seed {job.seed}"
