"""`diffusion-studio fid`: FID between a real and a generated image set, the classifier score, training feature nets."""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from ..core.runtime.device import resolve_device
from ..core.metrics.features import (
    BUILD_COMMANDS, FeatureNet, classifier_score, default_features_for, goal_met, load_feature_extractor,
    save_feature_net, train_feature_net,
)
from ..core.metrics.fid import FIDStats, FIDWarning, extractor_name, fid_from_stats, image_stats
from .common import NON_NEGATIVE, POSITIVE, UsageError, int_at_least

DIGITS_COMMAND = BUILD_COMMANDS["digits"]
_STATS_SUFFIXES = (".npz",)

HELP = "FID of generated images against real ones, with an offline feature network"
DESCRIPTION = """\
Fréchet distance between Gaussian fits of the features of REAL and FAKE images (lower is better; 0 for identical sets).
No download ever happens: features come from a small network trained on the data itself (the one for builtin:digits
ships with the app), from a FeatureNet you trained with --train-features, or from Inception-v3 weights you already
have on disk (pytorch-fid's pt_inception-2015-12-05-*.pth, read with torch.load(weights_only=True), or .safetensors).
FIDs from different feature networks are not comparable with each other, nor with published Inception FIDs.
"""
EPILOG = f"""\
examples:
  diffusion-studio fid builtin:digits samples/                     FID + classifier score with the shipped digits net
  diffusion-studio fid ~/cats --train-features cats-features       train a feature net on your own images
  diffusion-studio fid ~/cats samples/ --features cats-features
  diffusion-studio fid ~/cats samples/ --features inception:pt_inception-2015-12-05-6726825d.pth --size 64
  diffusion-studio fid builtin:digits --features builtin:digits --save-stats digits-stats.npz
  diffusion-studio fid digits-stats.npz samples/ --features builtin:digits   (REAL may be saved statistics)

the shipped digits feature network was made with:
  {DIGITS_COMMAND}
"""


