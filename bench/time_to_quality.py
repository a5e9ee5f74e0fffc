"""Time to quality: train digits with the default recipe for 2, 5 and 10 minutes, and with the previous defaults.

Run by hand on a quiet machine (not a test), about 30 minutes:
    python bench/time_to_quality.py                        # this CPU as it is
    python bench/time_to_quality.py --emulate-avx2         # oneDNN and ATen limited to AVX2, fp32: a CPU without
                                                           # AVX-512 or bf16 (set before torch is imported)
Each run goes through the CLI's own set-up (`diffusion-studio train --data builtin:digits --minutes M`, plus the
previous defaults' flags for the old recipe), so the defaults measured are the ones users get. The new recipe decays
its learning rate over its budget, so each budget is its own run; the old one kept a constant rate, so its 2- and
5-minute models are snapshots of its 10-minute run (identical to separate runs: nothing in it depends on the budget).
Each model then draws 256 DDIM-50 samples, scored by the shipped digit classifier (confident = softmax > 0.8, all ten
digits, max/min class count) and the offline FID in its feature space. Goal (issue 14): after 5 minutes, ≥ 90 %
confident, all ten digits, max/min ≤ 2.5.

The issue's end-to-end check scores what the CLI itself writes (its own sampler defaults, no clipping):
    diffusion-studio train --data builtin:digits --minutes 5 --out RUN
    diffusion-studio sample --model RUN --n 256 --out DIR
    python bench/time_to_quality.py --score-dir DIR
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

if "--emulate-avx2" in sys.argv:  # must be set before torch loads its kernels
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    os.environ["ATEN_CPU_CAPABILITY"] = "avx2"

import torch  # noqa: E402

from diffusion_studio.cli import build_parser  # noqa: E402
from diffusion_studio.cli.train_setup import setup_fresh  # noqa: E402
from diffusion_studio.core.io.checkpoint import load_checkpoint  # noqa: E402
from diffusion_studio.core.metrics.features import classifier_score, load_feature_extractor  # noqa: E402
from diffusion_studio.core.metrics.fid import compute_fid  # noqa: E402
from diffusion_studio.data import load_dataset  # noqa: E402
from quality_report import draw  # noqa: E402

GOAL = dict(minutes=5, confident=0.90, classes=10, max_min=2.5)
# The first recipe of issue 14 (2026-12-01: tiny UNet at 16 px, batch 64, lr 2e-3), before the digits' own 8 px.
PREV16_FLAGS = ["--size", "16", "--model", "tiny", "--batch", "64", "--lr", "2e-3"]
# The defaults before issue 14 (the old TRAIN_DEFAULTS and the layout rule "NHWC for fp32 on a CPU").
OLD_FLAGS = ["--size", "32", "--batch", "64", "--lr", "2e-4", "--warmup", "100", "--lr-schedule", "constant",
             "--ema-decay", "0.999", "--loss-weighting", "uniform", "--prediction", "eps"]


def old_precision_flags(no_bf16: bool) -> list[str]:
    # before: precision auto = bf16 where the CPU has the instructions (then NCHW), else fp32 in NHWC
    return ["--precision", "fp32", "--layout", "nhwc"] if no_bf16 else ["--precision", "bf16", "--layout", "nchw"]


def trainer_for(out: Path, minutes: float, flags: list[str]):
    parser, _ = build_parser("train")
    args = parser.parse_args(["train", "--data", "builtin:digits", "--out", str(out), "--minutes", str(minutes),
                              "--quiet", "--seed", "0", *flags])
    trainer, _ = setup_fresh(args, out, out / "checkpoint.json")
    return trainer


def train(out: Path, minutes: float, flags: list[str], snapshots: tuple[float, ...] = ()) -> dict[float, dict]:
    """Train for ``minutes`` of training time; save a checkpoint at each snapshot minute and at the end."""
    trainer = trainer_for(out, minutes, flags)
    saved: dict[float, dict] = {}
    pending = sorted(m for m in snapshots if m < minutes)
    rate = 0.0
    for ev in trainer.run():
        rate = ev.images_per_s
        while pending and ev.elapsed_s >= pending[0] * 60:
            m = pending.pop(0)
            saved[m] = dict(path=trainer.save(out / f"at-{m:g}min"), steps=trainer.step, img_s=rate)
    saved[minutes] = dict(path=trainer.save(out / "checkpoint.json"), steps=trainer.step, img_s=rate)
    print(f"   trained {minutes:g} min: {trainer.step} steps, {rate:.0f} img/s, {trainer.precision}, "
          f"{'NHWC' if trainer.channels_last else 'NCHW'}, {trainer.model.config.image_size}px", flush=True)
    return saved


def score(path: Path, n: int, seed: int) -> dict:
    ckpt = load_checkpoint(path)
    x, wall = draw(ckpt, "ddim", 50, n, seed, 256, True, "fp32")
    return judge(x, wall)


def read_pngs(folder: Path) -> torch.Tensor:
    """The greyscale PNGs `diffusion-studio sample --out DIR` wrote, as a (N, 1, H, W) batch in [−1, 1]."""
    import numpy as np
    from PIL import Image

    files = sorted(Path(folder).glob("sample_*.png"))
    if not files:
        raise SystemExit(f"{folder}: no sample_*.png files")
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("L"), dtype=np.float32))[None] / 127.5 - 1
                        for f in files])


def judge(x: torch.Tensor, wall: float = 0.0) -> dict:
    if x.shape[-1] != 16:  # judged at the classifier's 16 px, resized as the dataset itself is (bicubic up, area down)
        mode = "bicubic" if x.shape[-1] < 16 else "area"
        x = torch.nn.functional.interpolate(x, size=(16, 16), mode=mode).clamp(-1, 1)
    real = load_dataset("builtin:digits", 16)
    feats = load_feature_extractor("builtin:digits")
    sc = classifier_score(feats, x)
    ratio = sc["max_min_ratio"]
    return dict(fid=round(float(compute_fid(real.batch(torch.arange(len(real))), x, feats)), 3),
                confident=sc["confident_fraction"], classes=sc["classes_present"],
                max_min=None if math.isinf(ratio) else round(ratio, 3), counts=sc["counts_all"],
                sample_s=round(wall, 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10])
    ap.add_argument("--recipes", nargs="+", default=["new", "old"], choices=("new", "old", "prev16"),
                    help="prev16: the first recipe of issue 14 (tiny at 16 px, batch 64), for --minutes-prev16 only")
    ap.add_argument("--minutes-prev16", type=float, nargs="+", default=[5])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--emulate-avx2", action="store_true", help="limit oneDNN/ATen to AVX2 and use fp32")
    ap.add_argument("--json")
    ap.add_argument("--score-dir", metavar="DIR", help="only score the PNGs `diffusion-studio sample --out DIR` wrote "
                    "(the issue's end-to-end check: train --minutes 5, then sample --n 256)")
    args = ap.parse_args()
    if args.score_dir:
        s = judge(read_pngs(Path(args.score_dir)))
        real = load_dataset("builtin:digits", 16)  # the ceiling: the classifier on all 1,797 real digits (stricter
        ref = classifier_score(load_feature_extractor("builtin:digits"),  # than its 270 held-out ones alone)
                               real.batch(torch.arange(len(real))).float())["confident_fraction"]
        print(f"{args.score_dir}: {len(read_pngs(Path(args.score_dir)))} samples  FID {s['fid']:.2f}  confident "
              f"{s['confident']:.1%} (real digits {ref:.1%}: relative {s['confident'] / ref:.3f})  digits "
              f"{s['classes']}  max/min {s['max_min']}  {s['counts']}")
        return 0
    from common import header

    info = header("time_to_quality: builtin:digits, DDIM-50 × 256, digit classifier + FID")
    no_bf16 = args.emulate_avx2
    if no_bf16:
        print("   emulating a CPU without AVX-512/bf16: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, fp32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            flags = (OLD_FLAGS + old_precision_flags(no_bf16)) if recipe == "old" else \
                (["--precision", "fp32"] if no_bf16 else [])
            print(f"\n-- {recipe} recipe: {' '.join(flags) or '(the defaults)'}", flush=True)
            minutes = args.minutes_prev16 if recipe == "prev16" else args.minutes
            if recipe == "prev16":
                flags = flags + PREV16_FLAGS
            if recipe == "old":
                longest = max(minutes)
                runs = train(Path(tmp) / "old", longest, flags, tuple(minutes))
            else:
                runs = {}
                for m in minutes:
                    runs.update(train(Path(tmp) / f"{recipe}-{m:g}", m, flags))
            for m in minutes:
                r = runs[m]
                s = score(r["path"], args.n, args.seed)
                row = dict(recipe=recipe, minutes=m, steps=r["steps"], img_s=round(r["img_s"], 1), **s)
                rows.append(row)
                print(f"   {recipe} {m:4g} min: {r['steps']:5d} steps  FID {s['fid']:6.2f}  confident "
                      f"{s['confident']:6.1%}  digits {s['classes']:2d}  max/min {s['max_min']}  {s['counts']}",
                      flush=True)
    print("\n| recipe | minutes | steps | img/s | FID | confident | digits | max/min |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['minutes']:g} | {r['steps']} | {r['img_s']:.0f} | {r['fid']:.2f} | "
              f"{r['confident']:.1%} | {r['classes']} | {r['max_min']} |")
    goal = [r for r in rows if r["recipe"] == "new" and r["minutes"] == GOAL["minutes"]]
    if goal:
        g = goal[0]
        met = (g["confident"] >= GOAL["confident"] and g["classes"] == GOAL["classes"]
               and g["max_min"] is not None and g["max_min"] <= GOAL["max_min"])
        print(f"\ngoal after {GOAL['minutes']} min (≥ 90 % confident, 10 digits, max/min ≤ 2.5): "
              f"{'MET' if met else 'NOT met'}")
    print(f"load after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "emulate_avx2": no_bf16, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
