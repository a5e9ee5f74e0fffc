"""Sampling: DDIM-50 for 16 images at 32×32×3 with the tiny preset, plain vs the animated path the GUI uses.

Run by hand (not a test):  python bench/bench_sample.py          (about a minute; --quick to smoke-test)
"plain" is ``samplers.sample`` (only the final x_0 kept); "animated" is what the Sampling panel's worker runs:
``sample_frames(every=1, include_start=True)`` through ``sampling_frames.record``, which turns every recorded step into
three uint8 grids (x_t, x̂_0, ε) — with "preview every: auto" that is every step for 50 steps. Both in fp32 and with
bf16 autocast (where the CPU has bf16 instructions). The weights are untrained (timing does not depend on them; every
convolution still runs). Goal (issue "Fast"): plain ≤ 2.5 s on this machine; animation costs little extra.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import footer, header, save_json, stats, timeit  # noqa: E402

from diffusion_studio.core.runtime.device import cpu_supports_bf16
from diffusion_studio.core.runtime.calibrate import for_sampling  # noqa: E402
from diffusion_studio.core.diffusion.samplers import sample, sample_frames  # noqa: E402
from diffusion_studio.core.diffusion.schedule import NoiseSchedule  # noqa: E402
from diffusion_studio.core.diffusion.eps import model_fn  # noqa: E402
from diffusion_studio.core.nets.unet import UNet, count_parameters, preset_config  # noqa: E402

GOAL_S = 2.5


def random_weights(model: UNet, seed: int = 0) -> UNet:
    """Small random weights everywhere, so no layer is the zero-initialised identity (the timing is the same)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1
    from diffusion_studio.core.io.space import PixelSpace
    from diffusion_studio.jobs.frames import record
    from diffusion_studio.jobs.sampling import SamplingJob

    info = header(f"bench_sample: DDIM-{args.steps}, {args.n} images {args.size}×{args.size}×3, {args.preset} preset")
    schedule = NoiseSchedule.create("linear", 1000)
    model = random_weights(UNet(preset_config(args.preset, args.size, 3)))
    print(f"   {count_parameters(model) / 1e6:.2f}M parameters (untrained), torch {torch.get_num_threads()} threads")
    shape = (args.n, 3, args.size, args.size)
    job = SamplingJob(sampler="ddim", steps=args.steps, n_images=args.n, clip_x0=True)
    every = job.effective_every()
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    results: dict = {"machine": info, "runs": {}}

    for prec in precisions:
        fn = model_fn(model, "cpu", prec)

        def plain():
            return sample(fn, schedule, shape, "ddim", steps=args.steps, clip_x0=True, seed=0)

        def animated():
            frames = sample_frames(fn, schedule, shape, "ddim", steps=args.steps, clip_x0=True, seed=0, every=1,
                                   include_start=True)
            return sum(1 for _ in record(frames, PixelSpace(), every=every))

        def model_only():  # the network alone, the floor under both
            x = torch.randn(shape)
            t = torch.full((args.n,), 500, dtype=torch.long)
            with torch.no_grad():
                for _ in range(args.steps):
                    fn(x, t)

        for name, f in (("network only (50 ε_θ calls)", model_only), ("plain sample()", plain),
                        ("animated (GUI path, frames → grids)", animated)):
            s = stats(timeit(f, repeats=args.repeats, warmup=1))
            results["runs"][f"{name} {prec}"] = s
            print(f"   {prec}  {name:40s} median {s['median']:.3f} s  (min {s['min']:.3f}, max {s['max']:.3f})")
        n_frames = animated()
        p, a = results["runs"][f"plain sample() {prec}"], results["runs"][f"animated (GUI path, frames → grids) {prec}"]
        extra = a["median"] / p["median"] - 1
        results["runs"][f"animated/plain {prec}"] = a["median"] / p["median"]
        print(f"   {prec}  animated/plain = {a['median'] / p['median']:.3f} ({100 * extra:+.1f}%, {n_frames} frames "
              f"of 3 grids)")

    auto = for_sampling(preset_config(args.preset, args.size, 3), args.n, "auto", "cpu")  # what the app chooses
    default = auto.precision
    results["auto_precision"] = auto.explain()
    print(f"\n   precision auto for this model, size and batch: {auto.explain()}")
    for prec in precisions:
        t = results["runs"][f"plain sample() {prec}"]["median"]
        note = " (precision auto, the app's default here)" if prec == default else ""
        print(f"   plain DDIM-{args.steps} {prec}{note}: {t:.2f} s; goal ≤ {GOAL_S} s: "
              f"{'met' if t <= GOAL_S else 'NOT met'}")
    if "plain sample() bf16" in results["runs"]:
        p32, p16 = results["runs"]["plain sample() fp32"]["median"], results["runs"]["plain sample() bf16"]["median"]
        print(f"   bf16 autocast: {p32 / p16:.2f}× fp32")
    footer()
    save_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
