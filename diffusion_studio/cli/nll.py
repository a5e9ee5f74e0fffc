"""`diffusion-studio nll`: a model's variational bound on held-out images, in bits per dimension, term by term."""
from __future__ import annotations

import time
from typing import Any

from .common import (
    NON_NEGATIVE, POSITIVE, THREADS_HELP, Lines, UsageError, add_command, check_device, echo, fmt_duration, make_bar,
    plural, set_threads, wants_bar, writable_file, write_text_atomic,
)

NLL_DEFAULTS: dict[str, Any] = dict(n=128, every=1, seed=0, batch=256, device="auto", precision="fp32", top=5)
VARIANCE_CHOICES = ("beta", "beta_tilde", "both")
SYMBOL = {"beta": "β", "beta_tilde": "β̃"}


def add_nll_parser(sub, common) -> None:
    D = NLL_DEFAULTS
    p = add_command(
        sub, common, "nll", help="bits/dim of a model on images: the variational bound, term by term",
        description="Measure −log p_θ(x₀) ≤ L_T + Σ L_{t−1} + L_0 (Ho et al. eq. 5) on images, in bits per dimension: "
                    "one x_t per t and image, L_{t−1} = KL(q(x_{t−1}|x_t,x₀) ‖ p_θ(x_{t−1}|x_t)), L_0 the discretised "
                    "8-bit Gaussian decoder. Prints the total with a 95% confidence interval over images, L_T, L_0 "
                    "and the largest terms; --csv writes every term. σ² = β and β̃ share one pass of the model.",
        epilog="examples:\n"
               "  diffusion-studio nll --model builtin:digits --data builtin:digits\n"
               "  diffusion-studio nll --model runs/cifar --data cifar10:~/data/cifar10 --every 10 --csv terms.csv\n"
               "builtin:mnist, mnist: and cifar10: data use their test split (images the model did not train on).",
    )
    p.add_argument("--model", metavar="CKPT", required=True,
                   help="a checkpoint .json, a run folder, a .safetensors file, or builtin:NAME")
    p.add_argument("--data", metavar="SPEC", required=True,
                   help="images to score: a folder, builtin:NAME, mnist:PATH or cifar10:PATH (their test split)")
    p.add_argument("--n", type=POSITIVE, metavar="N", default=D["n"],
                   help=f"images, a seeded random subset (default: {D['n']}; at least 2 for an interval)")
    p.add_argument("--variance", choices=VARIANCE_CHOICES, default="both",
                   help="p_θ's variance σ_t² = β_t or β̃_t (default: both, from the same model passes)")
    p.add_argument("--every", type=POSITIVE, metavar="K", default=D["every"],
                   help="quick look: the first K t exactly, then one random t in each block of K, the sum estimated "
                        "(and labelled an estimate); K ≤ T/20 (default: 1, all T)")
    p.add_argument("--csv", metavar="PATH", help="write the per-t terms (bits/dim), ε- and x̂₀-MSE to a CSV file")
    p.add_argument("--no-clip", action="store_true",
                   help="take p_θ's mean from the raw x̂₀ (default: x̂₀ clipped to [−1, 1], as improved-diffusion)")
    p.add_argument("--top", type=NON_NEGATIVE, metavar="K", default=D["top"],
                   help=f"how many of the largest terms to list (default: {D['top']})")
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="S", default=D["seed"],
                   help=f"seed of the image subset, the noise and the t design (default: {D['seed']})")
    p.add_argument("--batch", type=POSITIVE, metavar="N", default=D["batch"],
                   help=f"images per forward pass (default: {D['batch']})")
    p.add_argument("--device", metavar="DEV", default=D["device"], help=f"(default: {D['device']})")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=D["precision"],
                   help="forward-pass precision (default: fp32; bf16's rounding of ε_θ inflates the small-t terms)")
    p.add_argument("--threads", type=POSITIVE, metavar="N", help=THREADS_HELP)
    p.set_defaults(func=cmd_nll)


