"""`diffusion-studio sample`: reverse diffusion from a checkpoint into PNG files, optionally a grid and a GIF."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from ..core.limits import MAX_GUIDANCE
from .common import (
    NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, THREADS, THREADS_HELP, CliError, Lines, UsageError, add_command,
    check_device, echo, float_in, fmt_duration, make_bar, out_folder, plural, set_threads, wants_bar, writable_file,
    writable_folder,
)

SAMPLERS = ("ddpm", "ddim", "euler", "heun", "dpm++2m", "unipc", "euler_a")  # core/diffusion/samplers.py's
SPACINGS = ("linspace", "leading", "trailing")
SAMPLE_DEFAULTS: dict[str, Any] = dict(n=16, sampler="ddim", ddim_steps=50, ode_steps=20, eta=0.0, variance="beta_tilde", seed=0,
                                       batch=64, guidance=2.0, device="auto", precision="auto")  # = CLASS_GUIDANCE
TEXT_GUIDANCE = 3.0      # default w for prompts (bench/prompt_adherence.py measures the trade-off)
GIF_MAX_FRAMES = 60      # frames of the reverse process kept in a GIF (plus the start and a held last frame)
GIF_SAMPLES = 16         # samples tiled into each GIF frame
GIF_TARGET_PX = 256      # GIF frames are upscaled (nearest neighbour) to about this width
GRID_MAX = 256           # samples tiled into --grid at most
GRID_MIN_PX = 256        # --grid is enlarged (whole factor, nearest neighbour) to at least this


def add_sample_parser(sub, common) -> None:
    D = SAMPLE_DEFAULTS
    p = add_command(
        sub, common, "sample", help="generate images with a trained model",
        description="Generate images by reverse diffusion (DDPM Algorithm 2, or DDIM) and write DIR/sample_00000.png "
                    "..., optionally a grid and an animated GIF of the reverse process. The same seed and batch size "
                    "give the same files.",
    )
    p.add_argument("--model", metavar="CKPT", required=True,
                   help="a checkpoint .json, a run folder, a .safetensors file, or builtin:NAME (a shipped model)")
    p.add_argument("--n", type=POSITIVE, metavar="N", default=D["n"], help=f"number of images (default: {D['n']})")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the PNG files (created if needed)")
    p.add_argument("--sampler", choices=SAMPLERS, default=D["sampler"],
                   help="ddpm (Algorithm 2), ddim, or a solver of the probability-flow ODE: euler, heun, dpm++2m "
                        "(DPM-Solver++ 2M), unipc, euler_a (Euler ancestral) — diffusers' schedulers of those names "
                        f"(default: {D['sampler']})")
    p.add_argument("--steps", type=POSITIVE, metavar="N",
                   help=f"num_inference_steps (default: {D['ddim_steps']} for ddim, {D['ode_steps']} for the ODE "
                        "samplers, or T if smaller; all T for ddpm, whose fewer steps respace the schedule); Heun "
                        "evaluates the model 2N − 1 times, the others N")
    p.add_argument("--timestep-spacing", choices=SPACINGS, default="linspace",
                   help="which timesteps N steps visit, as diffusers names it: linspace (T−1 down to 0, both ends), "
                        "leading (k·⌊T/N⌋, down to 0), trailing (from T−1 down in steps of T/N) (default: linspace)")
    p.add_argument("--karras", action="store_true",
                   help="Karras et al.'s σ spacing (ρ = 7) for the ODE samplers: more steps at low noise")
    p.add_argument("--x-T", dest="x_T", metavar="FILE.npy",
                   help="start from this x_T instead of drawing it from --seed: a float .npy of N(0, 1) draws shaped "
                        "(n, C, H, W) — for a latent model the latent's shape — as diffusers' latents= does")
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
                   help="class index or name for a class-conditional model, 'each' for one of each class in turn "
                        "(image k draws class k mod the number of classes), or 'none' for unconditional samples "
                        "(default: each for a class-conditional model; unconditional for an ideal: denoiser)")
    p.add_argument("--prompt", metavar="TEXT",
                   help='what to draw, for a model trained with --text, e.g. "a red star" (try builtin:shapes)')
    p.add_argument("--negative-prompt", metavar="TEXT",
                   help="what to steer away from: replaces ∅ in the guidance (with --prompt)")
    p.add_argument("--guidance", type=float_in(0.0, MAX_GUIDANCE, lo_open=False, hi_open=False), metavar="W",
                   help=f"classifier-free guidance weight w in ε_∅ + w(ε_y − ε_∅), for a class-conditional model or "
                        f"with --prompt; 0 = unconditional, 1 = conditional only (default: {D['guidance']:g} for "
                        f"classes, {TEXT_GUIDANCE:g} with --prompt)")
    p.add_argument("--device", metavar="DEV", default=D["device"], help=f"(default: {D['device']})")
    p.add_argument("--threads", type=THREADS, metavar="N", help=THREADS_HELP)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=D["precision"],
                   help="auto = bf16 autocast on CUDA GPUs and CPUs with bf16 instructions, fp32 elsewhere "
                        f"(default: {D['precision']})")
    p.set_defaults(func=cmd_sample)


EACH_CLASS = -1  # SamplingJob.label: one class per image in turn


def _parse_label(text: str | None, num_classes: int | None, class_names: list[str] | None) -> int | None:
    """--label as SamplingJob.label: a class index, EACH_CLASS, or None (unconditional). Left out: each class in turn
    for a class-conditional model (its samples come labelled and balanced), unconditional for any other."""
    if text is None:
        return EACH_CLASS if num_classes else None
    if text == "none":
        return None
    if num_classes is None:
        raise UsageError("argument --label: this model is not class-conditional (train with --class-conditional)")
    names = list(class_names or [])
    if text in names:
        return names.index(text)
    if text == "each":
        return EACH_CLASS
    try:
        k = int(text)
    except ValueError:
        known = f", one of {', '.join(names)}" if names else ""
        raise UsageError(f"argument --label: expected a class index 0..{num_classes - 1}{known}, each or none, "
                         f"got {text!r}") from None
    if not 0 <= k < num_classes:
        raise UsageError(f"argument --label: class {k} is out of range 0..{num_classes - 1}")
    return k


def cmd_sample(args) -> int:
    from ..core.errors import EncoderMissing
    from ..core.io.models import SAMPLING_GROUPS, LoadedModel, open_checkpoint
    from ..data.errors import DataError
    from ..jobs.prompts import encode_prompt
    from ..jobs.sampling import SamplingJob

    set_threads(args.threads)
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError("argument --eta: only used by --sampler ddim (euler_a is the ancestral, η = 1 form)")
    if args.karras and args.sampler in ("ddpm", "ddim"):
        raise UsageError(f"argument --karras: for the ODE samplers ({', '.join(SAMPLERS[2:])}), not {args.sampler}")
    if args.variance is not None and args.sampler != "ddpm":
        raise UsageError("argument --variance: only used by --sampler ddpm")
    if args.label is not None and args.prompt is not None:
        raise UsageError("argument --prompt: not with --label (a class-conditional model takes --label)")
    if args.negative_prompt is not None and args.prompt is None:
        raise UsageError("argument --negative-prompt: needs --prompt")
    out = out_folder(args.out)
    device, precision = check_device(args.device, args.precision, resolve=False)

    from ..jobs.geometry.ideal import ideal_model, is_ideal_spec

    try:
        if is_ideal_spec(args.model):  # the ideal denoiser of a data set: a model with no weights
            if args.prompt is not None:
                raise UsageError("argument --prompt: the ideal denoiser takes a class (--label), not a prompt")
            loaded = ideal_model(args.model, device)
        else:
            ckpt = open_checkpoint(args.model, groups=SAMPLING_GROUPS)
            loaded = LoadedModel(args.model, ckpt, ckpt.build_model(device), device)
        space = loaded.space  # a latent model decodes with its own embedded autoencoder
    except DataError as e:
        raise UsageError(f"argument --model: {e}") from None
    except ValueError as e:
        raise CliError(str(e)) from None
    ckpt, mc, T = loaded.checkpoint, loaded.config, loaded.schedule.T
    if space.name == "points" and (args.prompt is not None or args.grid is not None):
        flag = "--prompt" if args.prompt is not None else "--grid"
        raise UsageError(f"argument {flag}: not for a 2-D model (it writes points.csv and points.png)")
    if args.sampler != "ddpm":
        default = SAMPLE_DEFAULTS["ddim_steps" if args.sampler == "ddim" else "ode_steps"]
        steps = args.steps if args.steps is not None else min(default, T)
        if not 1 <= steps <= T:
            raise UsageError(f"argument --steps: {args.sampler} takes 1 to {T} steps (the model's T), got {steps}")
    else:
        steps = args.steps if args.steps is not None else T
        if not 2 <= steps <= T:
            raise UsageError(f"argument --steps: ddpm takes 2 to {T} steps (the model's T), got {steps}")
    label = None if args.prompt is not None else _parse_label(args.label, mc.num_classes, ckpt.class_names)
    if args.label is None and is_ideal_spec(args.model):
        label = None  # the ideal denoiser has classes because its data does: its default field is the whole data's
    if args.guidance is not None and label is None and args.prompt is None:
        raise UsageError("argument --guidance: needs a class (--label, of a class-conditional model) or --prompt")
    guidance = SAMPLE_DEFAULTS["guidance"] if args.guidance is None else args.guidance
    try:
        text = encode_prompt(ckpt, args.prompt, args.negative_prompt, min(args.batch, args.n))
    except EncoderMissing as e:
        raise CliError(f"argument --prompt: {e}") from None
    except ValueError as e:
        raise UsageError(_as_argument(str(e))) from None
    for note in text.notes:
        echo(f"note      {_as_argument(note)}")
    if args.clip_x0 and not space.clips_x0:
        raise UsageError("argument --clip-x0: a latent model's x̂_0 is a latent with no [-1, 1] range; leave it out")
    sampling = ckpt.meta.get("sampling") or {}  # an imported scheduler's σ_t² and x̂_0 clipping are the defaults
    clip = args.clip_x0 or bool(sampling.get("clip_x0"))
    if text.condition is not None:  # pixels: x̂_0 clipped after guidance (large w otherwise overshoots [-1, 1])
        clip = space.clips_x0
        guidance = TEXT_GUIDANCE if args.guidance is None else args.guidance
    job = SamplingJob(sampler=args.sampler, steps=steps, n_images=min(args.batch, args.n), seed=args.seed,
                      clip_x0=clip, label=label, guidance=guidance, prompt=args.prompt,
                      negative_prompt=args.negative_prompt,
                      eta=SAMPLE_DEFAULTS["eta"] if args.eta is None else args.eta,
                      variance=args.variance or sampling.get("variance") or SAMPLE_DEFAULTS["variance"],
                      timestep_spacing=args.timestep_spacing, karras=args.karras)
    x_T = _read_x_T(args.x_T, (args.n, *mc.shape))
    for opt, value in (("--grid", args.grid), ("--gif", args.gif)):
        writable_file(value, opt)  # before any sampling: a grid that cannot be written is said now, not after
    writable_folder(out)
    if label == EACH_CLASS:
        echo(f"classes   one of each in turn (image k draws class k mod {mc.num_classes}), guidance w = {guidance:g}")
    from ..jobs.sampling import chosen_precision

    echo(f"precision {chosen_precision(loaded, job, precision).explain()}")
    if space.name == "points":
        from .sample_points import sample_points

        return sample_points(args, loaded, job, precision, out, x_T)
    return _sample_loop(args, loaded, job, text, precision, out, x_T)


def _read_x_T(path: str | None, shape: tuple[int, ...]):
    """--x-T's array for all n images (a one-line refusal for any other shape, dtype or format), or None."""
    if path is None:
        return None
    from ..core.errors import CheckpointError
    from ..core.io.arrays import read_float_npy

    try:
        x_T = read_float_npy(Path(path).expanduser(), shape, "x_T array")
    except CheckpointError as e:
        raise UsageError(f"argument --x-T: {e}") from None
    std = float(x_T.std()) if x_T.numel() > 1 else 1.0
    if not 0.5 <= std <= 2.0:
        echo(f"note      --x-T: its values have standard deviation {std:.3g}, not about 1 as N(0, I) draws have")
    return x_T


