"""Training in an autoencoder's latent space, the worker's side (Qt-free): load the autoencoder, encode the dataset
once, size the UNet for the latents, and keep the decoder in the checkpoint. The form's row is training_space.py."""
from __future__ import annotations


# ---- in the worker thread (Qt-free) ---------------------------------------------------------------------------------
def run_space(autoencoder: str | None, resume, device="cpu"):
    """The run's LatentSpace: the resumed checkpoint's embedded one, or the chosen autoencoder; None for pixels."""
    from ..core.io.space import LatentSpace, is_latent_meta, space_from_checkpoint

    if resume is not None:
        return space_from_checkpoint(resume, device=device) if is_latent_meta(resume.meta) else None
    return LatentSpace.load(autoencoder, device) if autoencoder else None


def image_shape(space, size: int, channels: int | None) -> tuple[int, int | None]:
    """(side, channels) to load the data at: the autoencoder's own for a latent run."""
    if space is None:
        return size, channels
    return space.config.image_size, space.config.image_channels


def unet_shape(space, size: int, channels: int) -> tuple[int, int]:
    if space is None:
        return size, channels
    return space.config.latent_size, space.config.latent_channels


def encode(space, data, flip: bool):
    if space is None:
        return data
    from ..core.train.latent import encode_dataset

    return encode_dataset(space, data, flip=flip)


def make_trainer(space, *args, **kw):
    from ..core.train.latent import LatentTrainer
    from ..core.train.trainer import Trainer

    return Trainer(*args, **kw) if space is None else LatentTrainer(*args, space=space, **kw)


def resume_trainer(space, ckpt, data, **kw):
    from ..core.train.latent import LatentTrainer
    from ..core.train.trainer import Trainer

    if space is None:
        return Trainer.resume(ckpt, data, **kw)
    return LatentTrainer.resume_latent(ckpt, data, space, **kw)
