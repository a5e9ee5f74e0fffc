"""Setting up a training run, for the app's worker and `diffusion-studio train` alike: the space it trains in (pixels,
or an autoencoder's latents), the sizes that follows, the data captioned and encoded once, and the Trainer built
afresh or resumed from its checkpoint."""
from __future__ import annotations

import dataclasses

from ..core.io.space import LatentSpace, PixelSpace, is_latent_meta, space_from_checkpoint
from ..core.nets.conditioning import with_text
from ..core.nets import text
from ..core.train.latent import LatentTrainer, encode_dataset
from ..core.train.trainer import Trainer
from ..data.captions import attach_captions

Space = PixelSpace | LatentSpace


def run_space(autoencoder: str | None = None, resume=None, device="cpu") -> Space:
    """The space of a run: a resumed checkpoint's own (its embedded autoencoder, which must be ``autoencoder`` when
    that is given too), else the chosen autoencoder's latents, else pixels. ValueError (one line) when they differ."""
    if resume is not None:
        if not is_latent_meta(resume.meta) and autoencoder:
            raise ValueError("autoencoder: the run was trained in pixel space, which a resumed run keeps")
        return space_from_checkpoint(resume, autoencoder or None, device=device)
    return LatentSpace.load(autoencoder, device) if autoencoder else PixelSpace()


def image_shape(space: Space, size: int, channels: int | None) -> tuple[int, int | None]:
    """(side, channels) to load the data at: the autoencoder's own for a latent run."""
    if not space.is_latent:
        return size, channels
    return space.config.image_size, space.config.image_channels


def unet_shape(space: Space, size: int, channels: int) -> tuple[int, int]:
    """(side, channels) of the tensors the UNet denoises: the image's, or the latent's."""
    if not space.is_latent:
        return size, channels
    return space.config.latent_size, space.config.latent_channels


def encode(space: Space, data, flip: bool, info: dict | None = None):
    """The dataset the trainer draws from: the images, or their scaled latents encoded once (with mirror images
    when ``flip``)."""
    return encode_dataset(space, data, flip=flip, info=info) if space.is_latent else data


def make_trainer(space: Space, *args, **kw) -> Trainer:
    """Trainer, or LatentTrainer (decoded previews, the autoencoder in the checkpoint) for a latent run."""
    return LatentTrainer(*args, space=space, **kw) if space.is_latent else Trainer(*args, **kw)


def resume_trainer(space: Space, ckpt, data, **kw) -> Trainer:
    if space.is_latent:
        return LatentTrainer.resume_latent(ckpt, data, space, **kw)
    return Trainer.resume(ckpt, data, **kw)


def text_model_config(model_config, cross_attn: tuple[int, ...] | None = None):
    """The UNet config given cross-attention to the installed default encoder's tokens (at the preset's default
    resolutions, or at ``cross_attn``) and the pooled caption. EncoderMissing / ValueError ("cross_attn: …")."""
    encoder = text.get_encoder(text.DEFAULT_ENCODER)  # read at call time: a test may install a stub
    try:
        return with_text(dataclasses.replace(model_config), encoder.name, encoder.dim, resolutions=cross_attn)
    except ValueError as e:
        raise ValueError(f"cross_attn: {e}") from None


def caption(data) -> list[str]:
    """Caption a text run's data (builtin sets caption themselves; folders by metadata, sidecars or subfolders);
    one line per caption problem, the rest trains. DataError when nothing captions the data."""
    return attach_captions(data)


def caption_info(trainer) -> None:
    """Keep the example captions and words in the checkpoint when the data description is replaced (resume)."""
    table = getattr(trainer, "_text", None)
    if table is not None:
        trainer.data_info = {**trainer.data_info, **table.info()}


def preview_captions(trainer) -> list[str]:
    """The caption of each image of a text run's preview grid, in order (row by row); [] for other runs."""
    table = getattr(trainer, "_text", None)
    if table is None:
        return []
    n = trainer.config.preview_n
    examples = table.examples(n)
    return [examples[i % len(examples)] for i in range(n)] if examples else []


def describe_space(space: Space) -> str:
    """'pixels', or 'latent 4×8×8 (builtin:shapes-ae)' for what the run summary says."""
    if not space.is_latent:
        return "pixels"
    c = space.config
    source = f" ({space.source})" if getattr(space, "source", "") else ""
    return f"latent {c.latent_channels}×{c.latent_size}×{c.latent_size}{source}"
