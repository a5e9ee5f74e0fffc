"""Prompt adherence and FID against guidance weight w for a text-to-image model (issue 11). Run by hand, not a test.

    python bench/prompt_adherence.py --model builtin:shapes --n 6 --plot docs/guidance_curve.png --json out.json
    python bench/prompt_adherence.py --digits-model RUN_DIR --n 20          # "the digit K" for a text digits model

Shapes: every prompt "a {colour} {shape}" (9 × 5), n samples each (DDIM), for each w. Shape is judged by a
FeatureNet (core/metrics/features.py) trained here on held-out builtin:shapes images (another seed than the training set);
colour by the ink's nearest named colour (the ink = pixels far from the border's median colour). Both judges are
first scored on real held-out images, so their own error is on the record. FID: the judge's features, generated
samples of all prompts against real held-out shapes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_studio.core.io.checkpoint import load_checkpoint  # noqa: E402
from diffusion_studio.core.diffusion.eps import model_fn  # noqa: E402
from diffusion_studio.core.metrics.features import load_feature_net, save_feature_net, train_feature_net  # noqa: E402
from diffusion_studio.core.io.space import PixelSpace, space_from_checkpoint  # noqa: E402
from diffusion_studio.core.metrics.fid import compute_fid  # noqa: E402
from diffusion_studio.core.diffusion.samplers import sample  # noqa: E402
from diffusion_studio.core.nets.text import get_encoder  # noqa: E402
from diffusion_studio.data.shapes import INKS as INK_RGB, SHAPE_CLASSES, shapes  # noqa: E402
from diffusion_studio.data.captions import DIGIT_WORDS
from diffusion_studio.data.shapes import COLOUR_NAMES, article  # noqa: E402
from diffusion_studio.resources import resolve_model_spec  # noqa: E402

INKS = torch.tensor(INK_RGB, dtype=torch.float32)


def ink_colour(images: torch.Tensor) -> torch.Tensor:
    """Index into COLOUR_NAMES of each image's ink (−1 when no pixel stands out from the background)."""
    u = (images.clamp(-1, 1) + 1) * 127.5  # (B, 3, H, W) in 0..255
    b = u.shape[0]
    border = torch.cat([u[:, :, 0], u[:, :, -1], u[:, :, :, 0], u[:, :, :, -1]], dim=-1)  # (B, 3, 4H)
    bg = border.median(dim=-1).values  # (B, 3)
    px = u.flatten(2).transpose(1, 2)  # (B, HW, 3)
    dist = (px - bg[:, None]).norm(dim=-1)
    out = torch.full((b,), -1, dtype=torch.long)
    for i in range(b):
        far = dist[i] > max(60.0, 0.5 * float(dist[i].max()))
        if far.sum() < 2:
            continue
        ink = px[i][far].median(dim=0).values
        out[i] = int((INKS - ink).norm(dim=-1).argmin())
    return out


def generate(ckpt, model, prompts: list[str], n: int, w: float, steps: int, seed: int, batch: int,
             space=None) -> torch.Tensor:
    """Images in [−1, 1]: pixel models clip x̂₀ after guidance; a latent model (``space``) samples unclipped latents
    and decodes them, as `diffusion-studio sample` does."""
    space = space or PixelSpace()
    enc = get_encoder(model.config.text_encoder)
    emb = enc.encode(prompts)
    cfg = model.config
    rows = [(p, k) for p in range(len(prompts)) for k in range(n)]
    out = []
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        idx = torch.tensor([p for p, _ in chunk])
        ctx = emb.context()
        ctx = type(ctx)(*(c[idx] for c in ctx))
        fn = model_fn(model, "cpu", PRECISION, condition=ctx, guidance=w, schedule=ckpt.schedule)
        out.append(sample(fn, ckpt.schedule, (len(chunk), cfg.in_channels, cfg.image_size, cfg.image_size), "ddim",
                          steps=steps, seed=seed + s, clip_x0=space.clips_x0))
    return space.decode(torch.cat(out)).clamp(-1, 1)


PRECISION = "fp32"


