"""Sample quality against model evaluations for every sampler: the classifier score (share of samples the shipped
classifier recognises with softmax > 0.8) and FID (the shipped feature nets) at 5, 10, 20, 50 evaluations, and DDPM
at all T steps; seconds per sample. The same code as the app's Quality tab (jobs/quality.py).

Run by hand (not a test), on a quiet machine:
    python bench/sampler_quality.py --model builtin:digits --n 1000 --json digits.json --plot docs/sampler-quality.png
    python bench/sampler_quality.py --model builtin:shapes --n 1000 --json shapes.json
Then paste the printed table into bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common import footer, header  # bench/common.py puts the repository on sys.path

from diffusion_studio.core.io.models import load_model  # noqa: E402
from diffusion_studio.jobs import quality  # noqa: E402

NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "heun": "Heun", "dpm++2m": "DPM-Solver++(2M)",
         "unipc": "UniPC", "euler_a": "Euler ancestral"}


def table(points: list[quality.QualityPoint], T: int) -> str:
    budgets = sorted({p.evals for p in points if not (p.sampler == "ddpm" and p.steps == T)})
    rows = ["| sampler | " + " | ".join(f"{e} evals" for e in budgets) + " |",
            "|---|" + "---|" * len(budgets)]
    for s in quality.SAMPLERS:
        cells = []
        for e in budgets:
            hit = [p for p in points if p.sampler == s and p.evals == e]
            cells.append(f"{100 * hit[0].confident:.1f} % / {hit[0].fid:.3f}" if hit else "—")
        rows.append(f"| {NAMES[s]} | " + " | ".join(cells) + " |")
    ref = [p for p in points if p.sampler == "ddpm" and p.steps == T]
    if ref:
        r = ref[0]
        rows.append(f"| DDPM, all {T} steps | {100 * r.confident:.1f} % / {r.fid:.3f} at {r.evals} evals |" +
                    " |" * (len(budgets) - 1))
    return "\n".join(rows)


def plot(points: list[quality.QualityPoint], T: int, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    ref = [p for p in points if p.sampler == "ddpm" and p.steps == T]
    for s in quality.SAMPLERS:
        pts = sorted((p for p in points if p.sampler == s and not (s == "ddpm" and p.steps == T)),
                     key=lambda p: p.evals)
        if not pts:
            continue
        xs = [p.evals for p in pts]
        axes[0].plot(xs, [100 * p.confident for p in pts], "o-", label=NAMES[s])
        axes[1].plot(xs, [p.fid for p in pts], "o-", label=NAMES[s])
    for ax, value in zip(axes, (100 * ref[0].confident, ref[0].fid) if ref else ()):
        ax.axhline(value, ls="--", c="k", lw=1, label=f"DDPM, {T} steps")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, what in zip(axes, ("% confidently classified", "FID (lower is better)")):
        ax.set_xscale("log")
        ax.set_xticks(quality.BUDGETS)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("model evaluations per sample")
        ax.set_title(what)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:digits")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--samplers", default=",".join(quality.SAMPLERS))
    ap.add_argument("--json")
    ap.add_argument("--plot")
    ap.add_argument("--from-json", metavar="FILE", help="only print the table and draw the plot of an earlier --json")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        points = [quality.QualityPoint(**p) for p in saved["points"]]
        T = max(p.steps for p in points if p.sampler == "ddpm")
        print(table(points, T))
        if args.plot:
            plot(points, T, f"{saved['model']}: quality against model evaluations ({saved['n']} samples each)",
                 Path(args.plot))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    info = header(f"sampler_quality: {args.model}, n = {args.n}, seed {args.seed}, {args.precision}")
    loaded = load_model(args.model)
    judge = quality.judge_for(loaded)
    if judge is None:
        print(f"no shipped classifier for {args.model}'s data", file=sys.stderr)
        return 1
    T = loaded.schedule.T
    runs = quality.plan(T, tuple(args.samplers.split(",")))
    points = []
    for p in quality.evaluate(loaded, judge, runs, n=args.n, seed=args.seed, precision=args.precision,
                              use_cache=False):
        points.append(p)
        print(f"{p.sampler:9s} {p.steps:5d} steps {p.evals:5d} evals  confident {100 * p.confident:5.1f} %  "
              f"FID {p.fid:8.3f}  {1000 * p.seconds_per_sample:7.2f} ms/sample", flush=True)
    print()
    print(table(points, T))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "model": args.model, "n": args.n,
                                               "points": [p.__dict__ for p in points]}, indent=1))
    if args.plot:
        plot(points, T, f"{args.model}: quality against model evaluations ({args.n} samples each)", Path(args.plot))
    footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