def _load_images(spec: str, ckpt, n: int, seed: int):
    import torch

    from ..data import load_dataset
    from ..data.specs import held_out_split

    mc = ckpt.model_config
    split = held_out_split(spec)
    ds = load_dataset(spec, mc.image_size, channels=mc.in_channels, **split)
    total = len(ds)
    if total < 1:
        raise UsageError(f"argument --data: {spec} holds no images")
    k = min(n, total)
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k].sort().values
    x0 = ds.batch(idx).float()
    trained_on = str((ckpt.meta.get("data") or {}).get("spec", ""))
    if split:
        where = "the test split (held out from training)"
    elif trained_on and trained_on.strip() == spec.strip():
        where = "the model's OWN training images (not held out: the figure is optimistic)"
    else:
        where = "images other than the model's training spec" + (f" ({trained_on})" if trained_on else "")
    return x0, total, where


def cmd_nll(args) -> int:
    from ..core.io.models import open_checkpoint

    set_threads(args.threads)
    if args.n < 2:
        raise UsageError("argument --n: at least 2 images are needed for a confidence interval")
    csv_path = writable_file(args.csv, "--csv")  # before the bound is computed
    device, precision = check_device(args.device, args.precision)
    ckpt = open_checkpoint(args.model, groups=("model", "ema"))
    refuse_unsupported(args.model, ckpt.meta)
    schedule = ckpt.schedule
    from ..core.diffusion.vlb import MIN_BLOCKS, max_every

    if args.every > max_every(schedule.T):
        raise UsageError(f"argument --every: at most {max_every(schedule.T)} for this model's T = {schedule.T} (the "
                         f"estimate needs {MIN_BLOCKS} blocks to judge its own error), got {args.every}")
    x0, available, where = _load_images(args.data, ckpt, args.n, args.seed)
    variances = ("beta", "beta_tilde") if args.variance == "both" else (args.variance,)
    return _run(args, ckpt, x0.to(device), available, where, variances, device, precision, csv_path)


def refuse_unsupported(spec: str, meta: dict) -> None:
    from ..jobs.likelihood import unsupported

    why = unsupported(meta)
    if why is not None:
        raise UsageError(f"argument --model: {spec} {why}")


def _run(args, ckpt, x0, available, where, variances, device, precision, csv_path) -> int:
    from ..core.diffusion import vlb
    from ..core.diffusion.eps import model_fn

    schedule, mc = ckpt.schedule, ckpt.model_config
    model = ckpt.build_model(device)
    eps_fn = model_fn(model, device, precision, schedule=schedule)
    dims = x0[0].numel()
    clip = not args.no_clip
    n_t = len(vlb.subset_timesteps(schedule.T, args.every, args.seed))
    echo(f"model     {args.model}: {mc.preset or 'custom'} UNet, {mc.image_size}x{mc.image_size}x{mc.in_channels}, "
         f"{schedule.describe()}, step {ckpt.step}")
    echo(f"data      {args.data}: {len(x0)} of {plural(available, 'image')}, {dims} dims each — {where}")
    how = "all T" if n_t == schedule.T else f"ESTIMATE from {n_t} of {schedule.T} t (the first {args.every}, then " \
                                            f"one random t in each block of {args.every})"
    echo(f"bound     {how}; p_θ mean from x̂₀ {'clipped to [−1, 1]' if clip else 'unclipped'}; "
         f"σ² = {' and '.join(SYMBOL[v] for v in variances)}; L_0 discretised 8-bit Gaussian; {precision}")
    use_bar = wants_bar(args)
    bar = make_bar(total=n_t, unit="t", desc="nll") if use_bar else None
    lines = Lines(not use_bar, delay=True)
    t0 = time.perf_counter()
    acc = None
    try:
        for k, (acc, item) in enumerate(vlb.evaluate(eps_fn, schedule, x0, variances=variances, clip_x0=clip,
                                                     every=args.every, design_seed=args.seed, seed=args.seed,
                                                     batch=args.batch), 1):
            if bar is not None:
                bar.update(1)
            lines(f"nll: {k}/{n_t} t ({fmt_duration(time.perf_counter() - t0)})", force=k == n_t)
    finally:
        if bar is not None:
            bar.close()
    assert acc is not None
    took = time.perf_counter() - t0
    for line in report(acc, variances, args.top):
        echo(line)
    echo(f"took      {fmt_duration(took)} ({n_t} model passes over {len(x0)} images)")
    if csv_path is not None:
        write_text_atomic(csv_path, csv_text(acc, variances))
        echo(f"csv       {csv_path} ({n_t + 1} rows: L_T and each evaluated t)")
    return 0


