"""The command line for headless machines: train, sample, info (and fid); with no arguments it opens the app.

Exit codes: 0 done; 1 a runtime error (unreadable data or checkpoint, training diverged, disk full ...); 2 a bad
command line, including values that only the data can refute (a batch larger than the dataset); 130 stopped by
Ctrl+C (training saves a checkpoint first), 143 by SIGTERM. Every error is one line on stderr; --debug adds the
traceback. torch is imported only once a command runs, so --help and most usage errors answer at once.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import __version__

PROG = "diffusion-studio"

# Mirrors of core's names, kept here so that --help and argument errors need no torch import (tests/test_cli.py
# checks they match core.unet.PRESETS and core.schedule.KINDS).
PRESET_NAMES = ("tiny", "small", "base", "ddpm-cifar")
SCHEDULE_KINDS = ("linear", "cosine", "sigmoid", "quadratic")
BETA_RANGE_KINDS = ("linear", "quadratic", "sigmoid")

TRAIN_DEFAULTS: dict[str, Any] = dict(
    size=32, model="tiny", steps=1000, batch=64, lr=2e-4, warmup=100, lr_schedule="constant", ema_decay=0.999,
    schedule="linear", T=1000, beta_start=1e-4, beta_end=0.02, device="auto", precision="auto", seed=0, log_every=10,
    checkpoint_every=500, preview_every=0,
)
SAMPLE_DEFAULTS: dict[str, Any] = dict(n=16, sampler="ddim", ddim_steps=50, eta=0.0, variance="beta_tilde", seed=0,
                                       batch=64, guidance=2.0, device="auto", precision="auto")
GIF_MAX_FRAMES = 60      # frames of the reverse process kept in a GIF (plus the start and a held last frame)
GIF_SAMPLES = 16         # samples tiled into each GIF frame
GIF_TARGET_PX = 256      # GIF frames are upscaled (nearest neighbour) to about this width
GRID_MAX = 256           # samples tiled into --grid at most
LINE_INTERVAL_S = 5.0    # without a progress bar, at most one progress line this often (first and last always)
MAX_LISTED_FAILURES = 50
THREADS_HELP = ("CPU threads for torch (default: torch's choice); on a busy machine fewer threads can be much faster, "
                "because a thread that waits for a core stalls the others")


class UsageError(Exception):
    """The command line asks for something impossible; exit 2."""


class CliError(Exception):
    """A runtime problem found by the CLI itself; exit 1."""


class Stopped(Exception):
    """Training stopped by a signal after saving; carries the exit code and the one-line message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# ---- argument types -------------------------------------------------------------------------------------------------
def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def _float_in(lo: float, hi: float, lo_open: bool = True, hi_open: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > lo if lo_open else value >= lo
        below = value < hi if hi_open else value <= hi
        if not (math.isfinite(value) and above and below):
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)
UNIT_OPEN = _float_in(0.0, 1.0)                 # β, lr
UNIT_HALF_OPEN = _float_in(0.0, 1.0, lo_open=False)  # EMA decay
POSITIVE_FLOAT = _float_in(0.0, math.inf)
NON_NEGATIVE_FLOAT = _float_in(0.0, math.inf, lo_open=False)


# ---- the parser -----------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``diffusion-studio: error: ...``) instead of usage + error over two lines."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions and epilogs line by line, so examples keep their own lines."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30, width=min(110, max(60, _terminal_width())))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            lead = line[: len(line) - len(line.lstrip())]
            out.append(textwrap.fill(line.strip(), width, initial_indent=indent + lead,
                                     subsequent_indent=indent + lead + "    ") if line.strip() else "")
        return "\n".join(out)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns - 2
    except (OSError, ValueError, AttributeError):
        return 100


