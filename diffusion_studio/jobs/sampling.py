"""The Sampling panel's background jobs: loading a checkpoint, and sampling with frames turned into small uint8 grids.

Both run inside GeneratorWorkers (the factories below are called in the worker thread), so the GUI thread only
displays. A recorded frame holds three uint8 grids (x_t, x̂_0, ε), a few hundred KB at most, never a tensor; the
steps in between only report progress, so Stop acts after the current step whatever "preview every N" is.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..core.io.checkpoint import load_checkpoint
from ..core.runtime.device import resolve_precision
from ..core.diffusion.run_stats import RunStats, StepStats
from ..core.diffusion.samplers import Frame, sample_frames
from ..core.train.trainer import model_fn
from ..data.convert import make_grid, to_uint8
from ..gui.state import LoadedModel

TARGET_FRAMES = 50      # "preview every: auto" records about this many frames
EPS_SCALE = 3.0         # ε ~ N(0, I) is shown as ε/3, so ±3σ spans black to white


@dataclass(frozen=True)
class RecordedFrame:
    """One recorded step as display-ready uint8 grids (H, W) or (H, W, 3); x0/eps are None for the starting noise."""

    step: int
    n_steps: int
    t: int                    # schedule index of x (−1: the finished x_0)
    t_model: int | None       # index at which ε_θ was evaluated to produce x
    x: np.ndarray
    x0: np.ndarray | None
    eps: np.ndarray | None
    elapsed_s: float          # seconds since sampling started, when this frame was made
    stats: StepStats | None = None   # the step's numbers for the run curves (None for the starting noise)
    attention: object | None = None  # sampling_text.AttentionMaps: per-word cross-attention (text models)

    @property
    def paper_t(self) -> int:
        """The paper's t of x: T for the starting noise x_T, 0 for the finished sample."""
        return self.t + 1

    @property
    def is_final(self) -> bool:
        return self.t == -1

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x, self.x0, self.eps) if a is not None)


@dataclass(frozen=True)
class SamplingJob:
    """What the user asked for; ``sampler`` is "ddpm" or "ddim", ``variance`` "beta_tilde" or "beta"."""

    sampler: str = "ddim"
    variance: str = "beta_tilde"
    steps: int = 50
    eta: float = 0.0
    n_images: int = 16
    seed: int = 0
    clip_x0: bool = True
    every: int = 0            # 0: auto (about TARGET_FRAMES frames)
    label: int | None = None  # a class index; -1: one class per image in turn; None: unconditional
    guidance: float = 1.0
    prompt: str | None = None            # a text model's prompt (sampling_text.py) and negative prompt
    negative_prompt: str | None = None

    def effective_every(self) -> int:
        return self.every if self.every > 0 else auto_every(self.steps)

    def expected_frames(self) -> int:
        """Frames a full run records: the start, every N-th step, and always the last."""
        return expected_frames(self.steps, self.effective_every())


def auto_every(n_steps: int, target: int = TARGET_FRAMES) -> int:
    return max(1, math.ceil(n_steps / target))


def expected_frames(n_steps: int, every: int) -> int:
    return 1 + n_steps // every + (1 if n_steps % every else 0)


