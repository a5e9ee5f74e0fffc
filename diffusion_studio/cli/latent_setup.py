"""`train --autoencoder AE_DIR`: the latent space of a run, its image and UNet sizes, and the dataset encoded once."""
from __future__ import annotations

import time

from .common import CliError, UsageError, echo


def add_latent_option(group) -> None:
    group.add_argument("--autoencoder", metavar="AE",
                       help="train in the latent space of this autoencoder (a folder from train-autoencoder, or "
                            "builtin:shapes-ae): the dataset is encoded once and the UNet denoises the scaled "
                            "latents; sampling decodes them (default: pixel space)")


def load_space(args, device: str = "cpu"):
    """The run's LatentSpace when --autoencoder is given, else None."""
    spec = getattr(args, "autoencoder", None)
    if spec is None:
        return None
    from ..core.io.space import LatentSpace

    return LatentSpace.load(spec, device)


def image_size(space, size_arg: int | None, default: int) -> int:
    """The image side to load the data at: the autoencoder's own (a --size that differs is a usage error)."""
    if space is None:
        return default if size_arg is None else size_arg
    ae = space.config.image_size
    if size_arg is not None and size_arg != ae:
        raise UsageError(f"argument --size: the autoencoder takes {ae}x{ae} images, not {size_arg}x{size_arg} "
                         f"(drop --size, or train an autoencoder at {size_arg} px)")
    return ae


def unet_shape(space, size: int, channels: int) -> tuple[int, int]:
    """(side, channels) of the tensors the UNet denoises: the image's, or the latent's."""
    if space is None:
        return size, channels
    return space.config.latent_size, space.config.latent_channels


def check_channels(space, ds) -> None:
    if space is not None and ds.channels != space.config.image_channels:
        raise UsageError(f"argument --channels: the autoencoder takes {space.config.image_channels}-channel images, "
                         f"the data has {ds.channels} (give --channels {space.config.image_channels})")


def encode(space, ds, flip: bool, info: dict):
    """The dataset as scaled latents (encoded once, with mirror images when --flip), or ``ds`` in pixel space."""
    if space is None:
        return ds
    from ..core.train.latent import encode_dataset

    t0 = time.perf_counter()
    data = encode_dataset(space, ds, flip=flip, info=info)
    std = float(data.images.std())
    echo(f"latent    {space.describe()}")
    echo(f"          encoded {len(ds):,} images{' and their mirror images' if flip else ''} once in "
         f"{time.perf_counter() - t0:.1f}s; latent std {std:.3f} (≈ 1 after scaling)")
    return data


def make_trainer(space, *args, **kw):
    """Trainer, or LatentTrainer (decoded previews, the autoencoder in the checkpoint) for a latent run."""
    if space is None:
        from ..core.train.trainer import Trainer

        return Trainer(*args, **kw)
    from ..core.train.latent import LatentTrainer

    return LatentTrainer(*args, space=space, **kw)


# ---- resume ---------------------------------------------------------------------------------------------------------
def resume_space(args, ckpt):
    """A resumed run's space from its checkpoint (its embedded autoencoder); --autoencoder must name the same one."""
    from ..core.io.space import is_latent_meta, space_from_checkpoint

    if not is_latent_meta(ckpt.meta):
        if getattr(args, "autoencoder", None) is not None:
            raise UsageError("argument --autoencoder: the run was trained in pixel space, which a resumed run keeps")
        return None
    try:
        return space_from_checkpoint(ckpt, getattr(args, "autoencoder", None))
    except ValueError as e:
        raise CliError(str(e)) from None


def resume_trainer(space, ckpt, data, out, **overrides):
    from ..core.train.latent import LatentTrainer
    from ..core.train.trainer import Trainer

    if space is None:
        return Trainer.resume(ckpt, data, out=out, **overrides)
    return LatentTrainer.resume_latent(ckpt, data, space, out=out, **overrides)


def autoencoder_info(spec: str, as_json: bool) -> bool:
    """Print an autoencoder's summary and return True when ``spec`` names one; False for anything else."""
    import json
    from pathlib import Path

    from ..core.io.autoencoder_io import AE_MANIFEST, load_autoencoder
    from .common import fmt_duration

    text = str(spec).strip()
    p = Path(text).expanduser()
    if text.lower().startswith("builtin:"):
        from ..resources import models_dir

        name = text.split(":", 1)[1].strip()
        if not name or "/" in name or ".." in name or not (models_dir() / name / AE_MANIFEST).is_file():
            return False
    elif not ((p.is_dir() and (p / AE_MANIFEST).is_file()) or (p.name == AE_MANIFEST and p.is_file())):
        return False
    ae = load_autoencoder(text)
    if as_json:
        echo(json.dumps(ae.meta, indent=2))
        return True
    c, meta = ae.config, ae.meta
    m = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    n = sum(t.numel() for t in ae.model.parameters())
    psnr = ", ".join(f"{k} {v:.2f} dB" for k, v in (("train", m.get("psnr_train_db")),
                                                    ("held-out", m.get("psnr_heldout_db")))
                     if isinstance(v, (int, float)))
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    echo(f"autoencoder {ae.source}")
    echo(f"network     {n:,} parameters: {c.image_size}x{c.image_size}x{c.image_channels} ↔ {c.latent_channels}x"
         f"{c.latent_size}x{c.latent_size} (f = {c.factor})")
    echo(f"scale       {ae.scale_factor:.5f} (1/std of the encoded training images)")
    echo(f"fingerprint {ae.fingerprint}")
    echo(f"trained     {meta.get('step', '?')} steps in {fmt_duration(meta.get('elapsed_s'))} on "
         f"{data.get('spec', '?')}" + (f"; PSNR {psnr}" if psnr else ""))
    return True