def _common_options() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: the subcommand's default must not overwrite a --debug given before the subcommand.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on errors, show the full traceback")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar; print a progress line now and then instead (as when not on a terminal)")
    return common


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The parser, and the fid command's state ({"run": callable} or {"unavailable": reason}).

    The fid module (heavier imports) is loaded only when ``command`` is "fid"; otherwise a stand-in lists it.
    """
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Diffusion Studio: train and sample DDPM diffusion models. Without a command, opens the app.",
        epilog="examples:\n"
               f"  {PROG} train --data builtin:digits --size 16 --model tiny --steps 2000 --out runs/digits\n"
               f"  {PROG} train --out runs/digits --resume --steps 4000\n"
               f"  {PROG} sample --model runs/digits --n 64 --out samples --grid grid.png --gif reverse.gif\n"
               f"  {PROG} info runs/digits\n\n"
               f"'{PROG} COMMAND --help' lists each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="on errors, show the full traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _common_options()
    _add_train_parser(sub, common)
    _add_sample_parser(sub, common)
    _add_info_parser(sub, common)
    sub.add_parser(APP_COMMAND, add_help=False,
                   help=f"open the desktop app (the default without a command); '{PROG} app --help' lists its options")
    if command == "fid":
        fid = _add_fid_parser(sub)
    else:
        sub.add_parser("fid", add_help=False,
                       help=f"FID of generated images against real ones (see '{PROG} fid --help')")
        fid = {}
    return parser, fid


def _add_train_parser(sub, common) -> None:
    D = TRAIN_DEFAULTS
    p = sub.add_parser(
        "train", parents=[common], formatter_class=_Formatter, help="train a model on a dataset",
        description="Train ε_θ on a dataset (DDPM Algorithm 1). Writes RUN_DIR/checkpoint.json with its weights, "
                    "RUN_DIR/metrics.jsonl (one JSON line per logged step) and RUN_DIR/run.json (the command line). "
                    "Ctrl+C stops after the current step and saves a checkpoint; --resume continues it.",
        epilog="every setting is checked before training starts; a batch larger than the dataset is a usage error "
               "(exit 2), found right after the data loads.",
    )
    g = p.add_argument_group("data and output")
    g.add_argument("--data", metavar="SPEC",
                   help="a folder of images (subfolders = classes), an image file, builtin:digits|shapes|photos, "
                        "mnist:PATH or cifar10:PATH (required unless --resume, which reloads the run's data)")
    g.add_argument("--out", metavar="RUN_DIR", required=True, help="the run folder (created if needed)")
    g.add_argument("--size", type=POSITIVE, metavar="PX",
                   help=f"image side in pixels; must be divisible by the model's 2^(levels-1) (default: {D['size']})")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 (gray) or 3 (RGB) (default: the data's own)")
    g.add_argument("--flip", action="store_true", default=None, help="random horizontal flips (not for digits)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its checkpoint, up to --steps in total")
    g.add_argument("--overwrite", action="store_true", help="start afresh in a RUN_DIR that already holds a run")

    g = p.add_argument_group("model and schedule")
    g.add_argument("--model", metavar="PRESET", choices=PRESET_NAMES,
                   help=f"UNet preset: {', '.join(PRESET_NAMES)} (default: {D['model']})")
    g.add_argument("--class-conditional", action="store_true", default=None,
                   help="condition on the data's labels (classifier-free guidance when sampling)")
    g.add_argument("--schedule", choices=SCHEDULE_KINDS, metavar="KIND",
                   help=f"β schedule: {', '.join(SCHEDULE_KINDS)} (default: {D['schedule']})")
    g.add_argument("--T", type=_int_at_least(2), metavar="T", help=f"diffusion steps, at least 2 (default: {D['T']})")
    g.add_argument("--beta-start", type=UNIT_OPEN, metavar="B",
                   help=f"β_1 for linear/quadratic/sigmoid, in (0, 1) (default: {D['beta_start']:g})")
    g.add_argument("--beta-end", type=UNIT_OPEN, metavar="B",
                   help=f"β_T for linear/quadratic/sigmoid, in (0, 1) (default: {D['beta_end']:g})")

    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=POSITIVE, metavar="N",
                        help=f"total optimisation steps of the run, counting earlier ones when resuming "
                             f"(default: {D['steps']})")
    length.add_argument("--minutes", type=POSITIVE_FLOAT, metavar="M",
                        help="train for M minutes instead of a number of steps (with --resume: M more minutes)")
    g.add_argument("--batch", type=POSITIVE, metavar="N", help=f"batch size (default: {D['batch']})")
    g.add_argument("--lr", type=UNIT_OPEN, metavar="LR", help=f"AdamW learning rate (default: {D['lr']:g})")
    g.add_argument("--warmup", type=NON_NEGATIVE, metavar="N",
                   help=f"learning-rate warm-up steps (default: {D['warmup']})")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"),
                   help=f"after warm-up: constant, or cosine decay to lr/10 at the last step (needs --steps) "
                        f"(default: {D['lr_schedule']})")
    g.add_argument("--ema-decay", type=UNIT_HALF_OPEN, metavar="D",
                   help=f"decay of the weights' moving average used for sampling (default: {D['ema_decay']})")
    g.add_argument("--seed", type=NON_NEGATIVE, metavar="S", help=f"random seed (default: {D['seed']})")
    g.add_argument("--device", metavar="DEV", help=f"auto, cpu, cuda, cuda:N or mps (default: {D['device']})")
    g.add_argument("--threads", type=POSITIVE, metavar="N", help=THREADS_HELP)
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help=f"auto = bf16 on CUDA GPUs that support it, fp32 elsewhere (default: {D['precision']})")

    g = p.add_argument_group("logging")
    g.add_argument("--log-every", type=POSITIVE, metavar="N",
                   help=f"write a metrics.jsonl line every N steps (loss = mean since the last line) "
                        f"(default: {D['log_every']})")
    g.add_argument("--checkpoint-every", type=NON_NEGATIVE, metavar="N",
                   help=f"save a checkpoint every N steps, 0 = only at the end (default: {D['checkpoint_every']})")
    g.add_argument("--preview-every", type=NON_NEGATIVE, metavar="N",
                   help="save a grid of EMA samples as RUN_DIR/previews/step-NNNNNNN.png every N steps, 0 = never "
                        f"(default: {D['preview_every']})")
    p.set_defaults(func=cmd_train)


def _add_sample_parser(sub, common) -> None:
    D = SAMPLE_DEFAULTS
    p = sub.add_parser(
        "sample", parents=[common], formatter_class=_Formatter, help="generate images with a trained model",
        description="Generate images by reverse diffusion (DDPM Algorithm 2, or DDIM) and write DIR/sample_00000.png "
                    "..., optionally a grid and an animated GIF of the reverse process. The same seed and batch size "
                    "give the same files.",
    )
    p.add_argument("--model", metavar="CKPT", required=True,
                   help="a checkpoint .json, a run folder, a .safetensors file, or builtin:NAME (a shipped model)")
    p.add_argument("--n", type=POSITIVE, metavar="N", default=D["n"], help=f"number of images (default: {D['n']})")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the PNG files (created if needed)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default=D["sampler"], help=f"(default: {D['sampler']})")
    p.add_argument("--steps", type=POSITIVE, metavar="N",
                   help=f"reverse steps (default: {D['ddim_steps']} for ddim or T if smaller, all T for ddpm; "
                        "fewer ddpm steps respace the schedule)")
    p.add_argument("--eta", type=NON_NEGATIVE_FLOAT, metavar="η",
                   help="DDIM noise: 0 deterministic, 1 DDPM-like (ddim only; default: 0)")
    p.add_argument("--variance", choices=("beta", "beta_tilde"),
                   help=f"σ_t² = β_t or β̃_t (ddpm only; default: {D['variance']})")
    p.add_argument("--clip-x0", action="store_true", help="clip the predicted x_0 to [-1, 1] at every step")
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="S", default=D["seed"],
                   help=f"batch k uses seed S + k (default: {D['seed']})")
    p.add_argument("--batch", type=POSITIVE, metavar="N", default=D["batch"],
                   help=f"images generated at once (default: {D['batch']})")
    p.add_argument("--grid", metavar="FILE", help=f"also write a grid PNG of the (first {GRID_MAX}) samples")
    p.add_argument("--gif", metavar="FILE",
                   help=f"also write an animated GIF of the reverse process of the first {GIF_SAMPLES} samples")
    p.add_argument("--label", metavar="K",
                   help="class index or name, for class-conditional models (default: unconditional)")
    p.add_argument("--guidance", type=NON_NEGATIVE_FLOAT, metavar="W",
                   help=f"classifier-free guidance weight w in ε_∅ + w(ε_y − ε_∅), with --label "
                        f"(default: {D['guidance']:g})")
    p.add_argument("--device", metavar="DEV", default=D["device"], help=f"(default: {D['device']})")
    p.add_argument("--threads", type=POSITIVE, metavar="N", help=THREADS_HELP)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=D["precision"],
                   help=f"(default: {D['precision']})")
    p.set_defaults(func=cmd_sample)


def _add_info_parser(sub, common) -> None:
    p = sub.add_parser("info", parents=[common], formatter_class=_Formatter, help="describe a checkpoint",
                       description="Print a checkpoint's summary: model preset and size, schedule, step, data.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a checkpoint .json, a run folder, a .safetensors or builtin:NAME")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_info)


def _add_fid_parser(sub) -> dict[str, Any]:
    # FID lives in its own module (heavier dependencies); train and sample must work without it.
    try:
        from . import cli_fid
        before = set(sub.choices)
        cli_fid.add_fid_parser(sub)
        if "fid" not in set(sub.choices) - before:
            raise RuntimeError("add_fid_parser added no 'fid' command")
        return {"run": cli_fid.run_fid}
    except Exception as e:  # noqa: BLE001 - any failure only disables fid
        reason = _one_line(f"{type(e).__name__}: {e}")
        sub.choices.pop("fid", None)
        sub.add_parser("fid", help="Fréchet Inception Distance (not available in this installation)", add_help=False)
        return {"unavailable": reason}


# ---- small helpers --------------------------------------------------------------------------------------------------
def _one_line(text: object, limit: int = 600) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _say(message: str) -> None:
    print(f"{PROG}: {_one_line(message)}", file=sys.stderr, flush=True)


def _out(message: str = "") -> None:
    print(message, flush=True)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _field_message(e: Exception, flags: dict[str, str]) -> str:
    """Core's "field: reason" → "argument --flag: reason"."""
    text = str(e)
    name, sep, rest = text.partition(": ")
    if sep and name in flags:
        return f"argument {flags[name]}: {rest}"
    return text


