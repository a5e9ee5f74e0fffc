"""Training throughput: our Trainer step against the UNets people actually train DDPM with, in one run.

Run by hand (not a test):  python bench/bench_train.py          (about 10 minutes on 2 cores; --quick to smoke-test)
Peers (benchmark-only dependencies, never the app's):
  pip install -c constraints.txt diffusers                           # UNet2DModel, DDPMScheduler, EMAModel
  pip install --no-deps denoising-diffusion-pytorch                  # lucidrains' Unet + GaussianDiffusion
  pip install -c constraints.txt einops ema-pytorch accelerate scipy tqdm   # its light dependencies
denoising-diffusion-pytorch imports torchvision at module level, which has no CPU build beside this torch; its Unet does
not use it, so a stub ``torchvision`` module is put in sys.modules before the import (see ``import_lucidrains``).

Every model trains at the same image size and batch on the same in-memory data, with a DDPM step as each is used:
ε-prediction MSE at a uniform t, AdamW, gradient clipping at 1.0 and an EMA of the weights (our Trainer also keeps its
per-t loss buckets). Parameter counts are matched (printed). Figures: images/s from the median step time, the
ratio ours/peer, FLOP utilisation against a measured matmul peak, and the fp32-vs-bf16 loss health check.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

if "--emulate-avx2" in sys.argv:  # must be set before torch loads its kernels
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    os.environ["ATEN_CPU_CAPABILITY"] = "avx2"

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import footer, header, ms, save_json, stats, timeit  # noqa: E402

from diffusion_studio.core.runtime.device import cpu_supports_bf16
from diffusion_studio.core.diffusion.schedule import NoiseSchedule  # noqa: E402
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.train.config import TrainConfig  # noqa: E402
from diffusion_studio.core.nets.unet import count_parameters, preset_config  # noqa: E402

GOAL_RATIO = 1.5
# diffusers UNet2DModel configurations with exactly our presets' parameter counts at 3 channels (the same DDPM
# architecture: the same widths, blocks per level, attention at the same resolution and with the same head count).
DIFFUSERS_MATCH = {
    "tiny": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, attn_level=2, heads=4),
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=2, norm_num_groups=16, attn_level=1, heads=4),
}
# lucidrains' Unet (linear attention at all but the last level, full attention there) sized to the nearest count.
LUCID_MATCH = {"tiny": dict(dim=28, dim_mults=(1, 2, 2)), "small": dict(dim=72, dim_mults=(1, 2, 2))}


# ---- peers -----------------------------------------------------------------------------------------------------------
def diffusers_model(preset: str, size: int):
    from diffusers import UNet2DModel

    m = DIFFUSERS_MATCH[preset]
    levels = len(m["block_out_channels"])
    down = ["AttnDownBlock2D" if i == m["attn_level"] else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if i == levels - 1 - m["attn_level"] else "UpBlock2D" for i in range(levels)]
    attn_ch = m["block_out_channels"][m["attn_level"]]
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=m["block_out_channels"],
                       layers_per_block=m["layers_per_block"], down_block_types=tuple(down), up_block_types=tuple(up),
                       norm_num_groups=m["norm_num_groups"], attention_head_dim=attn_ch // m["heads"])


class DiffusersStep:
    """diffusers' train_unconditional.py step: DDPMScheduler.add_noise, MSE on ε, clip 1.0, AdamW, EMAModel."""

    def __init__(self, preset: str, size: int, data: torch.Tensor, batch: int, bf16: bool):
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(0)
        self.model = diffusers_model(preset, size).train()
        self.sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4)
        self.ema = EMAModel(self.model.parameters(), decay=0.999, foreach=True)
        self.data, self.batch, self.bf16 = data, batch, bf16
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self) -> float:
        idx = torch.randint(len(self.data), (self.batch,), generator=self.gen)
        x0 = self.data[idx]
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, 1000, (self.batch,), generator=self.gen)
        noisy = self.sched.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.model(noisy, t).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.step(self.model.parameters())
        return float(loss.detach())


