"""`diffusion-studio train`: its options, and the training loop with progress, metrics.jsonl and Ctrl+C saving."""
from __future__ import annotations

import contextlib
import datetime as _dt
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from .common import (
    POSITIVE, PRESET_NAMES, PROG, SCHEDULE_KINDS, THREADS, THREADS_HELP, UNIT_OPEN, CliError, Lines, Stopped,
    add_command, echo, fmt_duration, int_at_least, limited, make_bar, out_folder, plural, px_list, refuse_other_kind,
    say, set_threads, wants_bar,
)
from .latent_setup import add_latent_option
from .train_dist import REPEAT_S, add_dist_options, current_dist, distributed_run, launch_if_asked
from ..core.train.recipe import SMALL_IMAGES, SMALL_SIDE
from ..core.train.runlog import RUN_JSON, MetricsLog, run_history, write_run_json
from .train_setup import TRAIN_DEFAULTS, check_out_outside_data, setup_fresh, setup_resume


def add_train_parser(sub, common) -> None:
    D = TRAIN_DEFAULTS
    p = add_command(
        sub, common, "train", help="train a model on a dataset",
        description="Train ε_θ on a dataset (DDPM Algorithm 1). Writes RUN_DIR/checkpoint.json with its weights, "
                    "RUN_DIR/metrics.jsonl (one JSON line per logged step) and RUN_DIR/run.json (the command line). "
                    "Ctrl+C stops after the current step and saves a checkpoint; --resume continues it.",
        epilog="every setting is checked before training starts; a batch larger than the dataset is a usage error "
               "(exit 2), found right after the data loads.",
    )
    g = p.add_argument_group("data and output")
    g.add_argument("--data", metavar="SPEC",
                   help="a folder of images (subfolders = classes), an image file, builtin:digits|shapes|photos, "
                        "mnist:PATH or cifar10:PATH; or 2-D points: toy:moons|swissroll|8gaussians|checkerboard|"
                        "rings|spiral|text:WORD, or a .csv of x, y[, label] (required unless --resume, which reloads "
                        "the run's data)")
    g.add_argument("--points", type=POSITIVE, metavar="N",
                   help="points drawn from a toy:NAME set (default: 10,000)")
    g.add_argument("--out", metavar="RUN_DIR", required=True, help="the run folder (created if needed)")
    g.add_argument("--size", type=POSITIVE, metavar="PX",
                   help="image side in pixels; must be divisible by the model's 2^(levels-1) (default: the data's "
                        f"natural size: 16 for builtin:digits, 28→28 for MNIST, else {D['size']})")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 (gray) or 3 (RGB) (default: the data's own)")
    g.add_argument("--flip", action="store_true", default=None, help="random horizontal flips (not for digits)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its checkpoint, up to --steps in total")
    g.add_argument("--overwrite", action="store_true", help="start afresh in a RUN_DIR that already holds a run")
    add_latent_option(g)

    g = p.add_argument_group("model and schedule")
    g.add_argument("--model", metavar="PRESET", choices=(*PRESET_NAMES, "mlp"),
                   help=f"UNet preset: {', '.join(PRESET_NAMES)}, or mlp, the 2-D points' network (default: "
                        f"{D['model']}; {SMALL_IMAGES['model']} for images of {SMALL_SIDE} px or less; mlp for points)")
    labels = g.add_mutually_exclusive_group()
    labels.add_argument("--class-conditional", action="store_true", default=None,
                        help="condition on the data's labels (classifier-free guidance when sampling) (default: "
                             "yes for labelled images in pixel space: builtin:digits, builtin:mnist, a folder "
                             "with one subfolder per class)")
    labels.add_argument("--unconditional", action="store_true", default=None,
                        help="ignore the data's labels: one model of all the images, sampled without a class")
    g.add_argument("--text", action="store_true", default=None,
                   help="condition on the data's captions through the frozen text encoder all-MiniLM-L6-v2 "
                        "(builtin:shapes/digits caption themselves; folders: metadata.jsonl/.csv, NAME.txt or "
                        "subfolder names); sample with --prompt")
    g.add_argument("--cross-attn", type=px_list, metavar="PX[,PX]",
                   help="with --text: the resolutions, in px of the grid the UNet denoises (the latent's for a "
                        "latent model), whose blocks cross-attend to the caption's tokens; the bottleneck always "
                        "does (default: half and a quarter of the grid)")
    g.add_argument("--p-uncond", type=limited("p_uncond"), metavar="P",
                   help="probability of dropping a caption/label to the null condition ∅ in training, which "
                        "classifier-free guidance needs (default: 0.1)")
    g.add_argument("--schedule", choices=SCHEDULE_KINDS, metavar="KIND",
                   help=f"β schedule: {', '.join(SCHEDULE_KINDS)} (default: {D['schedule']})")
    g.add_argument("--T", type=int_at_least(2), metavar="T", help=f"diffusion steps, at least 2 (default: {D['T']})")
    g.add_argument("--beta-start", type=UNIT_OPEN, metavar="B",
                   help=f"β_1 for linear/quadratic/sigmoid, in (0, 1) (default: {D['beta_start']:g})")
    g.add_argument("--beta-end", type=UNIT_OPEN, metavar="B",
                   help=f"β_T for linear/quadratic/sigmoid, in (0, 1) (default: {D['beta_end']:g})")

    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=limited("steps"), metavar="N",
                        help="total optimisation steps of the run, counting earlier ones when resuming "
                             f"(default: a time budget of {D['minutes']:g} minutes)")
    length.add_argument("--minutes", type=limited("minutes"), metavar="M",
                        help="train for M minutes of training time, the learning rate scheduled over them (with "
                             f"--resume: M more minutes) (default: {D['minutes']:g})")
    g.add_argument("--batch", type=limited("batch_size"), metavar="N",
                   help=f"batch size; with several processes the global batch, split evenly over them "
                        f"(default: {D['batch']}; {SMALL_IMAGES['batch']} for images of {SMALL_SIDE} px or less)")
    g.add_argument("--lr", type=limited("lr"), metavar="LR", help=f"AdamW learning rate (default: {D['lr']:g}; "
                   f"{SMALL_IMAGES['lr']:g} for images of {SMALL_SIDE} px or less)")
    g.add_argument("--warmup", type=limited("warmup_steps"), metavar="N",
                   help=f"learning-rate warm-up steps (default: {D['warmup']})")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"),
                   help=f"after warm-up: constant, or cosine decay to lr/10 at the last step or minute "
                        f"(default: {D['lr_schedule']})")
    g.add_argument("--prediction", choices=("eps", "x0", "v"),
                   help=f"what the network predicts: eps (the seeds' ε), x0, or v = √ᾱ ε − √(1−ᾱ) x0; samplers "
                        f"convert to ε exactly (default: {D['prediction']})")
    g.add_argument("--loss-weighting", choices=("uniform", "min_snr"),
                   help="uniform: the seeds' L_simple; min_snr: Min-SNR-γ weights (Hang et al. 2023), which "
                        f"converge faster (default: {D['loss_weighting']})")
    g.add_argument("--snr-gamma", type=limited("snr_gamma"), metavar="G",
                   help=f"γ of Min-SNR-γ (default: {D['snr_gamma']:g})")
    g.add_argument("--ema-decay", type=limited("ema_decay"), metavar="D",
                   help=f"decay of the weights' moving average used for sampling (default: {D['ema_decay']})")
    g.add_argument("--seed", type=limited("seed"), metavar="S", help=f"random seed (default: {D['seed']})")
    g.add_argument("--device", metavar="DEV", help=f"auto, cpu, cuda, cuda:N or mps (default: {D['device']})")
    g.add_argument("--threads", type=THREADS, metavar="N", help=THREADS_HELP)
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="auto = bf16 autocast on CUDA GPUs, and on CPUs with bf16 instructions where a short "
                        f"measurement shows it faster; fp32 elsewhere (default: {D['precision']})")
    g.add_argument("--layout", choices=("auto", "nchw", "nhwc"),
                   help="memory layout on a CPU: auto = whichever this CPU is measured to train faster (the "
                        f"measurement is cached) (default: {D['layout']})")

    g = p.add_argument_group("logging")
    g.add_argument("--log-every", type=limited("log_every"), metavar="N",
                   help=f"write a metrics.jsonl line every N steps (loss = mean since the last line) "
                        f"(default: {D['log_every']})")
    g.add_argument("--checkpoint-every", type=limited("checkpoint_every"), metavar="N",
                   help=f"save a checkpoint every N steps, 0 = only at the end (default: {D['checkpoint_every']})")
    g.add_argument("--preview-every", type=limited("preview_every"), metavar="N",
                   help="save a grid of EMA samples as RUN_DIR/previews/step-NNNNNNN.png every N steps, 0 = never "
                        f"(default: {D['preview_every']})")
    add_dist_options(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    code = launch_if_asked(args)  # --nproc N: this process only launches the N that train
    if code is not None:
        return code
    with distributed_run(args) as ctx:  # a no-op without torchrun's environment
        return _cmd_train(args, ctx.is_main)


def _cmd_train(args, main: bool) -> int:
    from ..core.io import runlock
    from ..core.errors import CheckpointError

    set_threads(args.threads)
    out = out_folder(args.out)
    if args.data is not None:
        check_out_outside_data(out, args.data)
    ckpt_path = out / "checkpoint.json"
    refuse_other_kind(out, ckpt_path.name)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # One writer per run folder, for the whole run (setup included: --overwrite clears files): a second `train`, the
    # GUI or an `export` into this folder is refused with the pid and command of this one.
    try:
        if main:  # several processes: rank 0 is the one writer
            runlock.acquire(out, "train")
    except CheckpointError as e:
        raise CliError(f"{out}: {e.reason}") from None
    try:
        if args.resume:
            trainer, start = setup_resume(args, out, ckpt_path)
        else:
            trainer, start = setup_fresh(args, out, ckpt_path)
        if main:
            _write_run_json(out, args.argv, start if args.resume else None, trainer)
        return _train_loop(args, trainer, out, ckpt_path, start)
    finally:
        if main:
            runlock.release(out)
        if main and created and not ckpt_path.exists():
            (out / runlock.LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()  # a run that never saved leaves no empty folder behind


def _write_run_json(out: Path, argv: list[str], resumed_from: int | None, trainer) -> None:
    import torch

    from ..core.runtime.device import describe_device

    path = out / RUN_JSON
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
    write_run_json(path, entry, run_history(path, warn=say) if resumed_from is not None else [])


class _StopRequest:
    """The first Ctrl+C (or SIGTERM) asks training to stop after the current step; a second Ctrl+C stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self.announce: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
        self._old: dict[int, Any] = {}
        self._first_at = 0.0

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; elsewhere there is nothing to catch
        # SIGHUP: the terminal or SSH session closed; the run saves as for SIGTERM instead of dying silently.
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
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
            if time.monotonic() - self._first_at < REPEAT_S and current_dist().active:
                return  # torchrun forwards the terminal's Ctrl+C, which also reached us: still the first request
            raise KeyboardInterrupt
        self.signum, self._first_at = signum, time.monotonic()
        self.announce("stopping after this step to save a checkpoint (Ctrl+C again to quit without saving)")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)



def _describe_training(trainer, out: Path, start: int) -> None:
    from ..core.runtime.device import describe_device
    from ..core.nets.unet import count_parameters

    mc, cfg = trainer.model.config, trainer.config
    classes = f", {mc.num_classes} classes" if mc.num_classes else ""
    shape = f"{mc.image_size}x{mc.image_size}x{mc.in_channels}" if len(mc.shape) != 1 else f"points in {mc.shape[0]}-D"
    echo(f"model     {mc.preset or 'custom'}: {count_parameters(trainer.model):,} parameters, {shape}{classes}")
    echo(f"schedule  {trainer.schedule.describe()}")
    from ..core.diffusion import objective

    fast = getattr(trainer, "fast_path", None)
    measured = fast is not None and fast.source in ("measured", "cached")
    how = f" ({'NHWC' if trainer.channels_last else 'NCHW'}, measured fastest on this CPU)" if measured else ""
    echo(f"device    {describe_device(trainer.device)}, {trainer.precision}{how}")
    echo(f"objective {objective.describe(trainer.model.config.prediction, trainer.config.loss_weighting, trainer.config.snr_gamma)}")
    length = f"to step {cfg.steps}" if cfg.steps is not None else f"for {cfg.minutes:g} minutes"
    what = f"resuming at step {start}, training {length}" if start else f"training {length}"
    echo(f"run       {out}: {what}, batch {cfg.batch_size}, lr {cfg.lr:g} (Ctrl+C saves a checkpoint and stops)")


def _train_loop(args, trainer, out: Path, ckpt_path: Path, start: int) -> int:
    from ..data.convert import save_grid

    _describe_training(trainer, out, start)
    cfg = trainer.config
    points = len(trainer.model.config.shape) == 1
    unit = "points" if points else "img"
    total = cfg.steps
    use_bar = wants_bar(args)
    lines = Lines(not use_bar and trainer.dist.is_main)  # several processes: rank 0 reports
    bar = make_bar(total=total, initial=start, unit="step", desc="train") if use_bar else None
    stop = _StopRequest()
    if bar is not None:
        stop.announce = bar.write
    if not trainer.dist.is_main:
        stop.announce = lambda text: None  # rank 0 speaks for the run
    stopping = False
    last = None
    t0 = time.perf_counter()
    stop.install()
    log = MetricsLog(out, start, cfg.log_every, warn=say, main=trainer.dist.is_main)
    try:
        for ev in trainer.run():
            last = ev
            record: dict[str, Any] = {}
            if ev.preview is not None:
                rel = Path("previews") / f"step-{ev.step:07d}.png"
                save_grid(ev.preview, out / rel)
                record["preview"] = rel.as_posix()
            if ev.checkpoint is not None:
                record["checkpoint"] = ev.checkpoint.name
            stopping = trainer.dist.any_flag(stop.signum is not None)  # a signal to any rank stops all
            line = log.add(ev, record, force=stopping)
            if line is not None:
                of = f"/{total}" if total else ""
                pct = f" ({100 * ev.step / total:.0f}%)" if total else ""
                lines(f"step {ev.step}{of}{pct}  loss {line['loss']:.4f}  lr {ev.lr:.2e}  {ev.images_per_s:.0f} "
                      f"{unit}/s  elapsed {fmt_duration(ev.elapsed_s)}  eta {fmt_duration(ev.eta_s)}",
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
        log.close()
        stop.uninstall()
        if bar is not None:
            bar.close()

    if stopping:
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
    echo(f"done      {plural(steps, 'step')} in {fmt_duration(took)} ({rate:.0f} {unit}/s){last_loss}; "
         f"checkpoint {path}")
    n = "2000" if points else "16"
    echo(f"next      {shlex.join([PROG, 'sample', '--model', str(out), '--n', n, '--out', str(out / 'samples')])}")
    return 0
