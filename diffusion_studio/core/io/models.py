"""Opening any model a user names — builtin:NAME, one of our checkpoints (its .json, its folder, a lone .safetensors)
or a diffusers pipeline folder — as a Checkpoint, and building it for sampling as a LoadedModel."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from ...resources import resolve_model_spec
from ..diffusion.schedule import NoiseSchedule
from ..nets.unet import UNet, count_parameters
from .checkpoint import Checkpoint, load_checkpoint
from .diffusers import diffusers_folder, load_diffusers
from .space import LatentSpace, PixelSpace, is_latent_meta, space_from_checkpoint

SAMPLING_GROUPS = ("model", "ema", "autoencoder")  # what sampling needs: the weights and a latent model's decoder


def open_checkpoint(spec: str | os.PathLike, groups: tuple[str, ...] | None = None) -> Checkpoint:
    """The checkpoint ``spec`` names; a diffusers folder (model_index.json) is converted exactly. Never unpickles."""
    path = resolve_model_spec(spec)
    folder = diffusers_folder(path)
    if folder is not None:
        return load_diffusers(folder, groups)
    return load_checkpoint(path, groups)


@dataclass(eq=False)
class LoadedModel:
    """A checkpoint ready to sample from: the network (EMA weights, eval mode, on the device), its own schedule and
    the space it runs in (pixels, or the latent space of its embedded autoencoder, built once on first use)."""

    name: str
    checkpoint: Checkpoint
    model: UNet
    device: torch.device
    schedule: NoiseSchedule = field(init=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.schedule = self.checkpoint.schedule

    @cached_property
    def space(self) -> PixelSpace | LatentSpace:
        return space_from_checkpoint(self.checkpoint, device=self.device)

    @property
    def config(self):
        return self.model.config

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def is_latent(self) -> bool:
        """From the manifest alone (cheap, any thread); ``space`` builds the decoder."""
        return is_latent_meta(self.checkpoint.meta)

    @property
    def is_text(self) -> bool:
        return bool(getattr(self.config, "text_encoder", None))

    def summary(self) -> str:
        c = self.config
        preset = c.preset or "custom"
        return (f"{self.name}: {preset} UNet, {count_parameters(self.model) / 1e6:.2f}M parameters, "
                f"{c.image_size}×{c.image_size}×{c.in_channels}, {self.schedule.describe()}, step {self.checkpoint.step}")


def load_model(spec: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None) -> LoadedModel:
    """Open ``spec`` with what sampling needs and build its network on ``device``."""
    ckpt = open_checkpoint(spec, groups=SAMPLING_GROUPS)
    return LoadedModel(name=name or short_name(ckpt.path), checkpoint=ckpt, model=ckpt.build_model(device),
                       device=torch.device(device))


def short_name(path: str | os.PathLike) -> str:
    """A model's name for lists and titles: its run folder's name, or the file's stem."""
    p = Path(path)
    return p.parent.name if p.name in ("checkpoint.json", "model_index.json") else p.stem  # diffusers: its folder
