"""Sets up a `train` run: checks the command line against the data and the checkpoint, then builds the Trainer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.train.recipe import DEFAULT_SIZE, RECIPE, conditions_on_labels, natural_size, recipe_for
from .common import (
    BETA_RANGE_KINDS, TRAIN_FIELD_FLAGS, CliError, Lines, UsageError, check_device, echo, field_message, make_bar,
    one_line, plural, wants_bar,
)
from .text_setup import prepare_captions, text_model_config

# The recipe shared with the GUI (core/train/recipe.py); the image size defaults to the data's natural size.
TRAIN_DEFAULTS: dict[str, Any] = dict(
    **RECIPE, size=DEFAULT_SIZE, steps=None, device="auto", precision="auto", layout="auto", seed=0, log_every=10,
    checkpoint_every=500, preview_every=0,
)
MAX_LISTED_FAILURES = 50


# ---- data -----------------------------------------------------------------------------------------------------------
def _load_data(spec: str, size: int, channels: int | None, bar: bool):
    from ..data import load_dataset

    state: dict[str, Any] = {"bar": None}
    lines = Lines(not bar, delay=True)

    def progress(p) -> None:
        if bar:
            if state["bar"] is None:
                state["bar"] = make_bar(total=p.total, desc="loading images", unit="file", leave=False)
            b = state["bar"]
            if p.total is not None and b.total != p.total:
                b.total = p.total
            b.update(p.done - b.n)
        else:
            lines(f"loading images: {p.done}/{p.total if p.total is not None else '?'} files "
                  f"({p.ok} loaded, {p.failed} failed)")

    try:
        return load_dataset(spec, size, channels, progress=progress)
    finally:
        if state["bar"] is not None:
            state["bar"].close()


def _describe_data(ds) -> None:
    classes = f", {ds.num_classes} classes" if ds.labels is not None else ""
    echo(f"data      {ds.spec}: {plural(len(ds), 'image')}, {ds.size}x{ds.size}, "
         f"{plural(ds.channels, 'channel')}{classes}")
    report = getattr(ds, "report", None)
    if report is not None and (report.failed or report.skipped_non_images):
        echo(f"          {report.summary()}")
        for err in report.failed[:MAX_LISTED_FAILURES]:
            echo(f"          skipped {one_line(err)}")
        if len(report.failed) > MAX_LISTED_FAILURES:
            echo(f"          ... and {len(report.failed) - MAX_LISTED_FAILURES} more")


def _absolute_spec(spec: str) -> str:
    """A folder/file spec made absolute, so that a resume from another working directory finds the data again."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme.lower() in ("mnist", "cifar10") and rest.strip():
        return f"{scheme}:{Path(rest.strip()).expanduser().resolve()}"
    if sep and len(scheme) > 1 and not Path(spec).exists():  # builtin:NAME and other schemes
        return spec
    return str(Path(spec).expanduser().resolve())


def _data_info(ds, spec: str) -> dict[str, Any]:
    info = dict(ds.to_dict())
    info["spec"] = _absolute_spec(spec)
    if ds.class_names:
        info["class_names"] = list(ds.class_names)
    return info


# ---- checks ----------------------------------------------------------------------------------------------------------
def _pick(value, key: str, image_size: int | None = None):
    """The user's value, else the recipe's (for images of ``image_size`` px where the recipe depends on it)."""
    if value is not None:
        return value
    return recipe_for(image_size)[key] if image_size is not None else TRAIN_DEFAULTS[key]


def _size_error(preset: str, size: int, e: Exception) -> UsageError:
    from ..core.nets.unet import PRESETS

    levels = len(PRESETS[preset]["channel_mults"])
    div = 2 ** (levels - 1)
    if size % div:
        lo, hi = size // div * div, (size // div + 1) * div
        suggestion = f"{lo} or {hi}" if lo >= div else f"{hi}"
        return UsageError(f"argument --size: {size} is not divisible by {div}, which the {preset} model needs "
                          f"(it halves the image {levels - 1} times); try {suggestion}")
    return UsageError(f"argument --size: {field_message(e, {})}")


def _build_schedule(kind: str, T: int, beta_start: float | None, beta_end: float | None, base: dict | None = None):
    from ..core.diffusion.schedule import NoiseSchedule

    params: dict[str, float] = dict(base or {})
    if beta_start is not None or beta_end is not None:
        if kind not in BETA_RANGE_KINDS:
            raise UsageError(f"argument --beta-start/--beta-end: the {kind} schedule has no β range "
                             f"(they apply to {', '.join(BETA_RANGE_KINDS)})")
        if beta_start is not None:
            params["beta_start"] = beta_start
        if beta_end is not None:
            params["beta_end"] = beta_end
    try:
        return NoiseSchedule.create(kind, T, **params)
    except ValueError as e:
        raise UsageError(f"invalid schedule: {one_line(e)}") from None


