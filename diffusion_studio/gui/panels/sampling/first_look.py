"""The Sampling tab's first look and its labels: the form's own run on the shipped model (unless the user picked
another) — a quick DDIM run instead, said in the window, only when the form asks for a slow one — and a caption
saying which model, sampler, seed and prompt made the frames."""
from __future__ import annotations

from dataclasses import replace

from ....jobs.sampling import SamplingJob

QUICK_STEPS = 20  # a DDIM run of 20 steps: digits appear within seconds on a 2-core CPU
QUICK_EVALS = 50  # the form's own run is the first look when it costs at most this many model evaluations


def quick_job(job: SamplingJob, T: int) -> SamplingJob:
    """The first-look run: the user's images, seed and class, but deterministic DDIM with few steps (a remembered
    DDPM with all T steps took minutes of CPU before anything could be seen)."""
    return replace(job, sampler="ddim", variance="beta_tilde", steps=min(QUICK_STEPS, T), eta=0.0, every=0)


def first_look_job(job: SamplingJob, T: int) -> tuple[SamplingJob, str]:
    """The first look's run and, when it is not the form's, a line saying why: the form's run when it is quick (so
    the caption and the Steps field agree), else the quick DDIM run."""
    if job.model_evals <= QUICK_EVALS and job.steps <= T:
        return job, ""
    quick = quick_job(job, T)
    return quick, (f"First look: {describe_job('', quick).split(' · ')[1]} for speed; ▶ Sample runs the settings "
                   f"above ({describe_job('', job).split(' · ')[1]}).")


def describe_job(model_name: str, job: SamplingJob, text_model: bool = False) -> str:
    """'builtin:digits · DDIM, 20 steps (η = 0) · seed 0': what made the frames on screen (a text model's prompt and
    w too, or that it ran without one)."""
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
    what = ""
    if job.prompt:
        shown = job.prompt if len(job.prompt) <= 48 else job.prompt[:47] + "…"
        what = f" · “{shown}”, w = {job.guidance:g}"
    elif text_model:
        what = " · no prompt: unconditional"
    return f"{model_name} · {how} · seed {job.seed}{what}"
