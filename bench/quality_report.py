"""Sample quality vs cost: FID and the digit-classifier score for DDPM-1000, DDIM-50 and DDIM-20, with wall times.

Run by hand (not a test):
    python bench/quality_report.py --model builtin:digits            # score the shipped model
    python bench/quality_report.py --train-minutes 10                # train a fresh model for a fixed budget first
Options: --n (samples per sampler, default 256), --samplers (default ddpm-1000,ddim-50,ddim-20), --seed, --json FILE.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_studio.core.io.checkpoint import load_checkpoint  # noqa: E402
from diffusion_studio.core.metrics.features import classifier_score, load_feature_extractor  # noqa: E402
from diffusion_studio.core.metrics.fid import compute_fid  # noqa: E402
from diffusion_studio.core.diffusion.samplers import sample  # noqa: E402
from diffusion_studio.core.diffusion.eps import model_fn  # noqa: E402
from diffusion_studio.data import load_dataset  # noqa: E402
from diffusion_studio.resources import resolve_model_spec  # noqa: E402


def parse_sampler(text: str) -> tuple[str, int]:
    name, _, steps = text.partition("-")
    if name not in ("ddpm", "ddim") or not steps.isdigit():
        raise SystemExit(f"quality_report: bad sampler {text!r} (use e.g. ddpm-1000, ddim-50)")
    return name, int(steps)


def draw(ckpt, sampler: str, steps: int, n: int, seed: int, batch: int, clip: bool,
         precision: str = "fp32") -> tuple[torch.Tensor, float]:
    model = ckpt.build_model("cpu")
    cfg = model.config
    fn = model_fn(model, "cpu", precision, schedule=ckpt.schedule)
    out, t0 = [], time.perf_counter()
    for k, start in enumerate(range(0, n, batch)):
        b = min(batch, n - start)
        kw = dict(steps=steps, seed=seed + k, clip_x0=clip)
        if sampler == "ddpm" and steps == ckpt.schedule.T:
            kw["steps"] = None
        out.append(sample(fn, ckpt.schedule, (b, cfg.in_channels, cfg.image_size, cfg.image_size), sampler, **kw))
    return torch.cat(out).clamp(-1, 1), time.perf_counter() - t0


def train_fresh(minutes: float, out: Path) -> Path:
    """The shipped model's recipe (see resources/models/digits/README.md), cut to a time budget."""
    cmd = [sys.executable, "-m", "diffusion_studio", "train", "--data", "builtin:digits", "--size", "16",
           "--model", "tiny", "--minutes", str(minutes), "--batch", "128", "--lr", "2e-3", "--precision", "bf16",
           "--ema-decay", "0.9995", "--seed", "0", "--out", str(out), "--quiet"]
    print("training:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return out / "checkpoint.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint to score (a path or builtin:NAME)")
    p.add_argument("--train-minutes", type=float, help="train a fresh digits model for this long first")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--samplers", default="ddpm-1000,ddim-50,ddim-20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--no-clip", action="store_true", help="sample without clipping x̂₀ to [−1, 1]")
    p.add_argument("--threads", type=int)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="of the sampling network")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.model and not args.train_minutes:
        args.model = "builtin:digits"
    tmp = None
    if args.train_minutes:
        tmp = tempfile.TemporaryDirectory()
        ckpt_path = train_fresh(args.train_minutes, Path(tmp.name) / "run")
    else:
        ckpt_path = resolve_model_spec(args.model)
    ckpt = load_checkpoint(ckpt_path)
    size = ckpt.model_config.image_size
    real = load_dataset("builtin:digits", size)
    features = load_feature_extractor("builtin:digits")
    real_x = real.batch(torch.arange(len(real)))
    print(f"model: {ckpt.path.name} step {ckpt.step}, {ckpt.meta.get('model', {}).get('preset')} {size}px, "
          f"{ckpt.schedule.describe()}; {args.n} samples per sampler; torch threads {torch.get_num_threads()}")
    print(f"real vs real (two halves) FID: {float(compute_fid(real_x[::2], real_x[1::2], features)):.2f}")
    rows = []
    header = f"{'sampler':<10} {'wall s':>8} {'FID':>7} {'confident':>9} {'classes':>7} {'max/min':>7}  counts 0-9"
    print(header)
    print("-" * len(header))
    for spec in args.samplers.split(","):
        name, steps = parse_sampler(spec.strip())
        steps = min(steps, ckpt.schedule.T)
        x, wall = draw(ckpt, name, steps, args.n, args.seed, args.batch, not args.no_clip, args.precision)
        fid = float(compute_fid(real_x, x, features))
        sc = classifier_score(features, x)
        ratio = sc["max_min_ratio"]
        row = {"sampler": f"{name}-{steps}", "wall_s": round(wall, 2), "fid": round(fid, 3),
               "confident_fraction": sc["confident_fraction"], "classes_present": sc["classes_present"],
               "max_min_ratio": None if math.isinf(ratio) else round(ratio, 3), "counts": sc["counts_all"]}
        rows.append(row)
        print(f"{row['sampler']:<10} {wall:8.1f} {fid:7.2f} {sc['confident_fraction']:9.1%} "
              f"{sc['classes_present']:7d} {ratio:7.2f}  {sc['counts_all']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(args.model or "fresh"), "step": ckpt.step,
                                               "n": args.n, "rows": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