def shapes_report(args) -> dict:
    ckpt = load_checkpoint(resolve_model_spec(args.model), groups=("model", "ema", "autoencoder"))
    model = ckpt.build_model("cpu")
    space = space_from_checkpoint(ckpt)  # pixels, or the latent model's own autoencoder
    size = space.config.image_size if space.is_latent else model.config.image_size
    t0 = time.perf_counter()
    test_set = shapes(size, 3, n=1000, seed=202)
    cache = Path(args.judge_cache) if args.judge_cache else None
    if cache is not None and cache.exists():  # the same judge for several models' reports, trained once
        judge, metrics = load_feature_net(cache), {"seconds": 0.0}
    else:
        train_set = shapes(size, 3, n=args.judge_n, seed=101)
        judge, metrics = train_feature_net(train_set.batch(torch.arange(len(train_set))), train_set.labels,
                                           epochs=args.judge_epochs, seed=0, class_names=list(SHAPE_CLASSES),
                                           feature_dim=32)  # 32-d: FID over a few hundred samples stays full-rank
        if cache is not None:
            save_feature_net(judge, cache, {"judge_n": args.judge_n, "epochs": args.judge_epochs, "size": size})
    real = test_set.batch(torch.arange(len(test_set)))
    with torch.no_grad():
        real_shape_acc = float((judge.logits(real).argmax(1) == test_set.labels).float().mean())
    real_colour = torch.tensor([next(COLOUR_NAMES.index(w) for w in c.replace(",", "").split() if w in COLOUR_NAMES)
                                for c in test_set.captions])
    real_colour_acc = float((ink_colour(real) == real_colour).float().mean())
    print(f"judges: shape classifier {real_shape_acc:.1%} on 1000 real held-out shapes "
          f"({metrics['seconds']:.0f} s to train), colour judge {real_colour_acc:.1%}", flush=True)
    prompts, want_shape, want_colour = [], [], []
    for ci, colour in enumerate(COLOUR_NAMES):
        for si, shape in enumerate(SHAPE_CLASSES):
            prompts.append(f"{article(colour)} {colour} {shape}")
            want_shape.append(si)
            want_colour.append(ci)
    want_shape = torch.tensor(want_shape).repeat_interleave(args.n)
    want_colour = torch.tensor(want_colour).repeat_interleave(args.n)
    rows = []
    for w in args.w:
        t1 = time.perf_counter()
        x = generate(ckpt, model, prompts, args.n, w, args.steps, args.seed, args.batch, space)
        with torch.no_grad():
            shape_ok = judge.logits(x).argmax(1) == want_shape
        colour_ok = ink_colour(x) == want_colour
        fid = float(compute_fid(real, x, judge))
        row = {"w": w, "shape": float(shape_ok.float().mean()), "colour": float(colour_ok.float().mean()),
               "both": float((shape_ok & colour_ok).float().mean()), "fid": fid, "n": len(x),
               "seconds": round(time.perf_counter() - t1, 1),
               "per_shape": {s: float(shape_ok[want_shape == i].float().mean()) for i, s in enumerate(SHAPE_CLASSES)},
               "per_colour": {c: float(colour_ok[want_colour == i].float().mean()) for i, c in enumerate(COLOUR_NAMES)}}
        rows.append(row)
        print(f"w={w:g}: shape {row['shape']:.1%}  colour {row['colour']:.1%}  both {row['both']:.1%}  "
              f"FID {fid:.2f}  ({len(x)} samples, {row['seconds']:.0f} s)", flush=True)
        if args.grid and w == args.w[-1]:
            from diffusion_studio.data.convert import save_grid
            save_grid(x[:: args.n][:45], Path(args.grid))
    return {"model": args.model, "image_size": size, "steps": args.steps, "n_per_prompt": args.n,
            "prompts": len(prompts), "judge_shape_accuracy_real": real_shape_acc,
            "judge_colour_accuracy_real": real_colour_acc, "judge_seconds": metrics["seconds"], "rows": rows,
            "total_seconds": round(time.perf_counter() - t0, 1)}


def digits_report(args) -> dict:
    from diffusion_studio.core.metrics.features import builtin_feature_path, load_feature_net

    ckpt = load_checkpoint(resolve_model_spec(args.digits_model), groups=("model", "ema"))
    model = ckpt.build_model("cpu")
    judge = load_feature_net(builtin_feature_path("digits"))
    prompts = [f"the digit {DIGIT_WORDS[k]}" for k in range(10)]
    want = torch.arange(10).repeat_interleave(args.n)
    out = {}
    for w in args.digits_w:
        x = generate(ckpt, model, prompts, args.n, w, args.steps, args.seed, args.batch)
        with torch.no_grad():
            pred = judge.logits(x).argmax(1)
        ok = pred == want
        out[str(w)] = {"accuracy": float(ok.float().mean()),
                       "per_digit": [float(ok[want == k].float().mean()) for k in range(10)]}
        print(f"digits w={w:g}: {out[str(w)]['accuracy']:.1%} of 'the digit K' samples classified as K "
              f"({len(x)} samples)", flush=True)
    return {"model": args.digits_model, "n_per_prompt": args.n, "by_w": out}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    ws = [r["w"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ax[0].plot(ws, [100 * r["shape"] for r in rows], "o-", label="prompted shape")
    ax[0].plot(ws, [100 * r["colour"] for r in rows], "s-", label="prompted colour")
    ax[0].plot(ws, [100 * r["both"] for r in rows], "^-", label="both")
    ax[0].axhline(90, color="grey", lw=0.8, ls="--")
    ax[0].set(xlabel="guidance weight w", ylabel="% of samples", title="prompt adherence", ylim=(0, 100))
    ax[0].legend(fontsize=8)
    ax[1].plot(ws, [r["fid"] for r in rows], "o-", color="C3")
    ax[1].set(xlabel="guidance weight w", ylabel="FID (shape-classifier features)", title="FID vs real shapes")
    fig.suptitle(f"{report['model']}: {report['prompts']} prompts × {report['n_per_prompt']} samples, "
                 f"DDIM-{report['steps']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"plot {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:shapes")
    p.add_argument("--n", type=int, default=6, help="samples per prompt and w")
    p.add_argument("--w", type=lambda s: [float(v) for v in s.split(",")], default=[0, 1, 2, 3, 5, 7])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=90)
    p.add_argument("--judge-n", type=int, default=3000)
    p.add_argument("--judge-epochs", type=int, default=12)
    p.add_argument("--judge-cache", help="load the shape judge from this folder, or train it and save it there")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--digits-model", help="a text-conditioned digits model to score with 'the digit K' prompts")
    p.add_argument("--digits-w", type=lambda s: [float(v) for v in s.split(",")], default=[3.0])
    p.add_argument("--skip-shapes", action="store_true")
    p.add_argument("--plot", help="write the guidance curve PNG here")
    p.add_argument("--grid", help="write one sample per prompt (the last w) as a grid PNG")
    p.add_argument("--json", help="write the figures as JSON here")
    args = p.parse_args()
    global PRECISION
    PRECISION = args.precision
    torch.set_num_threads(1)
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not args.skip_shapes:
        report["shapes"] = shapes_report(args)
        if args.plot:
            plot(report["shapes"], Path(args.plot))
    if args.digits_model:
        report["digits"] = digits_report(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
