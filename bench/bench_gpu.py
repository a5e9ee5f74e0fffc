"""GPU fast path: DDPM-CIFAR (35.7M) training images/s at 32×32 batch 128, and 256 samples with DDPM-1000 / DDIM-50.

Run by hand on a CUDA machine (not a test):  python bench/bench_gpu.py          (about 10 minutes, mostly compiling)
On a machine without CUDA it says so and exits (``--cpu-smoke`` runs the same code paths on the CPU with the tiny
preset and small sizes, to check the script itself; its figures mean nothing).

Training: our Trainer with bf16 autocast and fused AdamW (its CUDA defaults), ± channels_last, ± torch.compile; fp32
for reference. Reference: Ho et al. trained this model at 21 steps/s × 128 = 2 688 img/s on a TPU v3-8; goal ≥ 2×.
Sampling: 256 CIFAR-size samples with DDPM-1000 (paper: 17 s on that TPU; goal ≤ 10 s) and DDIM-50, bf16, ±
channels_last, ± torch.compile, ± CUDA graphs (torch.compile mode "reduce-overhead" captures the network's step in a
CUDA graph and replays it). Untrained weights: the timing does not depend on them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import footer, header, save_json, stats  # noqa: E402

from diffusion_studio.core.diffusion.samplers import sample  # noqa: E402
from diffusion_studio.core.diffusion.schedule import NoiseSchedule  # noqa: E402
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.train.config import TrainConfig  # noqa: E402
from diffusion_studio.core.nets.unet import UNet, count_parameters, preset_config  # noqa: E402

TPU_IMG_S = 21 * 128          # Ho et al. 2020, TPU v3-8
TPU_DDPM_256_S = 17.0         # 256 samples, 1000 steps, same TPU
GOAL_TRAIN = 2 * TPU_IMG_S
GOAL_DDPM_S = 10.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_variant(device, preset, size, batch, precision, channels_last, compile_, steps, warmup) -> dict:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(2048, 3, size, size, generator=g) * 2 - 1).to(device)  # data on the device: no copies
    cfg = TrainConfig(steps=10**9, batch_size=batch, device=str(device), precision=precision,
                      channels_last=channels_last, compile=compile_, warmup_steps=0)
    tr = Trainer(preset_config(preset, size, 3), NoiseSchedule.create("linear", 1000), TensorImages(images), cfg)
    t0 = time.perf_counter()
    for _ in range(warmup):
        tr.train_step()
    sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        tr.train_step()
        sync(device)
        times.append(time.perf_counter() - t0)
    s = stats(times)
    return {"params": count_parameters(tr.model), "step": s, "img_s": batch / s["median"], "warmup_s": warm_s,
            "fused_adamw": bool(tr.optimizer.defaults.get("fused")), "precision": tr.precision,
            "loss": tr.last_loss}


def sample_variant(device, preset, size, n, sampler, steps, precision, channels_last, compile_mode, repeats) -> dict:
    model = UNet(preset_config(preset, size, 3)).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model, mode=compile_mode) if compile_mode else model
    inner = model_fn(net, device, precision)
    fn = inner
    if channels_last:
        def fn(x, t):
            return inner(x.contiguous(memory_format=torch.channels_last), t)
    schedule = NoiseSchedule.create("linear", 1000)

    def run():
        return sample(fn, schedule, (n, 3, size, size), sampler, steps=steps, seed=0, device=device)

    t0 = time.perf_counter()
    run()  # warm-up (and compilation)
    sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = run()
        sync(device)
        times.append(time.perf_counter() - t0)
    s = stats(times)
    return {"seconds": s["median"], "all": times, "warmup_s": warm_s, "finite": bool(torch.isfinite(x).all())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="timed training steps per variant")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation happens here)")
    ap.add_argument("--repeats", type=int, default=3, help="timed sampling runs per variant")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true", help="check the script on a CPU (tiny, small sizes)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); run this on a CUDA machine. "
              "Nothing was measured.")
        return 1
    if args.cpu_smoke:
        device, preset, batch, n_samples, ddpm_steps = torch.device("cpu"), "tiny", 8, 4, 20
        args.steps, args.warmup, args.repeats = 2, 1, 1
    else:
        device, preset, batch, n_samples, ddpm_steps = torch.device("cuda"), "ddpm-cifar", 128, 256, 1000
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 reference runs use TF32 tensor cores, as is usual
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    info = header(f"bench_gpu: {preset} training at 32×32 batch {batch}; {n_samples} samples DDPM-{ddpm_steps} / DDIM-50")
    result: dict = {"machine": info, "train": {}, "sample": {}}
    compiles = [False] if args.no_compile else [False, True]

    print(f"\n-- training ({args.steps} timed steps after {args.warmup}; TPU v3-8 reference {TPU_IMG_S} img/s, "
          f"goal ≥ {GOAL_TRAIN} img/s)")
    variants = [("fp32 (TF32)", "fp32", False, False)]
    variants += [(f"bf16{' channels_last' if cl else ''}{' compile' if c else ''}", "bf16", cl, c)
                 for c in compiles for cl in (False, True)]
    for name, prec, cl, c in variants:
        try:
            r = train_variant(device, preset, 32, batch, prec, cl, c, args.steps, args.warmup)
        except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
            result["train"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            print(f"   {name:28s} FAILED: {result['train'][name]['error']}")
            continue
        result["train"][name] = r
        print(f"   {name:28s} {r['params'] / 1e6:.1f}M params  step {r['step']['median'] * 1e3:7.2f} ms  "
              f"{r['img_s']:8.0f} img/s  ({r['img_s'] / TPU_IMG_S:.2f}× the TPU; fused AdamW {r['fused_adamw']}; "
              f"warm-up {r['warmup_s']:.0f} s)")

    print(f"\n-- sampling {n_samples} images 32×32 (bf16; paper: DDPM-1000 in {TPU_DDPM_256_S:.0f} s on the TPU, "
          f"goal ≤ {GOAL_DDPM_S:.0f} s)")
    modes = [None] if args.no_compile else [None, "default", "reduce-overhead"]
    for sampler, steps in (("ddpm", ddpm_steps), ("ddim", 50)):
        for mode in modes:
            for cl in (False, True):
                name = (f"{sampler.upper()}-{steps} bf16{' channels_last' if cl else ''}"
                        f"{'' if mode is None else ' compile' if mode == 'default' else ' compile+CUDA graphs'}")
                try:
                    r = sample_variant(device, preset, 32, n_samples, sampler, steps, "bf16", cl, mode, args.repeats)
                except Exception as e:  # noqa: BLE001
                    result["sample"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                    print(f"   {name:48s} FAILED: {result['sample'][name]['error']}")
                    continue
                result["sample"][name] = r
                print(f"   {name:48s} {r['seconds']:7.2f} s  (warm-up {r['warmup_s']:.0f} s, finite {r['finite']})")

    best_train = max((r["img_s"] for r in result["train"].values() if "img_s" in r), default=0.0)
    best_ddpm = min((r["seconds"] for k, r in result["sample"].items() if k.startswith("DDPM") and "seconds" in r),
                    default=float("inf"))
    print(f"\n   best training: {best_train:.0f} img/s = {best_train / TPU_IMG_S:.2f}× the TPU v3-8 "
          f"(goal ≥ 2×: {'met' if best_train >= GOAL_TRAIN else 'NOT met'})")
    print(f"   best DDPM-{ddpm_steps} for {n_samples}: {best_ddpm:.2f} s (goal ≤ {GOAL_DDPM_S:.0f} s: "
          f"{'met' if best_ddpm <= GOAL_DDPM_S else 'NOT met'})")
    if args.cpu_smoke:
        print("   (--cpu-smoke: a check of the script on a CPU with the tiny preset; these figures mean nothing)")
    footer()
    save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
