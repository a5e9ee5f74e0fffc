"""`diffusion-studio import`: a diffusers DDPM folder converted into this project's own checkpoint, for sharing."""
from __future__ import annotations

from pathlib import Path

from .common import CliError, UsageError, add_command, echo, writable_folder


def add_import_parser(sub, common) -> None:
    p = add_command(
        sub, common, "import", help="convert a diffusers DDPM folder into a checkpoint",
        description="Convert a diffusers pipeline folder (model_index.json, unet/config.json + "
                    "unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json) holding a DDPM-style "
                    "UNet2DModel, such as google/ddpm-cifar10-32 or google/ddpm-church-256, into a Diffusion Studio "
                    "checkpoint: the same ε_θ and schedule, with the scheduler's σ_t² and x̂_0 clipping as the "
                    "sampling defaults. 'sample', 'info' and the app also open such a folder directly. Only "
                    "safetensors weights are read: a folder with .bin (pickle) weights is refused.",
        epilog="example: diffusion-studio import ~/models/ddpm-cifar10-32 --out models/ddpm-cifar10",
    )
    p.add_argument("folder", metavar="DIR", help="the diffusers folder (or its model_index.json)")
    p.add_argument("--out", required=True, metavar="CKPT",
                   help="where to write: NAME.json (plus its weights file beside it) or a folder "
                        "(FOLDER/checkpoint.json)")
    p.set_defaults(func=cmd_import)


def cmd_import(args) -> int:
    from ..core.io.checkpoint import manifest_path, save_checkpoint
    from ..core.io.diffusers import diffusers_folder, load_diffusers

    folder = diffusers_folder(Path(args.folder).expanduser())
    if folder is None:
        raise CliError(f"{args.folder}: not a diffusers pipeline folder (no model_index.json in it)")
    out = Path(args.out).expanduser()
    target = out if out.suffix == ".json" else out / "checkpoint.json"
    if manifest_path(target).exists():
        raise UsageError(f"argument --out: {manifest_path(target)} already exists; choose another --out")
    writable_folder(target.parent)  # before the weights are converted
    ckpt = load_diffusers(folder)
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "format_version", "groups")}
    target.parent.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(target, ckpt.tensors, meta)
    mc, s = ckpt.model_config, ckpt.meta["sampling"]
    echo(f"imported  {folder}: {ckpt.meta['source']['parameters']:,} parameters, {mc.image_size}x{mc.image_size}x"
         f"{mc.in_channels}, {ckpt.schedule.describe()}")
    echo(f"sampling  σ_t² = {'β̃_t' if s['variance'] == 'beta_tilde' else 'β_t'}"
         f"{', x̂_0 clipped to [-1, 1]' if s['clip_x0'] else ''} (the scheduler's settings)")
    echo(f"wrote     {path}")
    return 0