def grid_u8(x: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [−1, 1] → one uint8 grid, the way every grid of this panel is made."""
    return to_uint8(make_grid(x.detach().float().cpu(), nrow=nrow))


@dataclass(frozen=True)
class StepTick:
    """A reverse step that was not recorded: only progress (and a chance for the worker to check for Stop)."""

    step: int
    n_steps: int
    elapsed_s: float
    stats: StepStats | None = None


def pixel_frame(f: Frame, nrow: int | None, elapsed_s: float, stats) -> RecordedFrame:
    return RecordedFrame(
        step=f.step, n_steps=f.n_steps, t=f.t, t_model=f.t_model,
        x=grid_u8(f.x, nrow),
        x0=None if f.x0_pred is None else grid_u8(f.x0_pred, nrow),
        eps=None if f.eps_pred is None else grid_u8(f.eps_pred / EPS_SCALE, nrow),
        elapsed_s=elapsed_s, stats=stats)


def record(frames: Iterator[Frame], every: int = 1, nrow: int | None = None,
           run_stats: RunStats | None = None, make=pixel_frame) -> Iterator[RecordedFrame | StepTick]:
    """Turn the sampler's per-step Frames into recorded frames (``make``: pixel_frame, or a latent model's decoding
    maker) at the start, every ``every``-th step and the last step, and StepTicks in between (in the worker thread).
    The sampler runs with every=1 so the worker can stop after any step, not only after a recorded one; closing this
    closes the sampler."""
    t0 = time.perf_counter()
    try:
        for f in frames:
            stats = run_stats.update(f) if run_stats is not None else None
            if not (f.step == 0 or f.step == f.n_steps or f.step % every == 0):
                yield StepTick(f.step, f.n_steps, time.perf_counter() - t0, stats)
                continue
            yield make(f, nrow, time.perf_counter() - t0, stats)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def job_labels(job: SamplingJob, num_classes: int | None) -> torch.Tensor | None:
    if not num_classes or job.label is None:
        return None
    if job.label < 0:
        return torch.arange(job.n_images) % num_classes
    return torch.full((job.n_images,), int(job.label), dtype=torch.long)


def sampling_factory(loaded: LoadedModel, job: SamplingJob, precision: str = "auto"):
    """A factory for GeneratorWorker: builds ε_θ from the model and runs the sampler over the MODEL's schedule."""
    model, device = loaded.model, loaded.device
    cfg = model.config

    def factory() -> Iterator[RecordedFrame]:
        prec = resolve_precision(precision, torch.device(device))
        from ..gui.panels.sampling.text import text_conditions, with_attention

        cond, negative, words = text_conditions(loaded, job)  # (None, None, None) without a prompt
        fn = model_fn(model, device, prec, labels=job_labels(job, cfg.num_classes) if cond is None else cond,
                      guidance=job.guidance, negative=negative, schedule=loaded.schedule)
        from ..gui.panels.sampling.latent import latent_record, latent_space_of

        space = latent_space_of(loaded)  # a latent model's frames are decoded here, in the worker
        shape = (job.n_images, cfg.in_channels, cfg.image_size, cfg.image_size)
        frames = sample_frames(fn, loaded.schedule, shape, job.sampler, steps=job.steps, variance=job.variance,
                               eta=job.eta, clip_x0=job.clip_x0 and space is None, seed=job.seed, device=device,
                               every=1, include_start=True)  # (a latent has no [−1, 1] range to clip x̂₀ to)
        run_stats = RunStats(loaded.schedule, job.sampler, job.variance, job.eta)
        if space is not None:
            out = latent_record(frames, space, every=job.effective_every(), run_stats=run_stats)
        else:
            out = record(frames, every=job.effective_every(), run_stats=run_stats)
        return with_attention(out, loaded, words, job.n_images)

    return factory


def load_factory(path: str | os.PathLike, name: str, device: torch.device | str):
    """A factory for GeneratorWorker whose generator loads the checkpoint and returns a LoadedModel."""

    def load() -> Iterator[None]:
        ckpt = load_checkpoint(path, groups=("model", "ema", "autoencoder"))  # a latent model's decoder too
        loaded = LoadedModel(name=name, checkpoint=ckpt, model=ckpt.build_model(device), device=torch.device(device))
        from .estimate import measure

        measure(loaded)  # a 256-px model on a CPU: one timed step, so a run can say how long it will take
        return loaded
        yield  # noqa: unreachable — makes this a generator, so the work happens in the worker's first next()

    return load


def gif_frames(frames: list[RecordedFrame], with_x0: bool = False, gap: int = 4) -> list[np.ndarray]:
    """The x_t grids of the recorded frames, or x_t | x̂_0 side by side (grey x̂_0 where none was predicted yet)."""
    if not with_x0:
        return [f.x for f in frames]
    out = []
    for f in frames:
        x0 = f.x0 if f.x0 is not None else np.full_like(f.x, 128)
        sep = np.zeros((f.x.shape[0], gap) + f.x.shape[2:], np.uint8)
        out.append(np.ascontiguousarray(np.concatenate([f.x, sep, x0], axis=1)))
    return out


def gif_scale(width: int, target: int = 256, most: int = 8) -> int:
    """Nearest-neighbour enlargement so a small grid is at least ``target`` pixels wide in the GIF."""
    return int(max(1, min(most, math.ceil(target / max(1, width)))))


def short_name(path: str | os.PathLike) -> str:
    p = Path(path)
    return p.parent.name if p.name in ("checkpoint.json", "model_index.json") else p.stem  # diffusers: its folder
