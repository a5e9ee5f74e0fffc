"""`diffusion-studio info` and `export`: a checkpoint's summary, and a weights-only copy of it for sharing or shipping."""
from __future__ import annotations

import json
import os

from .common import CliError, UsageError, add_command, echo, fmt_duration, plural, writable_folder


def add_info_parser(sub, common) -> None:
    p = add_command(sub, common, "info", help="describe a checkpoint",
                    description="Print a checkpoint's summary: model preset and size, schedule, step, data.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a checkpoint .json, a run folder, a .safetensors or builtin:NAME")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_info)


def add_export_parser(sub, common) -> None:
    p = add_command(sub, common, "export", help="write a weights-only copy of a checkpoint",
                    description="Write the sampling weights (the EMA by default) of a checkpoint with its manifest, "
                                "without optimizer and random-number state: what a shared or shipped model needs.")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint .json, a run folder or a .safetensors")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for checkpoint.json and its weights")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="which weights to keep (default: ema, the ones sampling uses)")
    p.add_argument("--note", default="", help="a line of text kept in the manifest (e.g. how it was trained)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a resumable run checkpoint already in DIR (without it, export refuses: that "
                        "run could no longer be resumed)")
    p.set_defaults(func=cmd_export)


def cmd_info(args) -> int:
    from ..core.io.models import open_checkpoint

    from .latent_setup import autoencoder_info

    if autoencoder_info(args.checkpoint, args.json):  # an autoencoder (AE_DIR, its autoencoder.json, builtin:NAME)
        return 0
    ckpt = open_checkpoint(args.checkpoint)
    meta = ckpt.meta
    if args.json:
        echo(json.dumps(meta, indent=2))
        return 0
    # Every line is composed before the first is printed: a bad field never leaves half a summary on screen.
    lines: list[str] = []
    mc = ckpt.model_config
    group = "ema" if "ema" in ckpt.tensors else "model"
    params = sum(t.numel() for t in ckpt.tensors.get(group, {}).values())
    train = meta.get("train", {}) or {}
    data = meta.get("data", {}) or {}
    classes = f", {mc.num_classes} classes" if mc.num_classes else ""
    names = ckpt.class_names if mc.num_classes else None
    if names:
        classes += f" ({', '.join(map(str, names[:12]))}{', ...' if len(names) > 12 else ''})"
    lines.append(f"checkpoint {ckpt.path}")
    points = len(mc.shape) == 1
    shape = (f"a 2-D model (points in {mc.shape[0]}-D, the geometry lab)" if points
             else f"{mc.image_size}x{mc.image_size}x{mc.in_channels}")
    lines.append(f"model      {mc.preset or 'custom'}: {params:,} parameters, {shape}{classes}")
    lines.append(f"schedule   {ckpt.schedule.describe()}")
    from ..core.io.space import space_label

    lines.append(f"space      {space_label(meta)}")
    if getattr(mc, "text_encoder", None):  # a text model: which encoder its prompts need, and what it was trained to hear
        examples = [c for c in data.get("captions", []) if isinstance(c, str)][:3] if isinstance(data, dict) else []
        said = f"; captions like {'; '.join(repr(c) for c in examples)}" if examples else ""
        lines.append(f"text       prompts through {mc.text_encoder} (cross-attention at "
                     f"{', '.join(f'{r} px' for r in mc.cross_attn_resolutions) or 'the bottleneck'}){said}")
    target = f" of {train['steps']}" if train.get("steps") else ""
    loss = meta.get("last_loss")
    loss_text = f", last loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
    lines.append(f"step       {ckpt.step}{target} (trained {fmt_duration(meta.get('elapsed_s'))}{loss_text})")
    if data:
        n = f", {plural(int(data['n']), 'point' if points else 'image')}" if isinstance(data.get("n"), int) else ""
        lines.append(f"data       {data.get('spec', '?')}{n}")
    if train:
        lines.append(f"training   batch {train.get('batch_size')}, lr {train.get('lr')}, "
                     f"EMA {train.get('ema_decay')}, precision {train.get('precision')}, seed {train.get('seed')}")
    resumable = "optim" in ckpt.tensors and "rng" in ckpt.tensors
    state = "with training state, resumable" if resumable else "weights only"
    lines.append(f"weights    {meta.get('weights', ckpt.path.name)} ({state})")
    lines.append(f"created    {meta.get('created', '?')}")
    for line in lines:
        echo(line)
    return 0



def _resumable(manifest) -> bool:
    """Whether ``manifest`` is (or might be: unreadable, not ours to judge) a checkpoint holding training state."""
    from ..core.io.checkpoint import MAX_MANIFEST_BYTES
    from ..core.errors import CheckpointError
    from ..core.io.safeio import read_regular

    if not os.path.lexists(manifest):
        return False
    try:
        meta = json.loads(read_regular(manifest, MAX_MANIFEST_BYTES))
    except (CheckpointError, ValueError, RecursionError):
        return True  # something is there that export cannot vouch for: do not write over it unasked
    groups = meta.get("groups") if isinstance(meta, dict) else None
    return not isinstance(groups, list) or "optim" in groups


def cmd_export(args) -> int:
    from pathlib import Path

    from ..core.io.checkpoint import save_checkpoint
    from ..core.io.models import open_checkpoint

    ckpt = open_checkpoint(args.checkpoint)
    group = args.weights if args.weights in ckpt.tensors else "model"
    if group not in ckpt.tensors:
        raise CliError(f"{ckpt.path.name}: holds no {args.weights} weights")
    keep = ("step", "model", "schedule", "data", "train", "elapsed_s", "last_loss", "latent")
    meta = {k: ckpt.meta[k] for k in keep if k in ckpt.meta}
    meta["exported"] = {"from_weights": group, "note": args.note}
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"{out}: exists and is not a folder")
    target = out / "checkpoint.json"
    if not args.overwrite and _resumable(target):
        raise UsageError(f"argument --out: {target} is a run's resumable checkpoint (weights, optimizer and random "
                         f"state); exporting over it would end that run; choose another --out, or add --overwrite")
    writable_folder(out)
    # Saved as the "ema" group: loaders sample from it whichever weights it came from.
    kept = {"ema": ckpt.tensors[group]}
    if "autoencoder" in ckpt.tensors:  # a latent model keeps the decoder it was trained with
        kept["autoencoder"] = ckpt.tensors["autoencoder"]
    path = save_checkpoint(out / "checkpoint.json", kept, meta)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    echo(f"exported {group} weights of step {ckpt.step} to {path} ({size / 1e6:.1f} MB)")
    return 0