def add_fid_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `fid` subcommand on an argparse subparsers object; its handler is run_fid (also set as func)."""
    p = subparsers.add_parser("fid", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=run_fid)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("real", metavar="REAL", help="real images: a folder, an image, builtin:digits, mnist:PATH, "
                                                "cifar10:PATH, or statistics saved with --save-stats (.npz)")
    p.add_argument("fake", metavar="FAKE", nargs="?", help="generated images: a folder (or any spec REAL accepts)")
    p.add_argument("--split", choices=("train", "test", "all"), default="train",
                   help="which of REAL's images, for data with a held-out split (builtin:mnist, mnist:PATH, "
                        "cifar10:PATH): train (default), test (held out) or all")
    p.add_argument("--features", metavar="SPEC", default=None,
                   help="builtin:digits | PATH of a saved feature net | inception:PATH of Inception weights "
                        "(default: builtin:digits when REAL is builtin:digits, or the net --train-features makes)")
    p.add_argument("--size", type=POSITIVE, default=None,
                   help="side the images are loaded at (default: the feature net's input size; 64 for Inception, "
                        "32 for --train-features, whose network looks at ≤ 32×32)")
    p.add_argument("--batch", type=POSITIVE, default=None,
                   help="images per forward pass (default 256; 32 for Inception, whose activations are large)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--n-max", type=int_at_least(2), default=None, metavar="N",
                   help="use at most N images of each set, a seeded random subset (default: all)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed for --n-max subsets and --train-features (default 0)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="confidence above which a sample counts as recognised in the classifier score (default 0.8)")
    p.add_argument("--save-stats", metavar="PATH", default=None,
                   help="also save REAL's feature statistics (.npz or .safetensors) to reuse as REAL later")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    t = p.add_argument_group("training a feature network")
    t.add_argument("--train-features", metavar="OUT", default=None,
                   help="train a feature net on REAL and save it to the folder OUT (a classifier when REAL has "
                        "labels, e.g. class sub-folders; otherwise self-supervised rotation prediction)")
    t.add_argument("--epochs", type=POSITIVE, default=30, help="training epochs for --train-features (default 30)")
    t.add_argument("--self-supervised", action="store_true",
                   help="with --train-features: ignore labels and train the rotation-prediction task")


# ---- loading --------------------------------------------------------------------------------------------------------
def _is_stats(spec: str) -> bool:
    p = Path(spec)
    if p.suffix.lower() in _STATS_SUFFIXES:
        return True
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return False
    with open(p, "rb") as f:  # the statistics' marker sits in the safetensors header, at the start
        return b"diffusion-studio-fid-stats" in f.read(4096)


class _Subset:
    """A seeded random subset of an ImageDataset, still uint8 in memory: batches are converted only when drawn."""

    def __init__(self, ds, n_max: int | None, seed: int):
        n = len(ds)
        if n_max is not None and n > n_max:
            self.idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_max].sort().values
        else:
            self.idx = torch.arange(n)
        self.ds = ds

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, indices, device=None, generator=None, flip=False) -> torch.Tensor:
        return self.ds.batch(self.idx[torch.as_tensor(indices, dtype=torch.long)], device, generator, flip)

    def labels(self) -> torch.Tensor | None:
        return None if self.ds.labels is None else self.ds.labels[self.idx]

    def all(self) -> torch.Tensor:
        return self.batch(torch.arange(len(self)))


def load_images(spec: str, size: int, n_max: int | None = None, seed: int = 0,
                split: str = "train") -> tuple[Any, _Subset]:
    """(dataset, a subset of at most n_max of its images); a one-line DataError when the spec cannot be read.
    ``split`` picks the held-out images of builtin:mnist, mnist:PATH and cifar10:PATH."""
    from ..data import load_dataset

    ds = load_dataset(spec, size, split=split)
    return ds, _Subset(ds, n_max, seed)


def _describe(ds, n: int) -> str:
    ch = "channel" if ds.channels == 1 else "channels"
    return f"{ds.spec or ds.name} ({n} images, {ds.size}×{ds.size}, {ds.channels} {ch})"


# ---- training -------------------------------------------------------------------------------------------------------
def train_features_on(spec: str, out: str | Path, size: int = 32, epochs: int = 30, seed: int = 0,
                      self_supervised: bool = False, device: str = "auto", n_max: int | None = None,
                      log=None) -> tuple[FeatureNet, dict[str, Any]]:
    """Train a FeatureNet on the dataset spec and save it to the folder out; returns (net, metrics)."""
    ds, subset = load_images(spec, size, n_max, seed)
    images, labels = subset.all(), (None if self_supervised else subset.labels())
    if labels is not None and labels.unique().numel() < 2:
        labels = None  # one class teaches nothing: fall back to the self-supervised task
    dev = resolve_device(device)

    def progress(epoch, total, loss):
        if log is not None and (epoch == total or epoch % 5 == 0):
            log(f"  epoch {epoch}/{total}  loss {loss:.4f}")

    net, metrics = train_feature_net(images, labels, epochs=epochs, seed=seed, device=dev,
                                     input_size=min(size, 32),
                                     class_names=ds.class_names if labels is not None else None, progress=progress)
    # Only the spec as typed is recorded (for builtin data that is all there is): no machine paths are resolved.
    save_feature_net(net, out, meta={"trained_on": {"spec": str(spec), "size": size, "n": len(images)}})
    return net, metrics


# ---- the command ----------------------------------------------------------------------------------------------------
def _default_features(args) -> str:
    spec = args.features or default_features_for(args.real)
    if spec:
        return spec
    raise UsageError("argument --features: no feature network is known for this data; pass --features "
                     "builtin:digits, the folder of a feature net, or inception:PATH, or make one with "
                     "--train-features OUT")


def _jsonable(o: Any) -> Any:
    # Strict JSON has no Infinity: a missing class's ratio becomes null.
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o if isinstance(o, (str, int, float, bool, type(None))) else str(o)


def _text_score(score: dict[str, Any]) -> list[str]:
    names = score["class_names"]
    w = max(4, *(len(n) for n in names), *(len(str(c)) for c in score["counts_all"])) + 1
    ratio = score["max_min_ratio"]
    return [
        f"classifier score (confidence > {score['threshold']:g}): {100 * score['confident_fraction']:.1f}% confident, "
        f"mean confidence {score['mean_confidence']:.3f}",
        "  class      " + "".join(n.rjust(w) for n in names),
        "  all        " + "".join(str(c).rjust(w) for c in score["counts_all"]),
        "  confident  " + "".join(str(c).rjust(w) for c in score["counts_confident"]),
        f"  max/min class ratio: {'inf (a class is missing)' if math.isinf(ratio) else f'{ratio:.2f}'}; "
        f"{score['classes_present']}/{len(names)} classes present among confident samples",
        f"  goal (≥ 90% confident, every class, max/min ≤ 2.5): {'met' if goal_met(score) else 'not met'}",
    ]


def run_fid(args: argparse.Namespace, out=None, err=None) -> int:
    """Handle `diffusion-studio fid`; raises ValueError (DataError, CheckpointError) with a one-line message."""
    out, err = out or sys.stdout, err or sys.stderr
    log = (lambda s: print(s, file=err)) if args.json else (lambda s: print(s, file=out))
    # Usage errors (exit 2), also for callers that built ``args`` without this module's parser types.
    for name in ("batch", "epochs", "size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"argument --{name}: must be at least 1, got {getattr(args, name)}")
    if args.n_max is not None and args.n_max < 2:
        raise UsageError(f"argument --n-max: must be at least 2, got {args.n_max}")
    if not 0 < args.threshold < 1:
        raise UsageError(f"argument --threshold: must lie between 0 and 1, got {args.threshold}")
    from .common import writable_file

    writable_file(args.save_stats, "--save-stats")  # before the statistics are computed
    device = resolve_device(args.device)
    result: dict[str, Any] = {}
    extractor = None
    if args.train_features:
        if _is_stats(args.real):
            raise UsageError("argument --train-features: REAL must be images, not saved statistics")
        size = args.size or 32
        log(f"training a feature network on {args.real} at {size}×{size} for {args.epochs} epochs …")
        extractor, metrics = train_features_on(args.real, args.train_features, size=size, epochs=args.epochs,
                                               seed=args.seed, self_supervised=args.self_supervised,
                                               device=args.device, n_max=args.n_max, log=log)
        acc = metrics["heldout_accuracy"]
        task = "class" if metrics["task"] == "classify" else "self-supervised rotation"
        log(f"held-out {task} accuracy: {100 * acc:.2f}% ({metrics['n_heldout']} images, {metrics['seconds']:.0f} s)")
        log(f"saved to {args.train_features}")
        result["training"] = metrics
        if args.fake is None and not args.save_stats:
            if args.json:
                print(json.dumps(_jsonable(result)), file=out)
            return 0
    if args.fake is None and not args.save_stats:
        raise UsageError("FAKE: give the generated images to compare with (or --train-features / --save-stats)")
    if extractor is None:
        spec = _default_features(args)
        extractor = load_feature_extractor(spec, device)
        result["features"] = spec
    extractor = extractor.to(device).eval()
    is_net = isinstance(extractor, FeatureNet)
    size = args.size or (extractor.config.input_size if is_net else 64)
    batch = args.batch or (256 if is_net else 32)
    log(f"features: {extractor_name(extractor)} ({extractor.feature_dim}-d)")

    fake = None
    if args.fake is not None:  # loaded first: a wrong FAKE path fails before the slow real-set features
        ds_f, fake = load_images(args.fake, size, args.n_max, args.seed + 1)
        log(f"generated: {_describe(ds_f, len(fake))}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDWarning)  # the notes are printed once, with the score
        if _is_stats(args.real):
            real_stats = FIDStats.load(args.real)
            log(f"real: statistics {Path(args.real).name} ({real_stats.n} images)")
        else:
            ds, real = load_images(args.real, size, args.n_max, args.seed, getattr(args, "split", "train"))
            log(f"real: {_describe(ds, len(real))}")
            real_stats = image_stats(real, extractor, batch, device,
                                     meta={"spec": str(args.real), "size": size})
        if args.save_stats:
            real_stats.save(args.save_stats)
            log(f"saved real statistics to {args.save_stats}")
            result["saved_stats"] = str(args.save_stats)
        if fake is None:
            if args.json:
                print(json.dumps(_jsonable(result)), file=out)
            return 0
        score = fid_from_stats(real_stats, image_stats(fake, extractor, batch, device))
    result.update(fid=float(score), n_real=score.n_real, n_fake=score.n_fake, dim=score.dim,
                  warnings=list(score.warnings))
    if is_net and extractor.is_classifier:
        result["classifier_score"] = classifier_score(extractor, fake, args.threshold, batch, device)
    if args.json:
        print(json.dumps(_jsonable(result)), file=out)
        return 0
    print(f"FID: {float(score):.4f}", file=out)
    for note in score.warnings:
        print(f"warning: {note}", file=out)
    if "classifier_score" in result:
        for line in _text_score(result["classifier_score"]):
            print(line, file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m diffusion_studio.cli.fid ...`), for use before or without the main CLI."""
    parser = argparse.ArgumentParser(prog="diffusion-studio fid", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_fid(args)
    except UsageError as e:
        print(f"diffusion-studio fid: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"diffusion-studio fid: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
