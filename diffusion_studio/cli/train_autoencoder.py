"""`diffusion-studio train-autoencoder`: train the KL-autoencoder a latent diffusion model runs on, then measure it."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import shlex
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .common import (
    NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT, PROG, THREADS_HELP, UNIT_HALF_OPEN, UNIT_OPEN,
    CliError, Lines, Stopped, UsageError, add_command, check_device, echo, fmt_duration, make_bar, out_folder,
    plural, refuse_other_kind, set_threads, wants_bar, write_text_atomic,
)

AE_DEFAULTS: dict[str, Any] = dict(size=32, factor=4, latent_channels=4, base_channels=48, steps=2000, batch=32,
                                   lr=2e-3, warmup=50, loss="l1", beta_kl=1e-6, ema_decay=0.999, seed=0,
                                   device="auto", precision="auto", holdout=0.05, preview_every=250)
AE_FIELD_FLAGS = {"steps": "--steps", "minutes": "--minutes", "batch_size": "--batch", "lr": "--lr",
                  "loss": "--loss", "beta_kl": "--beta-kl", "ema_decay": "--ema-decay", "image_size": "--size",
                  "factor": "--factor", "latent_channels": "--latent-channels", "base_channels": "--base-channels",
                  "device": "--device", "precision": "--precision", "groups": "--base-channels"}


def add_train_autoencoder_parser(sub, common) -> None:
    D = AE_DEFAULTS
    p = add_command(
        sub, common, "train-autoencoder", help="train the autoencoder a latent diffusion model runs on",
        description="Train a small convolutional KL-autoencoder (L1 or MSE reconstruction + β_KL·KL) that maps "
                    "an image to a latent f times smaller per side and back. Afterwards the latent scale factor "
                    "(1/std of the encoded training images) and the reconstruction PSNR on held-out images are "
                    "measured and stored. Writes AE_DIR/autoencoder.json with its weights, AE_DIR/metrics.jsonl "
                    "and AE_DIR/previews/ (originals above reconstructions). Ctrl+C stops and saves.",
        epilog=f"then: {PROG} train --data SPEC --autoencoder AE_DIR --out RUN ...",
    )
    p.add_argument("--data", metavar="SPEC", required=True,
                   help="a folder of images, an image file, builtin:digits|shapes|photos, mnist:PATH or cifar10:PATH")
    p.add_argument("--out", metavar="AE_DIR", required=True, help="the autoencoder's folder (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace an autoencoder already in AE_DIR")
    p.add_argument("--init", metavar="AE",
                   help="start from this trained autoencoder's weights and settings (a folder or builtin:NAME): "
                        "train it longer or on other data; --size/--factor/--latent-channels/--base-channels must "
                        "agree with it or be left out")
    p.add_argument("--size", type=POSITIVE, metavar="PX", help=f"image side, divisible by --factor (default: {D['size']})")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 (gray) or 3 (RGB) (default: the data's own)")
    p.add_argument("--factor", type=int, choices=(2, 4, 8), help=f"downsampling factor f (default: {D['factor']})")
    p.add_argument("--latent-channels", type=POSITIVE, metavar="C",
                   help=f"channels of the latent (default: {D['latent_channels']})")
    p.add_argument("--base-channels", type=POSITIVE, metavar="N",
                   help=f"width of the network, a multiple of 8 (default: {D['base_channels']})")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=POSITIVE, metavar="N", help=f"optimisation steps (default: {D['steps']})")
    length.add_argument("--minutes", type=POSITIVE_FLOAT, metavar="M", help="train for M minutes instead")
    p.add_argument("--batch", type=POSITIVE, metavar="N", help=f"batch size (default: {D['batch']})")
    p.add_argument("--lr", type=UNIT_OPEN, metavar="LR",
                   help=f"peak AdamW learning rate, cosine-decayed to lr/20 (default: {D['lr']:g})")
    p.add_argument("--loss", choices=("l1", "mse"), help=f"reconstruction loss (default: {D['loss']})")
    p.add_argument("--beta-kl", type=NON_NEGATIVE_FLOAT, metavar="B",
                   help=f"weight of the KL term per latent element (default: {D['beta_kl']:g})")
    p.add_argument("--ema-decay", type=UNIT_HALF_OPEN, metavar="D", help=f"(default: {D['ema_decay']})")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--holdout", type=float, metavar="F",
                   help=f"fraction of the images kept out of training to measure PSNR on (default: {D['holdout']})")
    p.add_argument("--preview-every", type=NON_NEGATIVE, metavar="N",
                   help=f"write previews/step-NNNNNNN.png every N steps, 0 = only at the end "
                        f"(default: {D['preview_every']})")
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="S", help=f"random seed (default: {D['seed']})")
    p.add_argument("--device", metavar="DEV", help=f"auto, cpu, cuda, cuda:N or mps (default: {D['device']})")
    p.add_argument("--threads", type=POSITIVE, metavar="N", help=THREADS_HELP)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help=f"auto = bf16 autocast where the CPU/GPU has bf16 instructions (default: {D['precision']})")
    p.set_defaults(func=cmd_train_autoencoder)


def _pick(args, name: str, key: str | None = None):
    value = getattr(args, name)
    return AE_DEFAULTS[key or name] if value is None else value


def _field_error(e: Exception) -> UsageError:
    from .common import field_message

    return UsageError(field_message(e, AE_FIELD_FLAGS))


class _Subset:
    """Some images of a dataset, by index, as an ImageSource."""

    def __init__(self, data, indices):
        import torch

        self.data, self.indices = data, torch.as_tensor(indices, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, indices, device=None, generator=None, flip=False):
        return self.data.batch(self.indices[indices], device=device, generator=generator, flip=flip)


def _load_init(args):
    """The --init autoencoder; its config fills --size/--factor/... (a differing value is a usage error)."""
    if args.init is None:
        return None
    from ..core.io.autoencoder_io import load_autoencoder

    ae = load_autoencoder(args.init)
    c = ae.config
    for flag, name, have in (("--size", "size", c.image_size), ("--factor", "factor", c.factor),
                             ("--latent-channels", "latent_channels", c.latent_channels),
                             ("--base-channels", "base_channels", c.base_channels),
                             ("--channels", "channels", c.image_channels)):
        given = getattr(args, name)
        if given is not None and given != have:
            raise UsageError(f"argument {flag}: the --init autoencoder has {have}, not {given}")
        setattr(args, name, have)
    return ae


def cmd_train_autoencoder(args) -> int:
    from ..core.errors import CheckpointError
    from ..core.io import runlock

    set_threads(args.threads)
    out = out_folder(args.out)
    mpath = out / "autoencoder.json"
    refuse_other_kind(out, mpath.name)
    if mpath.exists() and not args.overwrite:
        raise UsageError(f"argument --out: {out} already holds an autoencoder; add --overwrite or choose another "
                         f"folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # One writer per folder from the start: nothing (metrics.jsonl, run.json) is written while another run holds it.
    try:
        runlock.acquire(out, "train-autoencoder")
    except CheckpointError as e:
        raise CliError(f"{out}: {e.reason}") from None
    try:
        return _train(args, out)
    finally:
        runlock.release(out)
        if created and not mpath.exists():
            (out / runlock.LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()  # an autoencoder that never started leaves no empty folder behind


def _train(args, out: Path) -> int:
    from ..core.nets.autoencoder import AutoencoderConfig
    from ..core.train.autoencoder import AETrainConfig, AutoencoderTrainer
    from .train_setup import _describe_data, _load_data

    init = _load_init(args)
    holdout = _pick(args, "holdout")
    if not 0 <= holdout < 1:
        raise UsageError(f"argument --holdout: must be in [0, 1), got {holdout:g}")
    size = _pick(args, "size")
    try:
        config = AutoencoderConfig(image_size=size, image_channels=args.channels or 3, factor=_pick(args, "factor"),
                                   latent_channels=_pick(args, "latent_channels"),
                                   base_channels=_pick(args, "base_channels"))
        config.validate()
        steps = None if args.minutes is not None else _pick(args, "steps")
        train = AETrainConfig(steps=steps, minutes=args.minutes, batch_size=_pick(args, "batch"),
                              lr=_pick(args, "lr"), warmup_steps=AE_DEFAULTS["warmup"], loss=_pick(args, "loss"),
                              beta_kl=_pick(args, "beta_kl"), ema_decay=_pick(args, "ema_decay"),
                              seed=_pick(args, "seed"), device=_pick(args, "device"),
                              precision=_pick(args, "precision"), flip=bool(args.flip),
                              preview_every=_pick(args, "preview_every") or 0, preview_n=8)
        train.validate()
    except ValueError as e:
        raise _field_error(e) from None
    check_device(train.device, train.precision)
    ds = _load_data(args.data, size, args.channels, wants_bar(args))
    _describe_data(ds)
    config.image_channels = ds.channels
    n_hold = int(round(len(ds) * holdout)) if len(ds) >= 20 else 0
    n_train = len(ds) - n_hold
    if train.batch_size > n_train:
        raise UsageError(f"argument --batch: {train.batch_size} is larger than the {plural(n_train, 'training image')}")
    # The held-out images are the last ones: the built-in sets are shuffled, a folder is in name order.
    train_set, held = _Subset(ds, range(n_train)), (_Subset(ds, range(n_train, len(ds))) if n_hold else None)
    info = {"spec": args.data, "n": n_train, "held_out": n_hold, "size": size, "channels": ds.channels}
    if init is not None:
        info["init"] = {"source": init.source, "fingerprint": init.fingerprint,
                        "steps": init.meta.get("step"), "elapsed_s": init.meta.get("elapsed_s")}
    try:
        trainer = AutoencoderTrainer(config, train_set, train, data_info=info,
                                     init=init.model if init is not None else None)
    except ValueError as e:
        raise _field_error(e) from None
    n_params = sum(p.numel() for p in trainer.model.parameters())
    echo(f"autoencoder {n_params:,} parameters: {size}x{size}x{ds.channels} ↔ {config.latent_channels}x"
         f"{config.latent_size}x{config.latent_size} (f = {config.factor}), {trainer.precision}")
    length = f"{steps} steps" if steps else f"{args.minutes:g} minutes"
    echo(f"run         {out}: {length}, batch {train.batch_size}, lr {train.lr:g}, {train.loss} + {train.beta_kl:g}·KL, "
         f"{plural(n_train, 'training image')}, {n_hold} held out (Ctrl+C saves and stops)")
    _write_run_json(out, args.argv, trainer)
    return _loop(args, trainer, out, train_set, held, info)


def _write_run_json(out: Path, argv: list[str], trainer) -> None:
    import torch

    from ..core.runtime.device import describe_device

    entry = {"command": shlex.join([PROG, *argv]), "argv": list(argv),
             "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "version": __version__,
             "torch": torch.__version__, "device": describe_device(trainer.device), "precision": trainer.precision}
    write_text_atomic(out / "run.json", json.dumps(entry, indent=2) + "\n")


def _save_preview(ev, path: Path) -> None:
    import torch

    from ..data.convert import save_grid

    both = torch.cat([ev.originals, ev.reconstructions])
    save_grid(both, path, nrow=len(ev.originals))


def _loop(args, trainer, out: Path, train_set, held, info) -> int:
    from ..core.train.autoencoder import evaluate_psnr, measure_scale
    from ..core.io.autoencoder_io import save_autoencoder
    from .train import _StopRequest

    cfg = trainer.train
    use_bar = wants_bar(args)
    lines = Lines(not use_bar)
    bar = make_bar(total=cfg.steps, unit="step", desc="autoencoder") if use_bar else None
    stop = _StopRequest()
    if bar is not None:
        stop.announce = bar.write
    t0 = time.perf_counter()
    last = None
    stop.install()
    try:
        with open(out / "metrics.jsonl", "w", encoding="utf-8") as metrics:
            for ev in trainer.run():
                last = ev
                record: dict[str, Any] = {}
                if ev.reconstructions is not None:
                    rel = Path("previews") / f"step-{ev.step:07d}.png"
                    _save_preview(ev, out / rel)
                    record.update(preview=rel.as_posix(), preview_psnr=ev.psnr)
                stopping = stop.signum is not None
                if ev.step % 10 == 0 or ev.done or stopping or record:
                    metrics.write(json.dumps({"step": ev.step, "loss": ev.loss, "rec_loss": ev.rec_loss, "kl": ev.kl,
                                              "images_per_s": ev.images_per_s, "elapsed_s": ev.elapsed_s,
                                              **record}) + "\n")
                    metrics.flush()
                    psnr = f"  preview PSNR {ev.psnr:.2f} dB" if ev.psnr is not None else ""
                    of = f"/{cfg.steps}" if cfg.steps else ""
                    lines(f"step {ev.step}{of}  rec {ev.rec_loss:.4f}  KL {ev.kl:.3f}  {ev.images_per_s:.0f} img/s  "
                          f"elapsed {fmt_duration(ev.elapsed_s)}  eta {fmt_duration(ev.eta_s)}{psnr}",
                          force=ev.done or stopping or bool(record))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(rec=f"{ev.rec_loss:.4f}", img_s=f"{ev.images_per_s:.0f}", refresh=False)
                if stopping:
                    break
    except KeyboardInterrupt:
        raise Stopped(130, f"interrupted at step {trainer.step}; nothing was saved") from None
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()
    if last is None:
        raise CliError("no training step was taken")
    model = trainer.ema
    dev = trainer.device
    scale = measure_scale(model, train_set, device=dev)
    psnr_train = evaluate_psnr(model, _Subset(train_set, range(min(len(train_set), 1000))), device=dev)
    psnr_held = evaluate_psnr(model, held, device=dev) if held is not None else None
    extra = {"step": trainer.step, "data": info, "train": cfg.to_dict(), "elapsed_s": trainer.elapsed_s,
             "metrics": {"psnr_train_db": psnr_train, "psnr_heldout_db": psnr_held, "last_rec_loss": last.rec_loss}}
    path = save_autoencoder(out, model, scale, extra)
    took = time.perf_counter() - t0
    held_text = f", held-out {psnr_held:.2f} dB" if psnr_held is not None else ""
    echo(f"done        {plural(trainer.step, 'step')} in {fmt_duration(took)}; PSNR train {psnr_train:.2f} dB"
         f"{held_text}; latent scale factor {scale:.5f}; saved {path}")
    echo(f"next        {shlex.join([PROG, 'train', '--data', str(info['spec']), '--autoencoder', str(out), '--out', 'RUN'])}")
    if stop.signum is not None:
        raise Stopped(stop.exit_code, f"interrupted at step {trainer.step}; autoencoder saved to {path}")
    return 0
