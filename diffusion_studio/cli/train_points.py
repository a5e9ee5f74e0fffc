"""`train --data toy:NAME` or `--data points.csv`: a 2-D run of the geometry lab — the same trainer, schedule and
checkpoint format as for images, with the small MLP as the model and the data standardised inside."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.train.recipe import POINTS_RECIPE
from .common import TRAIN_FIELD_FLAGS, UsageError, echo, field_message, plural

MAX_LISTED_PROBLEMS = 20
IMAGE_ONLY = (("--size", "size"), ("--channels", "channels"), ("--autoencoder", "autoencoder"), ("--text", "text"),
              ("--cross-attn", "cross_attn"), ("--flip", "flip"))


def _pick(value, key: str):
    return POINTS_RECIPE[key] if value is None else value


def load(spec: str, n: int | None):
    """The point set of ``spec`` (one line per bad CSV row said, the rest loads) as the trainer's PointDataset."""
    from ..data.errors import DataError
    from ..data.points import PointDataset
    from ..data.specs import load_points

    try:
        points, problems = load_points(spec, n=_pick(n, "points"))
    except DataError as e:
        raise UsageError(f"argument --data: {e}") from None
    for line in problems[:MAX_LISTED_PROBLEMS]:
        echo(f"          skipped {line}")
    if len(problems) > MAX_LISTED_PROBLEMS:
        echo(f"          ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    ds = PointDataset(points, spec)
    classes = f", {ds.num_classes} classes" if ds.labels is not None else ""
    echo(f"data      {spec}: {plural(len(ds), 'point')} in 2-D{classes}; standardised per axis "
         f"(mean {ds.standardiser.mean[0]:.4g}, {ds.standardiser.mean[1]:.4g}; "
         f"std {ds.standardiser.std[0]:.4g}, {ds.standardiser.std[1]:.4g})")
    return ds


def setup_points(args, out: Path, ckpt_path: Path, build_schedule, clear_run):
    """A fresh 2-D run: (trainer, 0)."""
    from ..core.nets.mlp import MLPConfig
    from ..core.train.config import TrainConfig
    from ..jobs.runs import make_trainer, run_space

    for flag, name in IMAGE_ONLY:
        if getattr(args, name, None):
            raise UsageError(f"argument {flag}: not for 2-D points ({args.data} is a point set)")
    if args.model not in (None, "mlp"):
        raise UsageError(f"argument --model: 2-D points train the mlp network, not the {args.model} UNet")
    schedule = build_schedule(_pick(args.schedule, "schedule"), _pick(args.T, "T"), args.beta_start, args.beta_end)
    minutes = args.minutes
    steps = None if minutes is not None else _pick(args.steps, "steps")
    cfg = TrainConfig(
        steps=steps, minutes=minutes, batch_size=_pick(args.batch, "batch"), lr=_pick(args.lr, "lr"),
        warmup_steps=_pick(args.warmup, "warmup"), lr_schedule=_pick(args.lr_schedule, "lr_schedule"),
        ema_decay=_pick(args.ema_decay, "ema_decay"), loss_weighting=_pick(args.loss_weighting, "loss_weighting"),
        snr_gamma=_pick(args.snr_gamma, "snr_gamma"), seed=args.seed or 0, device=args.device or "auto",
        precision=args.precision or "auto", class_conditional=bool(args.class_conditional),
        log_every=args.log_every or 100, checkpoint_every=args.checkpoint_every or 0, preview_every=0,
    )
    if args.p_uncond is not None:
        cfg.p_uncond = args.p_uncond
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(field_message(e, TRAIN_FIELD_FLAGS)) from None
    ds = load(args.data, args.points)
    if cfg.batch_size > len(ds):
        if args.batch is not None:
            raise UsageError(f"argument --batch: {cfg.batch_size} is larger than the set ({len(ds)} points)")
        cfg.batch_size = len(ds)
    num_classes = None
    if cfg.class_conditional:
        if ds.labels is None:
            raise UsageError(f"argument --class-conditional: {args.data} has no labels (a CSV's third column)")
        num_classes = ds.num_classes
    model_config = MLPConfig(num_classes=num_classes, prediction=_pick(args.prediction, "prediction"),
                             preset="mlp")
    if args.overwrite and out.is_dir():
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {**ds.to_dict(), "spec": _absolute(args.data)}
    if ds.class_names:
        info["class_names"] = list(ds.class_names)
    return make_trainer(run_space(), model_config, schedule, ds, cfg, out=ckpt_path, data_info=info), 0


def _absolute(spec: str) -> str:
    """A CSV's path made absolute, so a resume from another folder finds it; toy:NAME as it is."""
    return spec if spec.strip().lower().startswith("toy:") else str(Path(spec).expanduser().resolve())
