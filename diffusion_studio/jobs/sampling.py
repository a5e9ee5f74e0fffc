"""The one sampling pipeline, for the app's workers and `diffusion-studio sample` alike: condition (a class or a
prompt) → guided ε → sampler → frames in the model's space, decoded by the model's own space (pixels or latents).

The CLI writes the final frame's pictures; the app records every N-th frame as small grids (jobs/frames.py). The
factories at the bottom are what the app's GeneratorWorkers run (called in the worker thread).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from ..core.diffusion.eps import model_fn
from ..core.diffusion.run_stats import RunStats
from ..core.diffusion.samplers import Frame, model_evals, sample, sample_frames
from ..core.io.models import LoadedModel, load_model
from ..core.runtime.calibrate import FastPath, for_sampling
from .frames import ChosenPrecision, PromptNotes, auto_every, expected_frames, record, with_attention
from .prompts import NO_PROMPT, Prompted, encode_prompt

SWEEP_WS = (0.0, 1.0, 3.0, 7.0)  # the guidance sweep strip's weights
CLASS_GUIDANCE = 2.0  # the default w for a class-conditional model's classes (the CLI's and the lab's)


@dataclass(frozen=True)
class SamplingJob:
    """What the user asked for: ``sampler`` one of core/diffusion/samplers.py's SAMPLERS (ddpm, ddim, euler, heun,
    dpm++2m, unipc, euler_a); ``steps`` is diffusers' num_inference_steps; ``variance`` "beta_tilde" or "beta" (DDPM)."""

    sampler: str = "ddim"
    variance: str = "beta_tilde"
    steps: int = 50
    eta: float = 0.0
    n_images: int = 16
    seed: int = 0
    clip_x0: bool = True
    every: int = 0            # 0: auto (about TARGET_FRAMES frames)
    label: int | None = None  # a class index; -1: one class per image in turn; None: unconditional
    first: int = 0            # with label -1: the index of the job's first image in a longer run (classes continue)
    guidance: float = 1.0
    prompt: str | None = None            # a text model's prompt and negative prompt (jobs/prompts.py)
    negative_prompt: str | None = None
    timestep_spacing: str = "linspace"   # diffusers' names: linspace (both ends), leading, trailing
    karras: bool = False                 # Karras σ spacing (the ODE samplers)

    @property
    def model_evals(self) -> int:
        """How many times ε_θ runs (Heun: 2N − 1; a guided step still counts once, its two halves in one batch)."""
        return model_evals(self.sampler, self.steps)

    def effective_every(self) -> int:
        return self.every if self.every > 0 else auto_every(self.steps)

    def expected_frames(self) -> int:
        """Frames a full run records: the start, every N-th step, and always the last."""
        return expected_frames(self.steps, self.effective_every())


def job_labels(job: SamplingJob, num_classes: int | None) -> torch.Tensor | None:
    if not num_classes or job.label is None:
        return None
    if job.label < 0:  # image k of the whole run draws class k mod C, however the run is cut into batches
        return (torch.arange(job.n_images) + job.first) % num_classes
    return torch.full((job.n_images,), int(job.label), dtype=torch.long)


def prompted(loaded: LoadedModel, job: SamplingJob) -> Prompted:
    """The job's prompt encoded for a text model (no prompt, or a model without text: no condition)."""
    if job.prompt is None or not loaded.is_text:
        return NO_PROMPT
    return encode_prompt(loaded.checkpoint, job.prompt, job.negative_prompt, job.n_images)


def eps_fn(loaded: LoadedModel, job: SamplingJob, precision: str, text: Prompted = NO_PROMPT):
    """The guided ε_θ(x_t, t) of the job: its prompt, else its class labels, at weight job.guidance."""
    condition = text.condition if text.condition is not None else job_labels(job, loaded.config.num_classes)
    return model_fn(loaded.model, loaded.device, precision, condition=condition, guidance=job.guidance,
                    negative=text.negative, schedule=loaded.schedule)


def chosen_precision(loaded: LoadedModel, job: SamplingJob, precision: str = "auto") -> FastPath:
    """What the job's network will compute in: 'auto' measured for this model at this batch on a CPU (cached)."""
    return for_sampling(loaded.config, job.n_images, precision, loaded.device)