TRAIN_FIELD_FLAGS = {
    "steps": "--steps", "minutes": "--minutes", "batch_size": "--batch", "lr": "--lr", "ema_decay": "--ema-decay",
    "warmup_steps": "--warmup", "log_every": "--log-every", "lr_schedule": "--lr-schedule", "device": "--device",
    "precision": "--precision",
}


def _use_bar(args) -> bool:
    if getattr(args, "quiet", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Lines:
    """Progress lines for logs: the first, then at most one per LINE_INTERVAL_S, and any marked final.

    With ``delay``, the first line waits until the work has taken LINE_INTERVAL_S (quick work stays silent).
    """

    def __init__(self, enabled: bool, delay: bool = False):
        self.enabled = enabled
        self.last = time.monotonic() if delay else None

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or self.last is None or now - self.last >= LINE_INTERVAL_S):
            self.last = now
            print(text, file=sys.stderr, flush=True)


def _make_bar(**kw):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kw)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- data -----------------------------------------------------------------------------------------------------------
def _load_data(spec: str, size: int, channels: int | None, bar: bool):
    from .data import load_dataset

    state: dict[str, Any] = {"bar": None}
    lines = _Lines(not bar, delay=True)

    def progress(p) -> None:
        if bar:
            if state["bar"] is None:
                state["bar"] = _make_bar(total=p.total, desc="loading images", unit="file", leave=False)
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
    _out(f"data      {ds.spec}: {_plural(len(ds), 'image')}, {ds.size}x{ds.size}, "
         f"{_plural(ds.channels, 'channel')}{classes}")
    report = getattr(ds, "report", None)
    if report is not None and (report.failed or report.skipped_non_images):
        _out(f"          {report.summary()}")
        for err in report.failed[:MAX_LISTED_FAILURES]:
            _out(f"          skipped {_one_line(err)}")
        if len(report.failed) > MAX_LISTED_FAILURES:
            _out(f"          ... and {len(report.failed) - MAX_LISTED_FAILURES} more")


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


