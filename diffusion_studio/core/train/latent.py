"""Training in an autoencoder's latent space: the dataset encoded once (LatentImages), and the Trainer whose previews
are decoded and whose checkpoints carry the autoencoder (LatentTrainer). The space itself: core/io/space.py."""
from __future__ import annotations

from typing import Any

import torch

from ..io.checkpoint import Checkpoint
from ..io.space import SECTION, LatentSpace
from .autoencoder import encode_all
from .trainer import TensorImages, Trainer


# ---- the dataset, encoded once -------------------------------------------------------------------------------------
class LatentImages(TensorImages):
    """A dataset's scaled latents, encoded once; mirrored images get their own encodings (a latent's flip is not
    the latent of the flipped image)."""

    def __init__(self, latents: torch.Tensor, flipped: torch.Tensor | None, labels, info: dict[str, Any],
                 source=None):
        super().__init__(latents, labels, spec=str(info.get("spec", "latent")))
        self.flipped = flipped
        self.info = dict(info)
        self.class_names = info.get("class_names")
        self.source = source  # the image dataset: captions and other per-image facts are read from it

    def __getattr__(self, name: str):
        source = self.__dict__.get("source")
        if source is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(source, name)

    def batch(self, indices, device=None, generator=None, flip=False):
        x = self.images[indices]
        if flip and self.flipped is not None:
            mask = torch.rand(len(indices), generator=generator) < 0.5
            x = torch.where(mask[:, None, None, None], self.flipped[indices], x)
        return x.to(device) if device is not None else x

    def to_dict(self) -> dict[str, Any]:
        return dict(self.info)


def encode_dataset(space: LatentSpace, data, flip: bool = False, batch_size: int = 256,
                   info: dict[str, Any] | None = None) -> LatentImages:
    """Encode every image of ``data`` (and its mirror image when ``flip``) once, scaled; latents kept on the CPU."""
    c = space.config
    size, channels = getattr(data, "size", None), getattr(data, "channels", None)
    if size is not None and (size != c.image_size or channels != c.image_channels):
        raise ValueError(f"data: {size}x{size}x{channels} images, but the autoencoder takes {c.image_size}x"
                         f"{c.image_size}x{c.image_channels}")
    dev = space.device
    z = encode_all(space.model, data, batch_size, dev) * space.scale_factor
    zf = encode_all(space.model, data, batch_size, dev, flip=True) * space.scale_factor if flip else None
    base = dict(info) if info is not None else (dict(data.to_dict()) if hasattr(data, "to_dict") else
                                                {"spec": getattr(data, "spec", "unknown"), "n": len(data)})
    names = getattr(data, "class_names", None)
    if names and "class_names" not in base:
        base["class_names"] = list(names)
    return LatentImages(z, zf, getattr(data, "labels", None), base, source=data)


# ---- training on latents -------------------------------------------------------------------------------------------
class LatentTrainer(Trainer):
    """The ordinary Trainer on encoded data; previews are decoded and checkpoints carry the autoencoder."""

    space: LatentSpace | None = None

    def __init__(self, *args, space: LatentSpace | None = None, **kw):
        super().__init__(*args, **kw)
        self.space = space

    def preview(self, n: int | None = None, seed: int | None = None) -> torch.Tensor:
        z = super().preview(n, seed)
        if self.space is None:
            return z
        return self.space.decode(z).cpu()

    def checkpoint_state(self):
        tensors, meta = super().checkpoint_state()
        if self.space is not None:
            tensors.update(self.space.tensors())
            meta[SECTION] = self.space.to_meta()
        return tensors, meta

    @classmethod
    def resume_latent(cls, checkpoint: Checkpoint, data, space: LatentSpace, out=None, **overrides):
        trainer = cls.resume(checkpoint, data, out=out, **overrides)
        trainer.space = space
        return trainer


def check_unet_fits(model_config, space: LatentSpace) -> None:
    """A UNet for this space: in_channels = latent channels, image_size = latent side (ValueError otherwise)."""
    c, s = space.config.latent_channels, space.config.latent_size
    if model_config.in_channels != c or model_config.image_size != s:
        raise ValueError(f"model: a {model_config.image_size}px {model_config.in_channels}-channel UNet does not fit "
                         f"{c}x{s}x{s} latents")