def frames(loaded: LoadedModel, job: SamplingJob, precision: str = "auto", *, text: Prompted | None = None,
           include_start: bool = True, x_T: torch.Tensor | None = None) -> Iterator[Frame]:
    """Every step's Frame of the job, in the model's space (decode with ``loaded.space``). x̂₀ is clipped only in
    pixel space: a latent has no [−1, 1] range to clip to."""
    text = prompted(loaded, job) if text is None else text
    fn = eps_fn(loaded, job, chosen_precision(loaded, job, precision).precision, text)
    cfg = loaded.config
    shape = (job.n_images, *cfg.shape)
    return sample_frames(fn, loaded.schedule, shape, job.sampler, steps=job.steps, variance=job.variance,
                         eta=job.eta, clip_x0=job.clip_x0 and loaded.space.clips_x0, seed=job.seed,
                         device=loaded.device, every=1, include_start=include_start, x_T=x_T,
                         timestep_spacing=job.timestep_spacing, karras=job.karras)


def final_images(loaded: LoadedModel, job: SamplingJob, precision: str = "auto", **kw) -> torch.Tensor:
    """The job's samples as pictures in [−1, 1] (decoded for a latent model), on the CPU."""
    last = None
    for last in frames(loaded, job, precision, include_start=False, **kw):
        pass
    assert last is not None and last.is_final
    return loaded.space.decode(last.x).clamp(-1, 1).cpu()


# ---- what the app's workers run ---------------------------------------------------------------------------------------
def sampling_factory(loaded: LoadedModel, job: SamplingJob, precision: str = "auto"):
    """A GeneratorWorker factory: the job's frames recorded for display (decoded in the worker for a latent model),
    with per-word attention maps for a prompt; a prompt's PromptNotes (the tokens kept, the encoder's notes) come
    first, or alone, with its error, for a prompt that cannot be sampled."""
    def factory():
        try:
            text = prompted(loaded, job)
        except ValueError as e:  # "prompt: the encoder can represent none of '😀'": the user's input, said in one line
            yield PromptNotes([], [], error=str(e))
            return
        if text.words is not None:
            yield PromptNotes(list(text.words), list(text.notes))
        fast = chosen_precision(loaded, job, precision)
        yield ChosenPrecision(fast.precision, fast.explain())
        out = record(frames(loaded, job, precision, text=text), loaded.space, every=job.effective_every(),
                     run_stats=RunStats(loaded.schedule, job.sampler, job.variance, job.eta))
        yield from with_attention(out, loaded, text.words, job.n_images)

    return factory


def load_factory(path: str | os.PathLike, name: str, device: torch.device | str):
    """A GeneratorWorker factory whose generator loads the model (its decoder too) and returns a LoadedModel."""
    def load() -> Iterator[None]:
        loaded = load_model(path, device, name)
        from .estimate import measure

        measure(loaded)  # a 256-px model on a CPU: one timed step, so a run can say how long it will take
        return loaded
        yield  # noqa: unreachable — makes this a generator, so the work happens in the worker's first next()

    return load


def sweep_factory(loaded: LoadedModel, job: SamplingJob, ws=SWEEP_WS):
    """A GeneratorWorker factory: one image (the run's seed, first row) at each w, yielded as (w, uint8 HxWxC)."""
    from ..data.convert import to_uint8

    def run():
        steps = min(job.steps, 25) if job.sampler == "ddim" else min(job.steps, 50)
        one = dataclasses.replace(job, n_images=1, sampler="ddim", steps=steps, eta=0.0)
        text = prompted(loaded, one)
        cfg = loaded.config
        for w in ws:
            fn = eps_fn(loaded, dataclasses.replace(one, guidance=w), "fp32", text)
            x = sample(fn, loaded.schedule, (1, *cfg.shape), "ddim",
                       steps=one.steps, seed=job.seed, clip_x0=loaded.space.clips_x0, device=loaded.device)
            yield w, to_uint8(loaded.space.decode(x)[0].clamp(-1, 1).cpu())

    return run