# ---- train ----------------------------------------------------------------------------------------------------------
def _pick(value, key: str):
    return TRAIN_DEFAULTS[key] if value is None else value


def _size_error(preset: str, size: int, e: Exception) -> UsageError:
    from .core.unet import PRESETS

    levels = len(PRESETS[preset]["channel_mults"])
    div = 2 ** (levels - 1)
    if size % div:
        lo, hi = size // div * div, (size // div + 1) * div
        suggestion = f"{lo} or {hi}" if lo >= div else f"{hi}"
        return UsageError(f"argument --size: {size} is not divisible by {div}, which the {preset} model needs "
                          f"(it halves the image {levels - 1} times); try {suggestion}")
    return UsageError(f"argument --size: {_field_message(e, {})}")


def _build_schedule(kind: str, T: int, beta_start: float | None, beta_end: float | None, base: dict | None = None):
    from .core.schedule import NoiseSchedule

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
        raise UsageError(f"invalid schedule: {_one_line(e)}") from None


def _check_device(device: str, precision: str):
    from .core.device import resolve_device, resolve_precision

    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UsageError(_field_message(e, TRAIN_FIELD_FLAGS)) from None
    try:
        return dev, resolve_precision(precision, dev)
    except ValueError as e:
        raise UsageError(_field_message(e, TRAIN_FIELD_FLAGS)) from None


def _check_batch(batch: int, ds) -> None:
    if batch > len(ds):
        raise UsageError(f"argument --batch: {batch} is larger than the dataset ({_plural(len(ds), 'image')} in "
                         f"{ds.name or ds.spec}); use --batch {len(ds)} or fewer")


def _validate_config(cfg) -> None:
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(_field_message(e, TRAIN_FIELD_FLAGS)) from None


def _clear_run(out: Path) -> None:
    for name in ("checkpoint.json", "metrics.jsonl", "run.json"):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("checkpoint-*.safetensors"):
        p.unlink(missing_ok=True)
    for p in (out / "previews").glob("step-*.png"):
        p.unlink(missing_ok=True)


def _setup_fresh(args, out: Path, ckpt_path: Path):
    if args.data is None:
        raise UsageError("the following arguments are required: --data (or --resume to continue a run)")
    if ckpt_path.exists() and not args.overwrite:
        raise UsageError(f"argument --out: {out} already holds a run (checkpoint.json); add --resume to continue "
                         f"it, --overwrite to start again, or choose another folder")
    from .core.training import TrainConfig, Trainer
    from .core.unet import preset_config

    preset, size = _pick(args.model, "model"), _pick(args.size, "size")
    try:
        preset_config(preset, size, args.channels or 3)
    except ValueError as e:
        raise _size_error(preset, size, e) from None
    schedule = _build_schedule(_pick(args.schedule, "schedule"), _pick(args.T, "T"), args.beta_start, args.beta_end)
    steps = None if args.minutes is not None else _pick(args.steps, "steps")
    cfg = TrainConfig(
        steps=steps, minutes=args.minutes, batch_size=_pick(args.batch, "batch"), lr=_pick(args.lr, "lr"),
        warmup_steps=_pick(args.warmup, "warmup"), ema_decay=_pick(args.ema_decay, "ema_decay"),
        lr_schedule=_pick(args.lr_schedule, "lr_schedule"),
        seed=_pick(args.seed, "seed"), device=_pick(args.device, "device"),
        precision=_pick(args.precision, "precision"), flip=bool(args.flip),
        class_conditional=bool(args.class_conditional), log_every=_pick(args.log_every, "log_every"),
        checkpoint_every=_pick(args.checkpoint_every, "checkpoint_every"),
        preview_every=_pick(args.preview_every, "preview_every"),
    )
    _validate_config(cfg)
    _check_device(cfg.device, cfg.precision)

    ds = _load_data(args.data, size, args.channels, _use_bar(args))
    _describe_data(ds)
    _check_batch(cfg.batch_size, ds)
    num_classes = None
    if cfg.class_conditional:
        if ds.labels is None:
            raise UsageError(f"argument --class-conditional: {ds.name or ds.spec} has no labels (a folder gives "
                             f"labels when its images sit in one subfolder per class)")
        num_classes = ds.num_classes
    model_config = preset_config(preset, size, ds.channels, num_classes)

    if args.overwrite and out.is_dir():
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model_config, schedule, ds, cfg, out=ckpt_path, data_info=_data_info(ds, args.data))
    return trainer, 0


