"""builtin:mnist at 28×28: which recipe reaches good digits soonest on a 2-core CPU, and how good after 5, 10, 20
minutes. Each candidate trains through the CLI's own set-up with a step budget, then draws 256 DDIM-50 samples,
scored by the shipped MNIST classifier (resources/models/mnist-features: 98.8 % on the 500 held-out digits) as the
share confidently classified relative to the real held-out digits', all ten digits and the max/min class count, and
by FID in that classifier's feature space against the 4,500 training digits.

    python bench/mnist_recipe.py --candidates tiny:64:2e-3 micro:128:3e-3 --steps 1500
    python bench/mnist_recipe.py --candidates tiny:64:2e-3 --steps 1450 2900 5800 --json mnist.json --keep KEEP

What the CLI itself writes is scored the same way (the issue's end-to-end check, with the CLI's own sampler defaults:
DDIM-50, for a class-conditional model one of each digit in turn at guidance w = 2):
    diffusion-studio sample --model builtin:mnist --n 256 --out DIR
    python bench/mnist_recipe.py --score-dir DIR [DIR …]

Several --steps are snapshots of one run whose learning rate follows the default cosine over the longest budget:
step k of it is "k steps into a longer run", not a k-step run (which would have decayed its rate by then); add
--extra "--lr-schedule constant" to make the two the same.

A step budget, not --minutes: the wall-clock minutes a run gets depend on what else the machine does, its steps do
not; the script prints the images per second it measured and the quiet-machine minutes each budget stands for.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from diffusion_studio.cli import build_parser  # noqa: E402
from diffusion_studio.cli.train_setup import setup_fresh  # noqa: E402
from diffusion_studio.core.io.checkpoint import load_checkpoint  # noqa: E402
from diffusion_studio.core.metrics.features import classifier_score, load_feature_extractor  # noqa: E402
from diffusion_studio.core.metrics.fid import compute_fid  # noqa: E402
from diffusion_studio.data import load_dataset  # noqa: E402
from quality_report import draw  # noqa: E402


def real_reference() -> dict:
    """The classifier on the 500 held-out real digits: the ceiling samples are measured against."""
    feats = load_feature_extractor("builtin:mnist")
    real = load_dataset("builtin:mnist", 28, split="test")
    x = real.batch(torch.arange(len(real))).float()
    sc = classifier_score(feats, x)
    return dict(confident=sc["confident_fraction"], max_min=sc["max_min_ratio"])


def judge(x: torch.Tensor, reference: dict) -> dict:
    feats = load_feature_extractor("builtin:mnist")
    train = load_dataset("builtin:mnist", 28)
    sc = classifier_score(feats, x)
    ratio = sc["max_min_ratio"]
    return dict(fid=round(float(compute_fid(train.batch(torch.arange(len(train))), x, feats)), 3),
                confident=sc["confident_fraction"], relative=sc["confident_fraction"] / reference["confident"],
                classes=sc["classes_present"], max_min=None if math.isinf(ratio) else round(ratio, 3),
                counts=sc["counts_all"])


def train(out: Path, model: str, batch: int, lr: float, snapshots: list[int], extra: list[str]) -> list[dict]:
    """One run up to the last snapshot; a checkpoint at each snapshot, with the wall seconds and images/s so far."""
    parser, _ = build_parser("train")
    args = parser.parse_args(["train", "--data", "builtin:mnist", "--out", str(out), "--steps", str(max(snapshots)),
                              "--model", model, "--batch", str(batch), "--lr", str(lr), "--quiet", "--seed", "0",
                              "--checkpoint-every", "0", "--preview-every", "0", *extra])
    trainer, _ = setup_fresh(args, out, out / "checkpoint.json")
    t0, rate, saved = time.perf_counter(), [], []
    for ev in trainer.run():
        if ev.step > 20:  # past the first steps' warm-up of kernels and caches
            rate.append(ev.images_per_s)
        if ev.step in snapshots:
            wall = time.perf_counter() - t0
            path = trainer.save(out / f"step-{ev.step}" / "checkpoint.json")
            saved.append(dict(path=path, steps=ev.step, wall_s=wall,
                              img_s=sorted(rate)[len(rate) // 2] if rate else 0.0, precision=trainer.precision))
            print(f"   … {model} step {ev.step}: {wall / 60:.1f} min wall", flush=True)
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", nargs="+", default=["tiny:64:2e-3"], help="MODEL:BATCH:LR")
    ap.add_argument("--steps", type=int, nargs="+", default=[1500])
    ap.add_argument("--extra", default="", help="more train flags, e.g. '--loss-weighting uniform'")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--json")
    ap.add_argument("--keep", metavar="DIR", help="copy each snapshot's checkpoint folder here")
    ap.add_argument("--score-dir", nargs="+", metavar="DIR", help="only score the sample_*.png files in each DIR")
    args = ap.parse_args()
    from common import footer, header

    if args.score_dir:
        from time_to_quality import read_pngs

        ref = real_reference()
        print(f"real held-out digits: {ref['confident']:.1%} confident, max/min {ref['max_min']:.2f}")
        for folder in args.score_dir:
            x = read_pngs(Path(folder))
            s = judge(x, ref)
            print(f"{folder}: {len(x)} samples  FID {s['fid']:.2f}  confident {s['confident']:.1%} (relative "
                  f"{s['relative']:.3f})  digits {s['classes']}  max/min {s['max_min']}  {s['counts']}", flush=True)
        return 0

    info = header("mnist_recipe: builtin:mnist at 28 px, DDIM-50 × 256, MNIST classifier + FID")
    ref = real_reference()
    print(f"   real held-out digits: {ref['confident']:.1%} confident, max/min {ref['max_min']:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cand in args.candidates:
            model, batch, lr = cand.split(":")
            for r in train(Path(tmp) / cand.replace(":", "_"), model, int(batch), float(lr), sorted(args.steps),
                           args.extra.split()):
                steps = r["steps"]
                x, wall = draw(load_checkpoint(r["path"]), "ddim", 50, args.n, 0, 256, True, "fp32")
                s = judge(x, ref)
                quiet_min = steps * int(batch) / max(r["img_s"], 1e-9) / 60
                row = dict(candidate=cand, steps=steps, img_s=round(r["img_s"], 1), wall_min=round(r["wall_s"] / 60, 2),
                           minutes_at_rate=round(quiet_min, 2), precision=r["precision"], sample_s=round(wall, 1), **s)
                rows.append(row)
                print(f"   {cand:16s} {steps:5d} steps  {r['img_s']:5.0f} img/s ({r['precision']})  "
                      f"{quiet_min:5.1f} min at that rate  FID {s['fid']:6.2f}  confident {s['confident']:6.1%} "
                      f"(relative {s['relative']:.3f})  digits {s['classes']}  max/min {s['max_min']}",
                      flush=True)
                if args.keep:
                    import shutil
                    dest = Path(args.keep) / f"{cand.replace(':', '_')}-{steps}"
                    shutil.copytree(Path(r["path"]).parent, dest, dirs_exist_ok=True)
    print("\n| recipe | steps | img/s | minutes at that rate | FID | confident | relative | digits | max/min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['candidate']} | {r['steps']} | {r['img_s']:.0f} | {r['minutes_at_rate']:.1f} | {r['fid']:.2f} | "
              f"{r['confident']:.1%} | {r['relative']:.3f} | {r['classes']} | {r['max_min']} |")
    footer()
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "reference": ref, "rows": rows}, indent=2,
                                              default=str))
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
