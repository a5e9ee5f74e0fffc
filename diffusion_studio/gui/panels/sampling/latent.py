"""Sampling a latent model: frames decoded in the worker (x_t and x̂₀ panes show pictures), and a "Latent" tab with
the latent z_t itself, channel by channel."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ....core.train.latent import is_latent_meta, space_from_checkpoint
from ....core.diffusion.run_stats import RunStats
from ....core.diffusion.samplers import Frame
from ....data.convert import make_grid, to_uint8
from ...widgets.imageview import ImagePane
from ....jobs.sampling import EPS_SCALE, RecordedFrame, StepTick, grid_u8, record

LATENT_SCALE = 3.0        # scaled latents have std ≈ 1: z/3 maps ±3σ to black..white, as ε is shown
LATENT_ROWS = 4           # images whose channels the Latent tab shows
NOTE = "The decoder runs once per shown frame (for z_t and x̂₀), not per step."
NOTE_TIP = ("A latent model: the UNet denoises the latent z_t (shown here channel by channel); the decoder "
            "D(z / scale) turns z_t and the predicted x̂₀ into the pictures in the panes. It runs only for the frames "
            "that are recorded and shown, not at every reverse step, so the pictures cost little.")


@dataclass(frozen=True)
class LatentFrame(RecordedFrame):
    """A recorded frame of a latent model: x and x0 are decoded pictures; ``latent`` is z_t's channels, one row per
    image (first LATENT_ROWS images), and ``eps`` the predicted ε's channels the same way."""

    latent: np.ndarray | None = None


def latent_space_of(loaded):
    """The LatentSpace of a LoadedModel (built once, then kept on it), or None for a pixel-space model."""
    cache = loaded.__dict__
    if "_latent_space" not in cache:
        ckpt = loaded.checkpoint
        cache["_latent_space"] = (space_from_checkpoint(ckpt, device=loaded.device)
                                  if is_latent_meta(ckpt.meta) else None)
    return cache["_latent_space"]


def channel_grid(z: torch.Tensor, rows: int = LATENT_ROWS, scale: float = LATENT_SCALE) -> np.ndarray:
    """(N, C, h, w) → one grey uint8 grid: a row per image (the first ``rows``), a column per channel, z/scale."""
    z = z[:rows].detach().float().cpu()
    n, c, h, w = z.shape
    tiles = (z / scale).clamp(-1, 1).reshape(n * c, 1, h, w)
    return to_uint8(make_grid(tiles, nrow=c, padding=1))


def latent_record(frames: Iterator[Frame], space, every: int = 1, nrow: int | None = None,
                  run_stats: RunStats | None = None) -> Iterator[LatentFrame | StepTick]:
    """sampling_frames.record for a latent model: each recorded frame decodes z_t and x̂₀ (in the worker)."""
    def make(f: Frame, nrow, elapsed_s: float, stats) -> LatentFrame:
        return LatentFrame(
            step=f.step, n_steps=f.n_steps, t=f.t, t_model=f.t_model,
            x=grid_u8(space.decode(f.x), nrow),
            x0=None if f.x0_pred is None else grid_u8(space.decode(f.x0_pred), nrow),
            eps=None if f.eps_pred is None else channel_grid(f.eps_pred, scale=EPS_SCALE),
            elapsed_s=elapsed_s, stats=stats, latent=channel_grid(f.x))

    return record(frames, every, nrow, run_stats, make=make)


class LatentView(QWidget):
    """The Sampling view's "Latent" tab: z_t's channels at the frame shown, and what the panes mean for a latent
    model. For a pixel model it says there is no latent."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("latentView")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.pane = ImagePane("z_t channels", min_size=60)
        self.pane.setToolTip("The latent z_t the UNet denoises: one row per image (the first four), one column per "
                             "latent channel, shown as z/3 on grey (±3 std spans black to white)")
        self.note = QLabel("A latent model's z_t shows here.")
        self.note.setObjectName("latentNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.pane, 1)
        lay.addWidget(self.note)
        # Its size must not push the Sampling view's pane grid: the grid shares the height out evenly.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)

    def show_frame(self, f: RecordedFrame, panel=None) -> None:
        """Show frame ``f``'s latent; for a latent frame also retitle the panel's panes to say what they show."""
        if not isinstance(f, LatentFrame) or f.latent is None:
            self.pane.clear_image()
            self.pane.set_title("z_t channels (pixel model: none)")
            self.note.setText("A pixel model: no latent.")
            self.note.setToolTip("This model denoises pixels directly. Train one in an autoencoder's latent space "
                                 "(Training ▸ Space ▸ latent) to see its z_t here.")
            return
        self.pane.show_u8(f.latent)
        self.pane.set_title(f"z_t channels (t = {f.paper_t})" if not f.is_final else "z₀ channels, the sample")
        self.note.setText(NOTE)
        self.note.setToolTip(NOTE_TIP)
        if panel is not None:
            at = "none yet" if f.t_model is None else f"at t = {f.t_model + 1}"
            panel.x_pane.set_title("decoded z₀: the sample" if f.is_final else f"decoded z_t (t = {f.paper_t})")
            panel.x0_pane.set_title(f"decoded x̂₀ ({at})")
            panel.eps_pane.set_title(f"predicted ε channels ÷ {EPS_SCALE:g} ({at})")


def add_latent_tab(tabs) -> LatentView:
    view = LatentView()
    tabs.add_tab(view, "Latent", "A latent model's z_t, channel by channel; the panes show its decoded pictures",
                 applies=lambda loaded: is_latent_meta(loaded.checkpoint.meta))
    return view