def _same(flag: str, given, stored, shown=None) -> None:
    if given is not None and given != stored:
        raise UsageError(f"argument {flag}: the run was trained with {shown if shown is not None else stored}, "
                         f"which a resumed run keeps (drop {flag}, or train a new run in another --out)")


def _setup_resume(args, out: Path, ckpt_path: Path):
    from .core.checkpoint import load_checkpoint
    from .core.training import TrainConfig, Trainer

    if args.overwrite:
        raise UsageError("argument --overwrite: not allowed with --resume")
    if not ckpt_path.is_file():
        raise CliError(f"{out}: no checkpoint.json to resume (train without --resume to start a run there)")
    ckpt = load_checkpoint(ckpt_path)
    if "optim" not in ckpt.tensors or "rng" not in ckpt.tensors:
        raise CliError(f"{ckpt_path}: holds no training state (an exported model), so it cannot be resumed")
    mc, sched, stored = ckpt.model_config, ckpt.schedule, dict(ckpt.meta.get("train", {}))

    _same("--model", args.model, mc.preset)
    _same("--size", args.size, mc.image_size)
    _same("--channels", args.channels, mc.in_channels)
    _same("--class-conditional", args.class_conditional, bool(stored.get("class_conditional")),
          "class conditioning" if stored.get("class_conditional") else "no class conditioning")
    _same("--seed", args.seed, stored.get("seed"))
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
                       ("checkpoint_every", args.checkpoint_every), ("preview_every", args.preview_every)):
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
    _check_device(cfg.device, cfg.precision)

    spec = args.data or ckpt.meta.get("data", {}).get("spec")
    if not spec:
        raise UsageError("the checkpoint does not record its data; give --data")
    try:
        ds = _load_data(spec, mc.image_size, mc.in_channels, _use_bar(args))
    except Exception as e:
        if args.data is None and type(e).__name__ in ("DataError", "LoadCancelled"):
            raise CliError(f"{e} (reloading the run's data {spec}; give --data to load it from elsewhere)") from None
        raise
    _describe_data(ds)
    _check_batch(cfg.batch_size, ds)
    if cfg.class_conditional and ds.labels is None:
        raise UsageError(f"argument --data: the run is class-conditional but {ds.name or ds.spec} has no labels")
    _truncate_metrics(out / "metrics.jsonl", ckpt.step)
    trainer = Trainer.resume(ckpt, ds, out=ckpt_path, **overrides)
    if args.data is not None:
        trainer.data_info = _data_info(ds, args.data)
    return trainer, ckpt.step


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint's step (a run killed after its last save logged steps it will redo)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return
    keep = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) > step:
                continue
        except (ValueError, KeyError, TypeError):
            continue  # blank, or half a line from a killed process
        keep.append(line if line.endswith("\n") else line + "\n")
    if keep != lines:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, path)


def _write_run_json(out: Path, argv: list[str], resumed_from: int | None, trainer) -> None:
    import torch

    from .core.device import describe_device

    path = out / "run.json"
    entry = {
        "command": shlex.join([PROG, *argv]),
        "argv": list(argv),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "resumed_from_step": resumed_from,
        "version": __version__,
        "torch": torch.__version__,
        "device": describe_device(trainer.device),
        "precision": trainer.precision,
    }
    history: list[dict] = []
    if resumed_from is not None:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            history = list(old.get("history", [])) + [{k: v for k, v in old.items() if k != "history"}]
        except (OSError, ValueError, AttributeError):
            history = []
    _write_json_atomic(path, {**entry, "history": history})