def _local_data_path(spec: str) -> Path | None:
    scheme, sep, rest = spec.partition(":")
    if sep and scheme.lower() in ("mnist", "cifar10"):
        return Path(rest.strip()).expanduser()
    if sep and len(scheme) > 1 and not Path(spec).exists():
        return None  # builtin:NAME and other schemes
    return Path(spec).expanduser()


def check_out_outside_data(out: Path, spec: str) -> None:
    """A run folder inside the data folder would feed its own preview PNGs back in as training data on resume."""
    data = _local_data_path(str(spec))
    if data is None:
        return
    try:
        data, run = data.resolve(), out.expanduser().resolve()
    except (OSError, RuntimeError):
        return
    if data.is_dir() and (run == data or data in run.parents):
        raise UsageError(f"argument --out: {out} is inside the data folder {data}; its previews and checkpoints "
                         f"would be read back as training images; choose an --out outside it")


def _check_batch(batch: int, ds, explicit: bool = True) -> int:
    """The batch to train with: one the user asked for must fit the data; a default is cut to the dataset's size."""
    if batch > len(ds):
        if explicit:
            raise UsageError(f"argument --batch: {batch} is larger than the dataset ({plural(len(ds), 'image')} in "
                             f"{ds.name or ds.spec}); use --batch {len(ds)} or fewer")
        echo(f"batch     {len(ds)}: the whole dataset ({plural(len(ds), 'image')}), as the default batch {batch} "
             f"is larger (--batch N to choose)")
        return len(ds)
    return batch


def _check_memory(model_config, batch: int, device) -> None:
    """Refuse a size × batch × model that cannot fit in this machine's memory before any data is loaded."""
    from ..core.runtime.memory import check_training_fits

    try:
        check_training_fits(model_config, batch, device)
    except ValueError as e:
        field, _, reason = str(e).partition(": ")
        flag = "--batch" if field == "batch_size" else "--size"
        raise UsageError(f"argument {flag}: {reason}") from None


def _validate_config(cfg) -> None:
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(field_message(e, TRAIN_FIELD_FLAGS)) from None


def _clear_run(out: Path) -> None:
    for name in ("checkpoint.json", "metrics.jsonl", "run.json"):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("checkpoint-*.safetensors"):
        p.unlink(missing_ok=True)
    for p in (out / "previews").glob("step-*.png"):
        p.unlink(missing_ok=True)