def _as_argument(message: str) -> str:
    """'prompt: …' → 'argument --prompt: …' (the CLI names its options)."""
    field, sep, rest = message.partition(": ")
    return f"argument --{field.replace('_', '-')}: {rest}" if sep and field in ("prompt", "negative_prompt") \
        else message


def _sample_loop(args, loaded, job, text, precision, out: Path, x_T=None) -> int:
    """Batches of the one sampling pipeline (jobs/sampling.py): batch k is the job with seed S + k."""
    import dataclasses

    import torch

    from ..core.metrics.sample_check import degenerate
    from ..core.runtime.estimate import describe, seconds_per_step, worth_estimating
    from ..data.convert import make_grid, save_gif, save_grid, save_png
    from ..jobs.frames import gif_picture
    from ..jobs.sampling import eps_fn, frames

    mc, schedule, space = loaded.config, loaded.schedule, loaded.space
    n, batch = args.n, job.n_images
    n_batches = math.ceil(n / batch)
    n_steps = job.steps
    gif_every = max(1, math.ceil(n_steps / GIF_MAX_FRAMES))
    digits = max(5, len(str(n - 1)))

    use_bar = wants_bar(args)
    bar = make_bar(total=n_batches * n_steps, unit="step", desc="sample") if use_bar else None
    lines = Lines(not use_bar)
    gif_frames: list[torch.Tensor] = []
    grid_samples: list[torch.Tensor] = []
    written = 0
    t0 = time.perf_counter()
    try:
        for b in range(n_batches):
            size = min(batch, n - b * batch)
            job_b = dataclasses.replace(job, n_images=size, seed=args.seed + b, first=b * batch)
            text_b = text.rows(size)
            want_gif = args.gif is not None and b == 0
            if b == 0 and worth_estimating(mc.image_size, loaded.device):  # a 256-px model on a CPU: say how long
                fn = eps_fn(loaded, job_b, precision, text_b)
                per_step = seconds_per_step(fn, (size, *mc.shape), schedule.T,
                                            loaded.device)
                echo(describe(job.sampler, n_steps, n_batches, per_step, mc.image_size))
            final = None
            start = None if x_T is None else x_T[b * batch:b * batch + size]
            for frame in frames(loaded, job_b, precision, text=text_b, include_start=want_gif, x_T=start):
                if want_gif and (frame.step % gif_every == 0 or frame.is_final):
                    gif_frames.append(make_grid(gif_picture(space, frame, GIF_SAMPLES)))
                if frame.step and bar is not None:
                    bar.update(1)
                if frame.is_final:
                    final = space.decode(frame.x).cpu()
            assert final is not None
            bad = degenerate(final)
            if bad is not None:
                raise CliError(f"{loaded.path}: {bad}, so the weights are damaged or diverged; "
                               f"{plural(written, 'image')} written before this batch")
            final = final.clamp(-1, 1)
            for i in range(size):
                save_png(final[i], out / f"sample_{written:0{digits}d}.png")
                written += 1
            if args.grid is not None and len(grid_samples) * batch < GRID_MAX:
                grid_samples.append(final[: GRID_MAX - sum(len(g) for g in grid_samples)])
            lines(f"sample: {written}/{n} images written ({fmt_duration(time.perf_counter() - t0)})",
                  force=b == n_batches - 1)
    finally:
        if bar is not None:
            bar.close()
    took = time.perf_counter() - t0
    side = getattr(space, "config", mc).image_size
    evals = plural(job.model_evals, "model evaluation")
    echo(f"wrote {plural(written, 'image')} ({side}x{side}, {job.sampler}, {plural(n_steps, 'step')}, {evals} "
         f"per image) to {out} in {fmt_duration(took)}")
    if args.grid is not None:
        shown = torch.cat(grid_samples)[:GRID_MAX]
        save_grid(shown, Path(args.grid).expanduser(), min_side=GRID_MIN_PX)  # a 16 px 4×4 grid is 74 px
        echo(f"grid      {args.grid} ({plural(len(shown), 'image')})")
    if args.gif is not None:
        width = gif_frames[-1].shape[-1]
        scale = max(1, min(8, GIF_TARGET_PX // width))
        frames_ = gif_frames + [gif_frames[-1]] * 12  # hold the result ~1 s (Pillow merges repeated frames)
        save_gif(frames_, Path(args.gif).expanduser(), fps=12, scale=scale)
        echo(f"gif       {args.gif} ({len(gif_frames)} frames of the reverse process, x{scale})")
    return 0