def import_lucidrains():
    """lucidrains' Unet and GaussianDiffusion, with a stub torchvision (only its data pipeline uses torchvision)."""
    try:
        import torchvision  # noqa: F401  (a working one, if present)
    except Exception:  # noqa: BLE001 - absent, or a CUDA build failing with "operator torchvision::nms does not exist"
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        tv = types.ModuleType("torchvision")
        tv.transforms, tv.utils = types.ModuleType("torchvision.transforms"), types.ModuleType("torchvision.utils")
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms, "torchvision.utils": tv.utils})
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    return Unet, GaussianDiffusion


class LucidStep:
    """denoising-diffusion-pytorch as its Trainer does a step (ε objective, linear β, clip 1.0, AdamW, EMA)."""

    def __init__(self, preset: str, size: int, data: torch.Tensor, batch: int, bf16: bool):
        from ema_pytorch import EMA

        Unet, GaussianDiffusion = import_lucidrains()
        torch.manual_seed(0)
        self.unet = Unet(channels=3, **LUCID_MATCH[preset])
        self.model = GaussianDiffusion(self.unet, image_size=size, timesteps=1000, objective="pred_noise",
                                       beta_schedule="linear").train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4)
        self.ema = EMA(self.model, beta=0.999, update_every=1)
        self.data01 = (data + 1) / 2  # it normalises [0, 1] images to [−1, 1] itself
        self.batch, self.bf16 = batch, bf16
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self) -> float:
        idx = torch.randint(len(self.data01), (self.batch,), generator=self.gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(self.data01[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update()
        return float(loss.detach())


class OurStep:
    def __init__(self, preset: str, size: int, data: torch.Tensor, batch: int, precision: str,
                 channels_last: bool | None = None, compile: bool = False):
        cfg = TrainConfig(steps=10**9, batch_size=batch, device="cpu", precision=precision,
                          channels_last=channels_last, compile=compile)
        self.trainer = Trainer(preset_config(preset, size, 3), NoiseSchedule.create("linear", 1000),
                               TensorImages(data), cfg)
        self.model = self.trainer.model

    def __call__(self) -> float:
        return self.trainer.train_step()[0]


# ---- FLOPs and the matmul peak -----------------------------------------------------------------------------------------
def step_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of a large square torch.mm in ``dtype`` (the best of several)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=c)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ---- loss health ---------------------------------------------------------------------------------------------------------
def loss_curve(precision: str, steps: int, size: int = 16, batch: int = 64, seed: int = 0) -> list[float]:
    from diffusion_studio.data import load_dataset

    data = load_dataset("builtin:digits", size)
    cfg = TrainConfig(steps=steps, batch_size=batch, device="cpu", precision=precision, seed=seed, lr=1e-3,
                      warmup_steps=50)
    torch.manual_seed(seed)
    tr = Trainer(preset_config("tiny", size, data.channels), NoiseSchedule.create("linear", 1000), data, cfg)
    return [ev.loss for ev in tr.run()]


def smoothed(xs: list[float], w: float = 0.98) -> float:
    acc, k = 0.0, 0
    for x in xs:
        acc, k = w * acc + (1 - w) * x, k + 1
    return acc / (1 - w**k)


# ---- main ----------------------------------------------------------------------------------------------------------------
def measure(name: str, make, repeats: int, warmup: int, results: dict, batch: int, flops_of=None) -> None:
    try:
        t0 = time.perf_counter()
        step = make()
        xs = timeit(step, repeats=repeats, warmup=warmup)
        setup = time.perf_counter() - t0 - sum(xs)
    except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        print(f"   {name:58s} FAILED: {results[name]['error']}")
        return
    s = stats(xs)
    r = {"params": count_parameters(step.model), "step": s, "img_s": batch / s["median"], "setup_s": setup}
    if flops_of is not None:
        r["flops"] = step_flops(step)
    results[name] = r
    print(f"   {name:58s} {r['params'] / 1e6:6.3f}M params  step {ms(s['median']):>9s} (p99 {ms(s['p99'])})  "
          f"{r['img_s']:7.1f} img/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny"], choices=sorted(DIFFUSERS_MATCH))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--health-steps", type=int, default=300)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (slow to compile)")
    ap.add_argument("--no-health", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke test: few steps")
    ap.add_argument("--fp32-only", action="store_true", help="skip every bf16 variant (e.g. with --emulate-avx2)")
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="limit oneDNN and ATen to AVX2 (set before torch loads): a CPU without AVX-512/bf16")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.health_steps = 3, 1, 20
    info = header(f"bench_train: DDPM training step, {args.size}×{args.size}×3, batch {args.batch}")
    bf16_ok = cpu_supports_bf16() and not args.fp32_only
    print(f"   CPU bf16 instructions: {cpu_supports_bf16()} (precision auto, our default, is measured per model, "
          f"size and batch: the choice for each preset below)")
    g = torch.Generator().manual_seed(0)
    data = torch.rand(512, 3, args.size, args.size, generator=g) * 2 - 1
    results: dict = {"machine": info, "runs": {}}
    runs = results["runs"]
    chosen: dict[str, str] = {}
    results["auto_precision"] = chosen
    R, W, B = args.repeats, args.warmup, args.batch
    for preset in args.presets:
        print(f"\n-- {preset}: ours vs peers of the same parameter count")
        S = args.size
        # each precision in the layout the calibration measured faster on this CPU (core/runtime/calibrate.py), then both
        # layouts forced, so the table shows whether the calibration chose well
        fp = OurStep(preset, S, data, B, "fp32").trainer.fast_path
        print(f"   calibration (fp32): {fp.describe()} {fp.seconds}")
        auto = OurStep(preset, S, data, B, "auto").trainer.fast_path  # what a user's run here would really choose
        chosen[preset] = auto.precision if bf16_ok else "fp32"
        print(f"   precision auto (the app's and CLI's default) chooses: {auto.describe()} {auto.seconds}")
        measure(f"ours {preset} fp32", lambda: OurStep(preset, S, data, B, "fp32"), R, W, runs, B, flops_of=True)
        if bf16_ok:
            measure(f"ours {preset} bf16", lambda: OurStep(preset, S, data, B, "bf16"), R, W, runs, B, flops_of=True)
        for cl, name in ((False, "NCHW"), (True, "NHWC")):
            measure(f"ours {preset} fp32 forced {name}",
                    lambda cl=cl: OurStep(preset, S, data, B, "fp32", channels_last=cl), R, W, runs, B)
            if bf16_ok:
                measure(f"ours {preset} bf16 forced {name}",
                        lambda cl=cl: OurStep(preset, S, data, B, "bf16", channels_last=cl), R, W, runs, B)
        if not args.no_compile:
            measure(f"ours {preset} fp32 torch.compile", lambda: OurStep(preset, S, data, B, "fp32", compile=True),
                    R, max(W, 3), runs, B)
            if bf16_ok:
                measure(f"ours {preset} bf16 torch.compile",
                        lambda: OurStep(preset, S, data, B, "bf16", compile=True), R, max(W, 3), runs, B)
        measure(f"diffusers UNet2DModel {preset}-matched fp32", lambda: DiffusersStep(preset, S, data, B, False),
                R, W, runs, B, flops_of=True)
        if bf16_ok:
            measure(f"diffusers UNet2DModel {preset}-matched bf16", lambda: DiffusersStep(preset, S, data, B, True),
                    R, W, runs, B)
        measure(f"denoising-diffusion-pytorch Unet {preset}-matched fp32", lambda: LucidStep(preset, S, data, B, False),
                R, W, runs, B, flops_of=True)
        if bf16_ok:
            measure(f"denoising-diffusion-pytorch Unet {preset}-matched bf16",
                    lambda: LucidStep(preset, S, data, B, True), R, W, runs, B)

    print("\n-- ratios (images/s ours ÷ images/s peer; goal ≥ 1.5× each peer)")
    results["ratios"] = {}
    for preset in args.presets:
        rec = chosen[preset]
        for peer in (f"diffusers UNet2DModel {preset}-matched", f"denoising-diffusion-pytorch Unet {preset}-matched"):
            p32 = runs.get(f"{peer} fp32", {})
            if "img_s" not in p32:
                print(f"   {peer}: not measured ({p32.get('error', 'skipped')})")
                continue
            for ours_name, label in ((f"ours {preset} {rec}", f"headline: ours {rec} (our default here) vs peer fp32 (its default)"),
                                     (f"ours {preset} fp32", "like for like: fp32 vs fp32")):
                if "img_s" in runs.get(ours_name, {}):
                    r = runs[ours_name]["img_s"] / p32["img_s"]
                    results["ratios"][f"{ours_name} / {peer} fp32"] = r
                    print(f"   {label:66s} {peer:50s} {r:5.2f}×  {'met' if r >= GOAL_RATIO else 'NOT met'}")
            p16 = runs.get(f"{peer} bf16", {})
            if bf16_ok and "img_s" in p16 and "img_s" in runs.get(f"ours {preset} bf16", {}):
                r = runs[f"ours {preset} bf16"]["img_s"] / p16["img_s"]
                results["ratios"][f"ours {preset} bf16 / {peer} bf16"] = r
                print(f"   {'like for like: bf16 vs bf16':66s} {peer:50s} {r:5.2f}×")

    print("\n-- FLOP utilisation (FlopCounterMode: matmul/conv/attention FLOPs of one step, forward + backward)")
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16) if bf16_ok else None
    results["peak"] = {"fp32": peak32, "bf16": peak16}
    print(f"   measured matmul peak: fp32 {peak32 / 1e9:.0f} GFLOP/s" +
          (f", bf16 {peak16 / 1e9:.0f} GFLOP/s" if peak16 else ""))
    for name, r in runs.items():
        if "flops" in r:
            achieved = r["flops"] / r["step"]["median"]
            peak = peak16 if " bf16" in name and peak16 else peak32
            r["achieved_flops"], r["utilisation"] = achieved, achieved / peak
            print(f"   {name:58s} {r['flops'] / 1e9:7.1f} GFLOP/step  {achieved / 1e9:6.1f} GFLOP/s  "
                  f"{100 * achieved / peak:5.1f}% of the {'bf16' if peak is peak16 else 'fp32'} peak"
                  + (f" ({100 * achieved / peak32:.0f}% of fp32's)" if peak is peak16 else ""))

    if not args.no_health and bf16_ok:
        print(f"\n-- loss health: {args.health_steps} steps, tiny, builtin:digits 16 px, batch 64, lr 1e-3, same seed")
        curves = {p: loss_curve(p, args.health_steps) for p in ("fp32", "bf16")}
        s32, s16 = smoothed(curves["fp32"]), smoothed(curves["bf16"])
        rel = abs(s16 - s32) / s32
        results["loss_health"] = {"fp32_smoothed": s32, "bf16_smoothed": s16, "relative_difference": rel,
                                  "fp32_first": curves["fp32"][:5], "bf16_first": curves["bf16"][:5],
                                  "finite": all(map(lambda v: v == v and abs(v) < float("inf"), curves["bf16"]))}
        for k in (0, len(curves["fp32"]) // 4, len(curves["fp32"]) // 2, len(curves["fp32"]) - 1):
            print(f"   step {k + 1:4d}: fp32 {curves['fp32'][k]:.4f}  bf16 {curves['bf16'][k]:.4f}")
        print(f"   final smoothed loss (EMA 0.98): fp32 {s32:.4f}, bf16 {s16:.4f}: {100 * rel:.1f}% apart "
              f"({'healthy, within 5%' if rel <= 0.05 else 'MORE than 5% apart'})")
    footer()
    save_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