def setup_fresh(args, out: Path, ckpt_path: Path):
    if args.data is None:
        raise UsageError("the following arguments are required: --data (or --resume to continue a run)")
    if ckpt_path.exists() and not args.overwrite:
        raise UsageError(f"argument --out: {out} already holds a run (checkpoint.json); add --resume to continue "
                         f"it, --overwrite to start again, or choose another folder")
    from ..data.specs import is_points_spec

    if is_points_spec(args.data):
        from .train_points import setup_points

        return setup_points(args, out, ckpt_path, _build_schedule, _clear_run)
    if args.model == "mlp" or getattr(args, "points", None) is not None:
        flag = "--model mlp" if args.model == "mlp" else "--points"
        raise UsageError(f"argument {flag}: for 2-D points (toy:NAME or a .csv), not images ({args.data})")
    from ..core.train.config import TrainConfig
    from ..core.nets.unet import preset_config

    from ..jobs import runs
    from . import latent_setup

    space = latent_setup.load_space(args)
    size = latent_setup.image_size(space, args.size, natural_size(args.data))
    preset = _pick(args.model, "model", size)
    unet_size, _ = runs.unet_shape(space, size, args.channels or 3)
    try:
        preset_config(preset, unet_size, args.channels or 3)
    except ValueError as e:
        raise _size_error(preset, unet_size, e) from None
    schedule = _build_schedule(_pick(args.schedule, "schedule"), _pick(args.T, "T"), args.beta_start, args.beta_end)
    # Neither --steps nor --minutes: the recipe's time budget, over which the learning rate warms up and decays.
    minutes = args.minutes if args.minutes is not None or args.steps is not None else _pick(None, "minutes")
    steps = None if minutes is not None else args.steps
    cfg = TrainConfig(
        steps=steps, minutes=minutes,
        loss_weighting=_pick(args.loss_weighting, "loss_weighting"), snr_gamma=_pick(args.snr_gamma, "snr_gamma"),
        channels_last={"auto": None, "nchw": False, "nhwc": True}[_pick(args.layout, "layout")], batch_size=_pick(args.batch, "batch", size), lr=_pick(args.lr, "lr", size),
        warmup_steps=_pick(args.warmup, "warmup"), ema_decay=_pick(args.ema_decay, "ema_decay"),
        lr_schedule=_pick(args.lr_schedule, "lr_schedule"),
        seed=_pick(args.seed, "seed"), device=_pick(args.device, "device"),
        precision=_pick(args.precision, "precision"), flip=bool(args.flip),
        class_conditional=bool(args.class_conditional), text=bool(args.text), log_every=_pick(args.log_every, "log_every"),
        checkpoint_every=_pick(args.checkpoint_every, "checkpoint_every"),
        preview_every=_pick(args.preview_every, "preview_every"),
    )
    if args.p_uncond is not None:
        cfg.p_uncond = args.p_uncond
    if args.cross_attn is not None and not cfg.text:
        raise UsageError("argument --cross-attn: needs --text (cross-attention listens to a caption's tokens)")
    if cfg.text and cfg.class_conditional:
        raise UsageError("argument --text: not with --class-conditional (a caption already says the class)")
    _validate_config(cfg)
    device, _ = check_device(cfg.device, cfg.precision)
    from ..data.specs import natural_channels

    channels = args.channels or natural_channels(args.data)
    _check_memory(preset_config(preset, *runs.unet_shape(space, size, channels)), cfg.batch_size, device)

    ds = _load_data(args.data, size, args.channels, wants_bar(args))
    _describe_data(ds)
    if cfg.text:
        prepare_captions(ds)
    cfg.batch_size = _check_batch(cfg.batch_size, ds, explicit=args.batch is not None)
    num_classes = None
    if args.class_conditional is None and not args.unconditional and ds.labels is not None and \
            conditions_on_labels(ds.num_classes, cfg.text, space.is_latent):
        cfg.class_conditional = True
        echo(f"labels    conditioned on the data's {ds.num_classes} classes (`sample` draws one of each in turn; "
             f"--unconditional ignores them)")
    if cfg.class_conditional:
        if ds.labels is None:
            raise UsageError(f"argument --class-conditional: {ds.name or ds.spec} has no labels (a folder gives "
                             f"labels when its images sit in one subfolder per class)")
        num_classes = ds.num_classes
    latent_setup.check_channels(space, ds)
    model_config = preset_config(preset, *runs.unet_shape(space, size, ds.channels), num_classes)
    if cfg.text:
        model_config = text_model_config(model_config, args.cross_attn)
    model_config.prediction = _pick(args.prediction, "prediction")
    _check_memory(model_config, cfg.batch_size, device)

    if args.overwrite and out.is_dir():
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    info = _data_info(ds, args.data)
    data = latent_setup.encode(space, ds, cfg.flip, info)
    trainer = runs.make_trainer(space, model_config, schedule, data, cfg, out=ckpt_path, data_info=info)
    return trainer, 0


def _same(flag: str, given, stored, shown=None) -> None:
    if given is not None and given != stored:
        raise UsageError(f"argument {flag}: the run was trained with {shown if shown is not None else stored}, "
                         f"which a resumed run keeps (drop {flag}, or train a new run in another --out)")


