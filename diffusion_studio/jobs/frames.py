"""A sampler's frames made ready to show (Qt-free, in the worker): small uint8 grids of x_t, x̂₀ and ε — decoded first
for a latent model — with the step's numbers and, for a text model, its per-word attention maps.

A recorded frame holds a few hundred KB at most, never a tensor; the steps in between only report progress
(StepTicks), so Stop acts after the current step whatever "preview every N" is.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..core.diffusion.run_stats import RunStats, StepStats
from ..core.diffusion.samplers import Frame
from ..core.nets.conditioning import AttentionRecorder
from ..data.convert import make_grid, to_uint8

TARGET_FRAMES = 50      # "preview every: auto" records about this many frames
EPS_SCALE = 3.0         # ε ~ N(0, I) is shown as ε/3, so ±3σ spans black to white
LATENT_SCALE = 3.0      # scaled latents have std ≈ 1: z/3 maps ±3σ to black..white, as ε is shown
LATENT_ROWS = 4         # images whose latent channels a latent frame keeps
SPECIAL_TOKENS = {"[CLS]", "[SEP]", "[PAD]"}
MAX_ATTENTION_IMAGES = 16


@dataclass(frozen=True)
class AttentionMaps:
    """Per-word cross-attention at one step: maps (images, words, H, W) uint8, each map scaled to its own maximum;
    peaks (images, words) float32, that maximum (the largest share of a pixel's attention on the word)."""

    words: list[str]
    maps: np.ndarray
    peaks: np.ndarray | None = None


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
    stats: StepStats | None = None        # the step's numbers for the run curves (None for the starting noise)
    attention: AttentionMaps | None = None  # per-word cross-attention (text models)

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
class LatentFrame(RecordedFrame):
    """A recorded frame of a latent model: x and x0 are decoded pictures; ``latent`` is z_t's channels, one row per
    image (first LATENT_ROWS images), and ``eps`` the predicted ε's channels the same way."""

    latent: np.ndarray | None = None


@dataclass(frozen=True)
class StepTick:
    """A reverse step that was not recorded: only progress (and a chance for the worker to check for Stop)."""

    step: int
    n_steps: int
    elapsed_s: float
    stats: StepStats | None = None


@dataclass(frozen=True)
class PromptNotes:
    """What the encoder made of a run's prompt, sent before its first frame: the tokens it kept ([CLS] … [SEP]) and
    one-line notes ("prompt: the encoder cannot represent '…'"); ``error``, a one-line reason, when the prompt cannot
    be sampled at all (then nothing follows: bad input, not a failure to log)."""

    words: list[str]
    notes: list[str]
    error: str = ""


@dataclass(frozen=True)
class ChosenPrecision:
    """The precision a run's network computes in, sent before its first frame, with why ('bf16 (measured for this
    model and batch: fp32 12.3 ms, bf16 8.1 ms per step)': core/runtime/calibrate.FastPath.explain)."""

    precision: str
    why: str


def auto_every(n_steps: int, target: int = TARGET_FRAMES) -> int:
    return max(1, math.ceil(n_steps / target))


def expected_frames(n_steps: int, every: int) -> int:
    """Frames a full run records: the start, every N-th step, and always the last."""
    return 1 + n_steps // every + (1 if n_steps % every else 0)


def grid_u8(x: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [−1, 1] → one uint8 grid, the way every grid of the Sampling view is made."""
    return to_uint8(make_grid(x.detach().float().cpu(), nrow=nrow))


def channel_grid(z: torch.Tensor, rows: int = LATENT_ROWS, scale: float = LATENT_SCALE) -> np.ndarray:
    """(N, C, h, w) → one grey uint8 grid: a row per image (the first ``rows``), a column per channel, z/scale."""
    z = z[:rows].detach().float().cpu()
    n, c, h, w = z.shape
    tiles = (z / scale).clamp(-1, 1).reshape(n * c, 1, h, w)
    return to_uint8(make_grid(tiles, nrow=c, padding=1))


def make_frame(space, f: Frame, nrow: int | None, elapsed_s: float, stats) -> RecordedFrame:
    """The recorded frame of Frame ``f`` in ``space``: pixel grids, or (latent) decoded pictures and channel grids."""
    if not space.is_latent:
        return RecordedFrame(
            step=f.step, n_steps=f.n_steps, t=f.t, t_model=f.t_model, x=grid_u8(f.x, nrow),
            x0=None if f.x0_pred is None else grid_u8(f.x0_pred, nrow),
            eps=None if f.eps_pred is None else grid_u8(f.eps_pred / EPS_SCALE, nrow),
            elapsed_s=elapsed_s, stats=stats)
    return LatentFrame(
        step=f.step, n_steps=f.n_steps, t=f.t, t_model=f.t_model, x=grid_u8(space.decode(f.x), nrow),
        x0=None if f.x0_pred is None else grid_u8(space.decode(f.x0_pred), nrow),
        eps=None if f.eps_pred is None else channel_grid(f.eps_pred, scale=EPS_SCALE),
        elapsed_s=elapsed_s, stats=stats, latent=channel_grid(f.x))


def record(frames: Iterator[Frame], space, every: int = 1, nrow: int | None = None,
           run_stats: RunStats | None = None) -> Iterator[RecordedFrame | StepTick]:
    """The sampler's per-step Frames as recorded frames at the start, every ``every``-th step and the last step, and
    StepTicks in between (in the worker thread). The sampler runs with every=1 so the worker can stop after any step,
    not only after a recorded one; closing this closes the sampler."""
    t0 = time.perf_counter()
    try:
        for f in frames:
            stats = run_stats.update(f) if run_stats is not None else None
            if not (f.step == 0 or f.step == f.n_steps or f.step % every == 0):
                yield StepTick(f.step, f.n_steps, time.perf_counter() - t0, stats)
                continue
            yield make_frame(space, f, nrow, time.perf_counter() - t0, stats)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def with_attention(frames: Iterator, loaded, words: list[str] | None, n_images: int) -> Iterator:
    """Attach the per-word attention maps of the step that made each recorded frame (the conditional half only).
    A latent model's maps are upsampled to its decoded pictures' size."""
    if words is None:
        yield from frames
        return
    space = loaded.space
    size = space.config.image_size if space.is_latent else loaded.model.config.image_size
    keep = [i for i, w in enumerate(words) if w not in SPECIAL_TOKENS]
    with AttentionRecorder(loaded.model) as rec:
        for item in frames:
            if isinstance(item, RecordedFrame) and item.t_model is not None:
                maps = rec.maps(size, rows=min(MAX_ATTENTION_IMAGES, n_images))
                if maps is not None:
                    m = maps[:, keep].numpy()
                    peaks = m.max(axis=(2, 3))
                    m = m / np.maximum(peaks[..., None, None], 1e-8)
                    item = dataclasses.replace(item, attention=AttentionMaps(
                        [words[i] for i in keep], (m * 255).round().astype(np.uint8), peaks.astype(np.float32)))
            yield item


def gif_picture(space, frame: Frame, n: int) -> torch.Tensor:
    """What a GIF frame shows of the first n samples: x_t in pixel space; in latent space the decoded x̂_0
    (the decoder's picture of the model's current guess; the start frame, before any guess, decodes z_T)."""
    if not space.is_latent:
        return frame.x[:n].clamp(-1, 1).cpu()
    z = frame.x0_pred if frame.x0_pred is not None and not frame.is_final else frame.x
    return space.decode(z[:n]).cpu()


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
