"""Training the KL-autoencoder a latent model runs on (as a generator of events), encoding a dataset with it, and
measuring it: the latent scale factor and the round trip's PSNR."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..nets.autoencoder import LOSSES, Autoencoder, AutoencoderConfig, kl_term, psnr
from ..runtime.calibrate import resolve_precision
from ..runtime.device import autocast, resolve_device


@dataclass
class AETrainConfig:
    steps: int | None = 2000
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    lr_schedule: str = "cosine"  # after warm-up: constant, or cosine decay to lr/20 by the last step (or minute)
    loss: str = "l1"
    beta_kl: float = 1e-6
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    flip: bool = False
    preview_every: int = 0       # reconstructions of a fixed batch every N steps (and at the end); 0 = never
    preview_n: int = 8
    checkpoint_every: int = 0

    def validate(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("steps: give either steps or minutes")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps: must be at least 1, got {self.steps}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"minutes: must be positive, got {self.minutes}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr: must be in (0, 1), got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule: must be constant or cosine, got {self.lr_schedule!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.beta_kl < 1:
            raise ValueError(f"beta_kl: must be in [0, 1), got {self.beta_kl}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AETrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class AEEvent:
    """One autoencoder training step: losses, speed, and now and then reconstructions of a fixed batch."""

    step: int
    total_steps: int | None
    loss: float
    rec_loss: float
    kl: float
    images_per_s: float
    elapsed_s: float
    eta_s: float | None
    done: bool = False
    originals: torch.Tensor | None = None        # (n, C, H, W) in [−1, 1]
    reconstructions: torch.Tensor | None = None  # the EMA model's D(E(x)), clamped
    latents: torch.Tensor | None = None          # their latent means (n, c, h, w), unscaled
    psnr: float | None = None


class AutoencoderTrainer:
    """Trains the autoencoder on an ImageSource with AdamW and an EMA; ``run`` yields one AEEvent per step."""

    def __init__(self, config: AutoencoderConfig, data, train: AETrainConfig, data_info: dict | None = None,
                 init: Autoencoder | None = None):
        config.validate()
        train.validate()
        if len(data) < 1:
            raise ValueError("data: the dataset is empty")
        if train.batch_size > len(data):
            raise ValueError(f"batch_size: {train.batch_size} is larger than the dataset ({len(data)} images)")
        self.config, self.data, self.train = config, data, train
        self.data_info = data_info or {"spec": getattr(data, "spec", "unknown"), "n": len(data)}
        self.device = resolve_device(train.device)
        self.precision = resolve_precision(train.precision, self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train.seed)
            self.model = Autoencoder(config).to(self.device)
        if init is not None:  # continue from trained weights (same config): a fine-tune or a longer run
            self.model.load_state_dict(init.state_dict())
            self.model.requires_grad_(True)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(train.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(train.seed + 1)
        self.step = 0
        self.elapsed_s = 0.0
        n = min(train.preview_n, len(data))
        self.preview_batch = data.batch(torch.arange(n), device=self.device)

    def progress(self) -> float:
        """How far the run is, 0..1: by steps, or by training time for a --minutes run."""
        cfg = self.train
        if cfg.steps is not None:
            return min(1.0, self.step / cfg.steps)
        return min(1.0, self.elapsed_s / (cfg.minutes * 60))

    def lr_now(self) -> float:
        cfg = self.train
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        if cfg.lr_schedule == "cosine":
            lr *= 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        return lr

    def train_step(self) -> tuple[float, float, float]:
        cfg = self.train
        idx = torch.randint(len(self.data), (cfg.batch_size,), generator=self.gen)
        x = self.data.batch(idx, device=self.device, generator=self.gen, flip=cfg.flip)
        lr = self.lr_now()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        with autocast(self.device, self.precision):
            rec, mean, logvar = self.model(x, generator=self.noise_gen)
        rec = rec.float()
        rec_loss = F.l1_loss(rec, x) if cfg.loss == "l1" else F.mse_loss(rec, x)
        kl = kl_term(mean.float(), logvar.float())
        loss = rec_loss + cfg.beta_kl * kl
        if not torch.isfinite(loss):
            raise FloatingPointError(f"autoencoder training diverged at step {self.step + 1} (loss is not finite)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()],
                                 1.0 - decay)
        self.step += 1
        return float(loss.detach()), float(rec_loss.detach()), float(kl.detach())

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D(E(x)) clamped, E(x)) with the EMA weights, in fp32."""
        z = self.ema.encode(x.to(self.device))
        return self.ema.decode(z).clamp(-1, 1), z

    def run(self) -> Iterator[AEEvent]:
        cfg = self.train
        budget = cfg.minutes * 60 if cfg.minutes is not None else None
        rate = None
        while True:
            t0 = time.perf_counter()
            loss, rec_loss, kl = self.train_step()
            dt = time.perf_counter() - t0
            self.elapsed_s += dt
            inst = cfg.batch_size / max(dt, 1e-9)
            rate = inst if rate is None else 0.9 * rate + 0.1 * inst
            if cfg.steps is not None:
                done = self.step >= cfg.steps
                eta = (cfg.steps - self.step) * cfg.batch_size / rate
            else:
                done = self.elapsed_s >= budget
                eta = max(0.0, budget - self.elapsed_s)
            ev = AEEvent(self.step, cfg.steps, loss, rec_loss, kl, rate, self.elapsed_s, eta, done)
            if cfg.preview_every and (self.step % cfg.preview_every == 0 or done):
                ev.originals = self.preview_batch.cpu()
                rec, z = self.reconstruct(self.preview_batch)
                ev.reconstructions, ev.latents = rec.cpu(), z.cpu()
                ev.psnr = psnr(rec, self.preview_batch)
            yield ev
            if done:
                return


@torch.no_grad()
def encode_all(model: Autoencoder, data, batch_size: int = 256, device: str | torch.device = "cpu",
               flip: bool = False) -> torch.Tensor:
    """The latent means E(x) of every image of an ImageSource (optionally of its mirror images), unscaled, on CPU."""
    model.eval()
    out = []
    for i in range(0, len(data), batch_size):
        x = data.batch(torch.arange(i, min(i + batch_size, len(data))), device=device)
        if flip:
            x = x.flip(-1)
        out.append(model.encode(x).cpu())
    return torch.cat(out)


def measure_scale(model: Autoencoder, data, batch_size: int = 256, device: str | torch.device = "cpu") -> float:
    """The latent scale factor: 1 / std of the encoded training set (Stable Diffusion's 0.18215 is this)."""
    z = encode_all(model, data, batch_size, device)
    std = float(z.float().std())
    if not math.isfinite(std) or std <= 0:
        raise ValueError("the encoded training set has no spread; cannot measure a latent scale factor")
    return 1.0 / std


@torch.no_grad()
def evaluate_psnr(model: Autoencoder, data, batch_size: int = 256, device: str | torch.device = "cpu") -> float:
    """Reconstruction PSNR (dB) of D(E(x)) over every image of an ImageSource."""
    model.eval()
    se, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        x = data.batch(torch.arange(i, min(i + batch_size, len(data))), device=device)
        rec = model.decode(model.encode(x)).clamp(-1, 1)
        se += float(F.mse_loss(rec, x, reduction="sum"))
        count += x.numel()
    mse = se / count
    return float("inf") if mse == 0 else 10.0 * math.log10(4.0 / mse)
