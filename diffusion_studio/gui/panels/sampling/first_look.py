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
    elif job.sampler == "ddpm":
        how = f"DDPM σ² = {'β̃' if job.variance == 'beta_tilde' else 'β'}, {job.steps} steps"
    else:
        name = {"euler": "Euler", "heun": "Heun", "dpm++2m": "DPM-Solver++ 2M", "unipc": "UniPC",
                "euler_a": "Euler ancestral"}.get(job.sampler, job.sampler)
        grid = "" if job.timestep_spacing == "linspace" and not job.karras else \
            f", {job.timestep_spacing}{' Karras' if job.karras else ''}"
        how = f"{name}, {job.steps} steps ({job.model_evals} evaluations{grid})"
    return f"{model_name} · {how} · seed {job.seed}"