def report(acc, variances, top: int) -> list[str]:
    """The lines that summarise a finished VLB: total with its interval, L_T, L_0, Σ L_{t−1}, the largest terms."""
    import numpy as np

    from ..core.diffusion.vlb import LN2

    out = []
    w = acc.weights()
    for v in variances:
        b = acc.bits_per_dim(v)
        ts, y = acc.per_t(v)
        middle = sum(w[int(t)] * float(val) for t, val in zip(ts, y) if t != 0) / LN2
        label = "≈" if b["estimate"] else "="
        interval = ("95% interval over images and the t sample" if b["estimate"] else "95% CI over images")
        out.append(f"σ² = {SYMBOL[v]:<2}  bits/dim {label} {b['bits_per_dim']:.4f} ± {b['half_width']:.4f} ({interval}, "
                   f"n = {b['n']})")
        out.append(f"          L_T {b['prior']:.6f}   L_0 {b['decoder']:.4f}   Σ L_t-1 {middle:.4f}"
                   f"{' (estimated)' if b['estimate'] else ''}   (bits/dim)")
        if top:
            order = np.argsort(-y)[:top]
            total = b["bits_per_dim"]
            parts = []
            for i in order:
                name = "L_0" if ts[i] == 0 else f"L_{int(ts[i])}"
                val = float(y[i]) / LN2
                parts.append(f"t={int(ts[i]) + 1} ({name}) {val:.4f} ({100 * val / total:.1f}%)" if total > 0
                             else f"t={int(ts[i]) + 1} ({name}) {val:.4f}")
            out.append(f"          largest: {'; '.join(parts)}")
    return out


def csv_text(acc, variances) -> str:
    """Per-t terms in bits/dim (mean over images): L_T first, then each evaluated t from T down to 1.

    ``t`` is the paper's t (index + 1); ``term`` names L_{t−1} (L_0 at t = 1); ``weight`` is how many t the row
    stands for in a quick look's sum (1 for the full T)."""
    import numpy as np

    from ..core.diffusion.vlb import LN2

    w = acc.weights()
    cols = ["term", "t", "weight"] + [f"{v}_bits_per_dim" for v in variances] + ["eps_mse", "x0_mse"]
    rows = [",".join(cols)]
    rows.append(",".join(["L_T", str(acc.T + 1), "1"] + [f"{float(acc.prior.mean()) / LN2:.9g}"] * len(variances)
                         + ["", ""]))
    eps = {t: float(np.mean(r)) for t, r in zip(acc.ts, acc.eps_mse)}
    x0 = {t: float(np.mean(r)) for t, r in zip(acc.ts, acc.x0_mse)}
    per = {v: dict(zip(*acc.per_t(v))) for v in variances}
    for t in sorted(acc.ts, reverse=True):
        name = "L_0" if t == 0 else f"L_{t}"
        vals = [f"{float(per[v][t]) / LN2:.9g}" for v in variances]
        rows.append(",".join([name, str(t + 1), str(w[t])] + vals + [f"{eps[t]:.9g}", f"{x0[t]:.9g}"]))
    return "\n".join(rows) + "\n"