def setup_resume(args, out: Path, ckpt_path: Path):
    from ..core.io.checkpoint import load_checkpoint
    from ..core.train.config import TrainConfig

    if args.overwrite:
        raise UsageError("argument --overwrite: not allowed with --resume")
    if not ckpt_path.is_file():
        raise CliError(f"{out}: no checkpoint.json to resume (train without --resume to start a run there)")
    ckpt = load_checkpoint(ckpt_path)
    if "optim" not in ckpt.tensors or "rng" not in ckpt.tensors:
        raise CliError(f"{ckpt_path}: holds no training state (an exported model), so it cannot be resumed")
    mc, sched, stored = ckpt.model_config, ckpt.schedule, dict(ckpt.meta.get("train", {}))
    from ..jobs import runs
    from . import latent_setup

    space = latent_setup.resume_space(args, ckpt)  # a latent run keeps its embedded autoencoder
    img_size, img_channels = runs.image_shape(space, mc.image_size, mc.in_channels)

    _same("--model", args.model, mc.preset)
    _same("--size", args.size, img_size)
    _same("--channels", args.channels, img_channels)
    _same("--class-conditional", args.class_conditional, bool(stored.get("class_conditional")),
          "class conditioning" if stored.get("class_conditional") else "no class conditioning")
    _same("--unconditional", None if args.unconditional is None else False, bool(stored.get("class_conditional")),
          "class conditioning" if stored.get("class_conditional") else "no class conditioning")
    _same("--text", args.text, bool(stored.get("text")), "captions" if stored.get("text") else "no captions")
    _same("--seed", args.seed, stored.get("seed"))
    if args.cross_attn is not None:
        _same("--cross-attn", args.cross_attn, tuple(mc.cross_attn_resolutions),
              ",".join(map(str, mc.cross_attn_resolutions)) or "no cross-attention")
    _same("--prediction", args.prediction, mc.prediction)
    if any(v is not None for v in (args.schedule, args.T, args.beta_start, args.beta_end)):
        kind = args.schedule or sched.kind
        wanted = _build_schedule(kind, args.T or sched.T, args.beta_start, args.beta_end,
                                 base=sched.params if kind == sched.kind else None)
        if wanted != sched:
            raise UsageError(f"argument --schedule/--T/--beta-start/--beta-end: the run was trained with the "
                             f"{sched.describe()} schedule, which a resumed run keeps")

    overrides: dict[str, Any] = {}
    if args.steps is not None:
        overrides.update(steps=args.steps, minutes=None)
    elif args.minutes is not None:
        overrides.update(steps=None, minutes=args.minutes)
    elif stored.get("steps") is None and stored.get("minutes"):
        left = float(stored["minutes"]) - float(ckpt.meta.get("elapsed_s") or 0.0) / 60
        if left <= 0:
            raise UsageError(f"the run has used its {stored['minutes']:g} minutes; give --minutes M (more) or "
                             f"--steps N (total) to train on")
        overrides.update(steps=None, minutes=left)
    for key, value in (("batch_size", args.batch), ("lr", args.lr), ("warmup_steps", args.warmup),
                       ("lr_schedule", args.lr_schedule),
                       ("ema_decay", args.ema_decay), ("flip", args.flip), ("device", args.device),
                       ("precision", args.precision), ("log_every", args.log_every),
                       ("checkpoint_every", args.checkpoint_every), ("preview_every", args.preview_every),
                       ("loss_weighting", args.loss_weighting), ("snr_gamma", args.snr_gamma),
                       ("channels_last", None if args.layout is None else {"auto": None, "nchw": False,
                                                                           "nhwc": True}[args.layout])):
        if value is not None:
            overrides[key] = value
    cfg = TrainConfig.from_dict({**stored, **overrides})
    _validate_config(cfg)
    if cfg.steps is not None and cfg.steps <= ckpt.step:
        if args.steps is not None:
            raise UsageError(f"argument --steps: the run is already at step {ckpt.step} and --steps is the total; "
                             f"give more than {ckpt.step}")
        raise UsageError(f"the run already finished its {cfg.steps} steps; give --steps N (the new total, more than "
                         f"{ckpt.step}) to train on")
    check_device(cfg.device, cfg.precision)

    spec = args.data or ckpt.meta.get("data", {}).get("spec")
    if not spec:
        raise UsageError("the checkpoint does not record its data; give --data")
    check_out_outside_data(out, spec)
    from ..data.errors import DataError

    try:
        ds = _load_data(spec, img_size, img_channels, wants_bar(args))
    except DataError as e:  # LoadCancelled is one too
        if args.data is None:
            raise CliError(f"{e} (reloading the run's data {spec}; give --data to load it from elsewhere)") from None
        raise
    _describe_data(ds)
    batch = _check_batch(cfg.batch_size, ds, explicit=args.batch is not None)
    if batch != cfg.batch_size:
        cfg.batch_size = overrides["batch_size"] = batch
    if cfg.class_conditional and ds.labels is None:
        raise UsageError(f"argument --data: the run is class-conditional but {ds.name or ds.spec} has no labels")
    if cfg.text:
        prepare_captions(ds)
    data = latent_setup.encode(space, ds, cfg.flip, ckpt.meta.get("data") or _data_info(ds, spec))
    trainer = runs.resume_trainer(space, ckpt, data, out=ckpt_path, **overrides)
    if args.data is not None:
        trainer.data_info = _data_info(ds, args.data)
        runs.caption_info(trainer)
    return trainer, ckpt.step