class _StopRequest:
    """The first Ctrl+C (or SIGTERM) asks training to stop after the current step; a second Ctrl+C stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self.announce: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; elsewhere there is nothing to catch
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if sig is None or signal.getsignal(sig) is signal.SIG_IGN:
                continue  # an ignored signal (a background job's SIGINT) stays ignored
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):
                pass

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):
                pass
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.announce("stopping after this step to save a checkpoint (Ctrl+C again to quit without saving)")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_train(args) -> int:
    _set_threads(args.threads)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} is a file, not a folder")
    ckpt_path = out / "checkpoint.json"
    if args.resume:
        trainer, start = _setup_resume(args, out, ckpt_path)
    else:
        trainer, start = _setup_fresh(args, out, ckpt_path)
    _write_run_json(out, args.argv, start if args.resume else None, trainer)
    return _train_loop(args, trainer, out, ckpt_path, start)


def _describe_training(trainer, out: Path, start: int) -> None:
    from .core.device import describe_device
    from .core.unet import count_parameters

    mc, cfg = trainer.model.config, trainer.config
    classes = f", {mc.num_classes} classes" if mc.num_classes else ""
    _out(f"model     {mc.preset or 'custom'}: {count_parameters(trainer.model):,} parameters, "
         f"{mc.image_size}x{mc.image_size}x{mc.in_channels}{classes}")
    _out(f"schedule  {trainer.schedule.describe()}")
    _out(f"device    {describe_device(trainer.device)}, {trainer.precision}")
    length = f"to step {cfg.steps}" if cfg.steps is not None else f"for {cfg.minutes:g} minutes"
    what = f"resuming at step {start}, training {length}" if start else f"training {length}"
    _out(f"run       {out}: {what}, batch {cfg.batch_size}, lr {cfg.lr:g} (Ctrl+C saves a checkpoint and stops)")


def _train_loop(args, trainer, out: Path, ckpt_path: Path, start: int) -> int:
    from .data.convert import save_grid

    _describe_training(trainer, out, start)
    cfg = trainer.config
    total = cfg.steps
    use_bar = _use_bar(args)
    lines = _Lines(not use_bar)
    bar = _make_bar(total=total, initial=start, unit="step", desc="train") if use_bar else None
    stop = _StopRequest()
    if bar is not None:
        stop.announce = bar.write
    window: list[float] = []
    last = None
    t0 = time.perf_counter()
    stop.install()
    try:
        with open(out / "metrics.jsonl", "a" if start else "w", encoding="utf-8") as metrics:
            for ev in trainer.run():
                last = ev
                window.append(ev.loss)
                record: dict[str, Any] = {}
                if ev.preview is not None:
                    rel = Path("previews") / f"step-{ev.step:07d}.png"
                    save_grid(ev.preview, out / rel)
                    record["preview"] = rel.as_posix()
                if ev.checkpoint is not None:
                    record["checkpoint"] = ev.checkpoint.name
                stopping = stop.signum is not None
                if ev.step % cfg.log_every == 0 or ev.done or stopping:
                    loss = sum(window) / len(window)
                    window.clear()
                    line = {"step": ev.step, "loss": loss, "lr": ev.lr, "images_per_s": ev.images_per_s,
                            "eta_s": ev.eta_s, "elapsed_s": ev.elapsed_s, "grad_norm": ev.grad_norm, **record}
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                    of = f"/{total}" if total else ""
                    pct = f" ({100 * ev.step / total:.0f}%)" if total else ""
                    lines(f"step {ev.step}{of}{pct}  loss {loss:.4f}  lr {ev.lr:.2e}  {ev.images_per_s:.0f} img/s  "
                          f"elapsed {_fmt_duration(ev.elapsed_s)}  eta {_fmt_duration(ev.eta_s)}",
                          force=ev.done or stopping)
                if ev.checkpoint is not None:
                    lines(f"checkpoint saved at step {ev.step}", force=True)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{ev.loss:.4f}", img_s=f"{ev.images_per_s:.0f}", refresh=False)
                if stopping:
                    break
    except KeyboardInterrupt:
        stop.uninstall()
        if bar is not None:
            bar.close()
        kept = f"the last checkpoint ({ckpt_path}) is kept" if ckpt_path.exists() else "nothing was saved"
        raise Stopped(130, f"interrupted at step {trainer.step}; not saved, {kept}") from None
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()

    if stop.signum is not None:
        assert last is not None
        path = trainer.save()
        resume = shlex.join([PROG, "train", "--out", str(out), "--resume"])
        of = f"/{total}" if total else ""
        raise Stopped(stop.exit_code, f"interrupted at step {trainer.step}{of}; checkpoint saved to {path}; "
                                      f"continue with: {resume}")
    path = trainer.save()
    took = time.perf_counter() - t0
    steps = trainer.step - start
    rate = steps * cfg.batch_size / took if took > 0 else float("nan")
    last_loss = f", last loss {last.loss:.4f}" if last is not None else ""
    _out(f"done      {_plural(steps, 'step')} in {_fmt_duration(took)} ({rate:.0f} img/s){last_loss}; "
         f"checkpoint {path}")
    _out(f"next      {shlex.join([PROG, 'sample', '--model', str(out), '--n', '16', '--out', str(out / 'samples')])}")
    return 0


# ---- sample ---------------------------------------------------------------------------------------------------------
def _parse_label(text: str, num_classes: int | None, class_names: list[str] | None) -> int:
    if num_classes is None:
        raise UsageError("argument --label: this model is not class-conditional (train with --class-conditional)")
    names = list(class_names or [])
    if text in names:
        return names.index(text)
    try:
        k = int(text)
    except ValueError:
        known = f" or one of {', '.join(names)}" if names else ""
        raise UsageError(f"argument --label: expected a class index 0..{num_classes - 1}{known}, "
                         f"got {text!r}") from None
    if not 0 <= k < num_classes:
        raise UsageError(f"argument --label: class {k} is out of range 0..{num_classes - 1}")
    return k


def cmd_sample(args) -> int:
    from .core.checkpoint import load_checkpoint
    from .resources import resolve_model_spec

    _set_threads(args.threads)
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError("argument --eta: only used by --sampler ddim")
    if args.variance is not None and args.sampler != "ddpm":
        raise UsageError("argument --variance: only used by --sampler ddpm")
    if args.guidance is not None and args.label is None:
        raise UsageError("argument --guidance: needs --label")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} is a file, not a folder")
    device, precision = _check_device(args.device, args.precision)

    ckpt = load_checkpoint(resolve_model_spec(args.model), groups=("model", "ema"))
    mc, schedule = ckpt.model_config, ckpt.schedule
    T = schedule.T
    if args.sampler == "ddim":
        steps = args.steps if args.steps is not None else min(SAMPLE_DEFAULTS["ddim_steps"], T)
        if not 1 <= steps <= T:
            raise UsageError(f"argument --steps: ddim takes 1 to {T} steps (the model's T), got {steps}")
    else:
        steps = args.steps if args.steps is not None else T
        if not 2 <= steps <= T:
            raise UsageError(f"argument --steps: ddpm takes 2 to {T} steps (the model's T), got {steps}")
    label = None if args.label is None else _parse_label(args.label, mc.num_classes, ckpt.class_names)
    guidance = SAMPLE_DEFAULTS["guidance"] if args.guidance is None else args.guidance
    for opt, value in (("--grid", args.grid), ("--gif", args.gif)):
        if value is not None and Path(value).expanduser().is_dir():
            raise UsageError(f"argument {opt}: {value} is a folder; give a file name")
    out.mkdir(parents=True, exist_ok=True)
    return _sample_loop(args, ckpt, device, precision, steps, label, guidance, out)


def _sample_loop(args, ckpt, device, precision, steps, label, guidance, out: Path) -> int:
    import torch

    from .core.samplers import sample_frames, spaced_timesteps
    from .core.training import model_fn
    from .data.convert import make_grid, save_gif, save_grid, save_png

    mc, schedule = ckpt.model_config, ckpt.schedule
    model = ckpt.build_model(device)
    n, batch = args.n, min(args.batch, args.n)
    n_batches = math.ceil(n / batch)
    n_steps = len(spaced_timesteps(schedule.T, steps))
    gif_every = max(1, math.ceil(n_steps / GIF_MAX_FRAMES))
    digits = max(5, len(str(n - 1)))
    kw: dict[str, Any] = dict(steps=steps, clip_x0=args.clip_x0, device=device)
    if args.sampler == "ddim":
        kw["eta"] = SAMPLE_DEFAULTS["eta"] if args.eta is None else args.eta
    else:
        kw["variance"] = args.variance or SAMPLE_DEFAULTS["variance"]

    use_bar = _use_bar(args)
    bar = _make_bar(total=n_batches * n_steps, unit="step", desc="sample") if use_bar else None
    lines = _Lines(not use_bar)
    gif_frames: list[torch.Tensor] = []
    grid_samples: list[torch.Tensor] = []
    written = 0
    t0 = time.perf_counter()
    try:
        for b in range(n_batches):
            size = min(batch, n - b * batch)
            labels = None if label is None else torch.full((size,), label, dtype=torch.long)
            fn = model_fn(model, device, precision, labels=labels, guidance=guidance)
            want_gif = args.gif is not None and b == 0
            final = None
            for frame in sample_frames(fn, schedule, (size, mc.in_channels, mc.image_size, mc.image_size),
                                       args.sampler, seed=args.seed + b, every=1, include_start=want_gif, **kw):
                if want_gif and (frame.step % gif_every == 0 or frame.is_final):
                    gif_frames.append(make_grid(frame.x[:GIF_SAMPLES].clamp(-1, 1).cpu()))
                if frame.step and bar is not None:
                    bar.update(1)
                if frame.is_final:
                    final = frame.x.clamp(-1, 1).cpu()
            assert final is not None
            for i in range(size):
                save_png(final[i], out / f"sample_{written:0{digits}d}.png")
                written += 1
            if args.grid is not None and len(grid_samples) * batch < GRID_MAX:
                grid_samples.append(final[: GRID_MAX - sum(len(g) for g in grid_samples)])
            lines(f"sample: {written}/{n} images written ({_fmt_duration(time.perf_counter() - t0)})",
                  force=b == n_batches - 1)
    finally:
        if bar is not None:
            bar.close()
    took = time.perf_counter() - t0
    _out(f"wrote {_plural(written, 'image')} ({mc.image_size}x{mc.image_size}, {args.sampler}, {n_steps} steps) "
         f"to {out} in {_fmt_duration(took)}")
    if args.grid is not None:
        shown = torch.cat(grid_samples)[:GRID_MAX]
        save_grid(shown, Path(args.grid).expanduser())
        _out(f"grid      {args.grid} ({_plural(len(shown), 'image')})")
    if args.gif is not None:
        width = gif_frames[-1].shape[-1]
        scale = max(1, min(8, GIF_TARGET_PX // width))
        frames = gif_frames + [gif_frames[-1]] * 12  # hold the result ~1 s (Pillow merges repeated frames)
        save_gif(frames, Path(args.gif).expanduser(), fps=12, scale=scale)
        _out(f"gif       {args.gif} ({len(gif_frames)} frames of the reverse process, x{scale})")
    return 0


# ---- info -----------------------------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .core.checkpoint import load_checkpoint
    from .resources import resolve_model_spec

    ckpt = load_checkpoint(resolve_model_spec(args.checkpoint))
    meta = ckpt.meta
    if args.json:
        _out(json.dumps(meta, indent=2))
        return 0
    mc = ckpt.model_config
    group = "ema" if "ema" in ckpt.tensors else "model"
    params = sum(t.numel() for t in ckpt.tensors.get(group, {}).values())
    train = meta.get("train", {}) or {}
    data = meta.get("data", {}) or {}
    classes = f", {mc.num_classes} classes" if mc.num_classes else ""
    names = ckpt.class_names if mc.num_classes else None
    if names:
        classes += f" ({', '.join(map(str, names[:12]))}{', ...' if len(names) > 12 else ''})"
    _out(f"checkpoint {ckpt.path}")
    _out(f"model      {mc.preset or 'custom'}: {params:,} parameters, {mc.image_size}x{mc.image_size}x"
         f"{mc.in_channels}{classes}")
    _out(f"schedule   {ckpt.schedule.describe()}")
    target = f" of {train['steps']}" if train.get("steps") else ""
    loss = meta.get("last_loss")
    loss_text = f", last loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
    _out(f"step       {ckpt.step}{target} (trained {_fmt_duration(meta.get('elapsed_s'))}{loss_text})")
    if data:
        n = f", {_plural(int(data['n']), 'image')}" if isinstance(data.get("n"), int) else ""
        _out(f"data       {data.get('spec', '?')}{n}")
    if train:
        _out(f"training   batch {train.get('batch_size')}, lr {train.get('lr')}, EMA {train.get('ema_decay')}, "
             f"precision {train.get('precision')}, seed {train.get('seed')}")
    resumable = "optim" in ckpt.tensors and "rng" in ckpt.tensors
    state = "with training state, resumable" if resumable else "weights only"
    _out(f"weights    {meta.get('weights', ckpt.path.name)} ({state})")
    _out(f"created    {meta.get('created', '?')}")
    return 0


# ---- the app and main -----------------------------------------------------------------------------------------------
APP_COMMAND = "app"
_TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


def _app_arguments(argv: list[str]) -> list[str] | None:
    """The app's own arguments when this command line opens the app, else None.

    No command (only --debug), ``app [APP OPTIONS]``, or options the CLI itself does not have
    (``--demo``, ``--screenshot FILE`` ...) open the app and hand the options to it.
    """
    rest = [a for a in argv if a != "--debug"]
    if not rest:
        return []
    if rest[0] == APP_COMMAND:
        return rest[1:]
    if rest[0].startswith("-") and rest[0].split("=", 1)[0] not in _TOP_LEVEL_OPTIONS:
        return rest
    return None


def _open_app(app_argv: list[str]) -> int:
    try:
        from .gui.app import run_app
    except ImportError as e:
        raise CliError(f"the desktop app cannot start ({_one_line(e)}); the headless commands still work, "
                       f"see '{PROG} --help'") from None
    return int(run_app(list(app_argv)) or 0)


def _describe_error(e: BaseException, debug: bool) -> str:
    if isinstance(e, OSError) and not isinstance(e, (ConnectionError,)) and e.strerror:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror}" if where else e.strerror
    text = _one_line(e) or type(e).__name__
    known = ("DataError", "LoadCancelled", "CheckpointError", "TrainingError", "TrainingDiverged",
             "TrainingOutOfMemory", "UnknownModelError", "CliError")
    if type(e).__name__ in known or isinstance(e, (ValueError, RuntimeError, LookupError, OSError)):
        return text
    hint = "" if debug else " (run with --debug for the traceback)"
    return f"{type(e).__name__}: {text}{hint}"


def _safe_streams() -> None:
    # Messages carry symbols like ε and ≥; a console that cannot show them should get a stand-in, not a crash.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _safe_streams()
    try:
        app_args = _app_arguments(argv)
        if app_args is not None:
            return _open_app(app_args)
        first = next((a for a in argv if a != "--debug"), None)
        parser, fid = build_parser(first)
        if argv and argv[0] == "fid" and "unavailable" in fid:
            raise CliError(f"fid is not available in this installation ({fid['unavailable']})")
        args, extra = parser.parse_known_args(argv)
        if extra:
            where = f"{PROG} {args.command}" if args.command else PROG
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{where} --help')")
        args.argv = argv
        debug = debug or bool(getattr(args, "debug", False))
        if args.command is None:
            return _open_app([])
        if args.command == "fid":
            return int(fid["run"](args) or 0)
        return int(args.func(args) or 0)
    except SystemExit as e:  # --help, --version, or a command that exits by itself
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UsageError as e:
        _say(f"error: {e}")
        return 2
    except Stopped as e:
        _say(str(e))
        return e.code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - every runtime error becomes one line (plus the traceback with --debug)
        if debug:
            traceback.print_exc()
        _say(_describe_error(e, debug))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
