"""`train --autoencoder AE_DIR` and `info` of an autoencoder: the CLI's checks and lines over jobs/runs.py."""
from __future__ import annotations

import time

from .common import CliError, UsageError, echo


def add_latent_option(group) -> None:
    group.add_argument("--autoencoder", metavar="AE",
                       help="train in the latent space of this autoencoder (a folder from train-autoencoder, or "
                            "builtin:shapes-ae): the dataset is encoded once and the UNet denoises the scaled "
                            "latents; sampling decodes them (default: pixel space)")


def load_space(args, device: str = "cpu"):
    """The run's space: the --autoencoder's latents, or pixels."""
    from ..jobs.runs import run_space

    return run_space(getattr(args, "autoencoder", None), device=device)


def image_size(space, size_arg: int | None, default: int) -> int:
    """The image side to load the data at: the autoencoder's own (a --size that differs is a usage error)."""
    if not space.is_latent:
        return default if size_arg is None else size_arg
    ae = space.config.image_size
    if size_arg is not None and size_arg != ae:
        raise UsageError(f"argument --size: the autoencoder takes {ae}x{ae} images, not {size_arg}x{size_arg} "
                         f"(drop --size, or train an autoencoder at {size_arg} px)")
    return ae


def check_channels(space, ds) -> None:
    if space.is_latent and ds.channels != space.config.image_channels:
        raise UsageError(f"argument --channels: the autoencoder takes {space.config.image_channels}-channel images, "
                         f"the data has {ds.channels} (give --channels {space.config.image_channels})")


def encode(space, ds, flip: bool, info: dict):
    """The dataset as scaled latents (encoded once, with mirror images when --flip), said in two lines; or ``ds``."""
    from ..jobs.runs import encode as encode_data

    if not space.is_latent:
        return ds
    t0 = time.perf_counter()
    data = encode_data(space, ds, flip, info)
    std = float(data.images.std())
    echo(f"latent    {space.describe()}")
    echo(f"          encoded {len(ds):,} images{' and their mirror images' if flip else ''} once in "
         f"{time.perf_counter() - t0:.1f}s; latent std {std:.3f} (≈ 1 after scaling)")
    return data


def resume_space(args, ckpt):
    """A resumed run's space from its checkpoint (its embedded autoencoder); --autoencoder must name the same one."""
    from ..core.errors import CheckpointError
    from ..jobs.runs import run_space

    try:
        return run_space(getattr(args, "autoencoder", None), resume=ckpt)
    except CheckpointError as e:
        raise CliError(str(e)) from None
    except ValueError as e:
        raise UsageError(f"argument --{e}") from None


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
