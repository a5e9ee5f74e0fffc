"""Latent vs pixel diffusion on builtin:shapes at 32 px, measured in one run (run by hand; figures → bench/RESULTS.md).

1. the autoencoder's reconstruction PSNR on held-out shapes (another seed than its training set);
2. training images/s of the same UNet preset on pixels (3x32x32) and on the scaled latents (4x8x8), in alternating
   blocks so both see the same machine load;
3. FID of a pixel model and a latent model each trained for the same wall-clock budget (the latent one pays for
   encoding the dataset out of its budget), with the features of a FeatureNet classifier trained here on shapes of a
   third seed; the real-vs-real and reconstruction-vs-real FIDs are printed as the floor and the autoencoder's limit;
4. sampling time (DDIM) of each, the latent one with decoding included.

    python bench/bench_latent.py --minutes 3 --threads 1 --json bench/latent.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_studio.core.train.autoencoder import evaluate_psnr  # noqa: E402
from diffusion_studio.core.diffusion.eps import model_fn  # noqa: E402
from diffusion_studio.core.metrics.features import train_feature_net  # noqa: E402
from diffusion_studio.core.metrics.fid import compute_fid  # noqa: E402
from diffusion_studio.core.train.latent import LatentTrainer, encode_dataset
from diffusion_studio.core.io.space import LatentSpace  # noqa: E402
from diffusion_studio.core.diffusion.samplers import sample  # noqa: E402
from diffusion_studio.core.diffusion.schedule import NoiseSchedule  # noqa: E402
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.train.config import TrainConfig  # noqa: E402
from diffusion_studio.core.nets.unet import preset_config  # noqa: E402
from diffusion_studio.data.shapes import shapes  # noqa: E402


def cpu_line() -> str:
    name = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), name)
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
        shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(shown)}"
    except OSError:
        return name


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def train_config(args, **kw) -> TrainConfig:
    base = dict(batch_size=args.batch, lr=1e-3, warmup_steps=50, lr_schedule="cosine", ema_decay=0.995,
                seed=0, device="cpu", precision=args.precision, preview_every=0, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


def throughput(trainers: dict[str, Trainer], rounds: int, steps: int) -> dict[str, float]:
    """img/s of each trainer over ``rounds`` alternating blocks of ``steps`` steps (after 3 warm-up steps each)."""
    for tr in trainers.values():
        for _ in range(3):
            tr.train_step()
    spent = {k: 0.0 for k in trainers}
    for _ in range(rounds):
        for k, tr in trainers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.train_step()
            spent[k] += time.perf_counter() - t0
    return {k: rounds * steps * trainers[k].config.batch_size / spent[k] for k in trainers}


def run_for(trainer: Trainer) -> int:
    for _ in trainer.run():
        pass
    return trainer.step


def sample_images(trainer: Trainer, n: int, steps: int, space=None) -> tuple[torch.Tensor, float]:
    mc = trainer.ema.config
    fn = model_fn(trainer.ema, "cpu", trainer.precision)  # ε-prediction models
    t0 = time.perf_counter()
    out = []
    for b in range(0, n, 64):
        m = min(64, n - b)
        x = sample(fn, trainer.schedule, (m, mc.in_channels, mc.image_size, mc.image_size), "ddim", steps=steps,
                   seed=100 + b)
        out.append(space.decode(x) if space is not None else x.clamp(-1, 1))
    return torch.cat(out), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--autoencoder", default="builtin:shapes-ae")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget of each model (wall clock)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speed-presets", default="tiny,small", help="UNet presets whose img/s are compared")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--json", default=None)
    ap.add_argument("--save-latent", default=None, metavar="DIR", help="also save the latent model's checkpoint")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_line(),
                 "threads": args.threads, "load_start": load(), "args": vars(args)}
    print(f"{res['date']}  {res['cpu']}  threads {args.threads}  load {res['load_start']}", flush=True)

    space = LatentSpace.load(args.autoencoder)
    c = space.config
    data = shapes(c.image_size, c.image_channels, n=2000, seed=0)
    held = shapes(c.image_size, c.image_channels, n=500, seed=1)
    res["ae_psnr_heldout_db"] = evaluate_psnr(space.model, held)
    print(f"autoencoder {args.autoencoder}: PSNR {res['ae_psnr_heldout_db']:.2f} dB on 500 held-out shapes", flush=True)

    t0 = time.perf_counter()
    latents = encode_dataset(space, data)
    res["encode_s"] = time.perf_counter() - t0
    print(f"encoded 2000 images once in {res['encode_s']:.1f} s (latent std {float(latents.images.std()):.3f})")

    schedule = NoiseSchedule.create("linear", 1000)
    pix_cfg = preset_config(args.preset, c.image_size, c.image_channels)
    lat_cfg = preset_config(args.preset, c.latent_size, c.latent_channels)
    pixels = TensorImages(data.batch(torch.arange(len(data))), spec="builtin:shapes")
    res["train_img_s"], res["speedup"] = {}, {}
    for preset in args.speed_presets.split(","):
        pc, lc = preset_config(preset, c.image_size, c.image_channels), preset_config(preset, c.latent_size,
                                                                                       c.latent_channels)
        speed = throughput({"pixel": Trainer(pc, schedule, pixels, train_config(args, steps=10**6)),
                            "latent": LatentTrainer(lc, schedule, latents, train_config(args, steps=10**6),
                                                    space=space)}, args.rounds, args.block)
        res["train_img_s"][preset] = speed
        res["speedup"][preset] = speed["latent"] / speed["pixel"]
        print(f"training img/s ({preset}, batch {args.batch}): pixel {speed['pixel']:.1f}, latent "
              f"{speed['latent']:.1f} → {res['speedup'][preset]:.1f}x  (load {load()})", flush=True)

    budget = args.minutes
    pix = Trainer(pix_cfg, schedule, pixels, train_config(args, minutes=budget, steps=None))
    res["pixel_steps"] = run_for(pix)
    lat_minutes = max(0.05, budget - res["encode_s"] / 60)  # the latent run pays for encoding out of its budget
    lat = LatentTrainer(lat_cfg, schedule, latents, train_config(args, minutes=lat_minutes, steps=None), space=space)
    res["latent_steps"] = run_for(lat)
    if args.save_latent:
        lat.save(Path(args.save_latent) / "checkpoint.json")
    print(f"{budget:g} min each: pixel {res['pixel_steps']} steps, latent {res['latent_steps']} steps "
          f"(load {load()})", flush=True)

    fake_pix, res["sample_s_pixel"] = sample_images(pix, args.samples, args.ddim_steps)
    fake_lat, res["sample_s_latent"] = sample_images(lat, args.samples, args.ddim_steps, space)
    print(f"sampling {args.samples} images, DDIM {args.ddim_steps}: pixel {res['sample_s_pixel']:.1f} s, latent "
          f"{res['sample_s_latent']:.1f} s with decoding", flush=True)

    judge_data = shapes(c.image_size, c.image_channels, n=1500, seed=2)
    judge, info = train_feature_net(judge_data.batch(torch.arange(len(judge_data))), judge_data.labels, epochs=8,
                                    seed=0, class_names=judge_data.class_names)
    res["judge_heldout_accuracy"] = info.get("heldout_accuracy")
    real = held.batch(torch.arange(len(held)))
    real2 = shapes(c.image_size, c.image_channels, n=args.samples, seed=3)
    with torch.no_grad():
        recon = space.decode(space.encode(real2.batch(torch.arange(len(real2)))))
    judge.eval()
    for key, fake in (("fid_real_vs_real", real2.batch(torch.arange(len(real2)))), ("fid_ae_reconstructions", recon),
                      ("fid_pixel", fake_pix), ("fid_latent", fake_lat)):
        res[key] = float(compute_fid(real, fake, judge))
        print(f"{key}: {res[key]:.2f}", flush=True)
    res["load_end"] = load()
    print(f"load at the end {res['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
