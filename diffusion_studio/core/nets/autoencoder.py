"""A small convolutional KL-autoencoder (image ↔ latent), as latent diffusion uses, and its training generator."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.device import autocast, resolve_device, resolve_precision

FACTORS = (2, 4, 8)
LOSSES = ("l1", "mse")


@dataclass
class AutoencoderConfig:
    """Everything needed to rebuild the autoencoder; stored in its manifest as JSON."""

    image_size: int = 32
    image_channels: int = 3
    factor: int = 4              # downsampling factor f: a (C, H, W) image ↔ a (latent_channels, H/f, W/f) latent
    latent_channels: int = 4
    base_channels: int = 48
    channel_mults: tuple[int, ...] = ()  # one per resolution H/2 .. H/f, log2(f) of them; () = derived (1, 2, 2, ...)
    num_res_blocks: int = 1
    groups: int = 8

    @property
    def levels(self) -> int:
        return int(math.log2(self.factor))

    @property
    def mults(self) -> tuple[int, ...]:
        return tuple(self.channel_mults) or tuple([1] + [2] * (self.levels - 1))

    @property
    def latent_size(self) -> int:
        return self.image_size // self.factor

    def validate(self) -> None:
        if self.factor not in FACTORS:
            raise ValueError(f"factor: must be one of {', '.join(map(str, FACTORS))}, got {self.factor}")
        if self.image_size < self.factor or self.image_size % self.factor:
            raise ValueError(f"image_size: {self.image_size} is not divisible by the downsampling factor {self.factor}")
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels: must be 1 or 3, got {self.image_channels}")
        if not 1 <= self.latent_channels <= 64:
            raise ValueError(f"latent_channels: must be in 1..64, got {self.latent_channels}")
        if len(self.mults) != self.levels or any(m < 1 for m in self.mults):
            raise ValueError(f"channel_mults: needs {self.levels} positive multipliers for f = {self.factor}, "
                             f"got {list(self.channel_mults)}")
        if self.base_channels < 1 or self.num_res_blocks < 0 or self.groups < 1:
            raise ValueError("base_channels, num_res_blocks and groups must be positive")
        for m in self.mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(f"groups: {self.groups} does not divide the channel count {self.base_channels * m}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoencoderConfig":
        if not isinstance(d, dict):
            raise ValueError("autoencoder config must be a JSON object")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"autoencoder config has unknown field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        for k, v in d.items():
            if k == "channel_mults":
                if not isinstance(v, (list, tuple)) or not all(isinstance(m, int) and not isinstance(m, bool) for m in v):
                    raise ValueError("channel_mults: must be a list of whole numbers")
                d[k] = tuple(v)
            elif isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{k}: must be a whole number, got {v!r}")
        cfg = cls(**d)
        cfg.validate()
        return cfg


class _ResBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Autoencoder(nn.Module):
    """E(x) = (μ, log σ²) of a diagonal Gaussian over the latent; D(z) = the image. Sizes derive from the config."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        chs = [c.base_channels * m for m in c.mults]
        g = c.groups
        # The image is folded 2×2 into channels first (and unfolded last): no convolution runs at full resolution,
        # which would cost ~4× the whole rest on a CPU; the 2×2 pixels of a cell are still decoded independently.
        enc: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(4 * c.image_channels, chs[0], 3, padding=1)]
        for i in range(c.levels):
            enc += [_ResBlock(chs[i], g) for _ in range(c.num_res_blocks)]
            if i < c.levels - 1:
                enc.append(nn.Conv2d(chs[i], chs[i + 1], 3, stride=2, padding=1))
        enc += [_ResBlock(chs[-1], g), nn.GroupNorm(g, chs[-1]), nn.SiLU(),
                nn.Conv2d(chs[-1], 2 * c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, chs[-1], 3, padding=1), _ResBlock(chs[-1], g)]
        for i in range(c.levels - 1, -1, -1):
            dec += [_ResBlock(chs[i], g) for _ in range(c.num_res_blocks)]
            if i > 0:
                dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(chs[i], chs[i - 1], 3, padding=1)]
        dec += [nn.GroupNorm(g, chs[0]), nn.SiLU(), nn.Conv2d(chs[0], 4 * c.image_channels, 3, padding=1),
                nn.PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)

    def _check(self, x: torch.Tensor, channels: int, size: int, what: str) -> None:
        c = self.config
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"{what}: expected (N, {channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % size or w % size:
            raise ValueError(f"{what}: size {h}x{w} is not divisible by the downsampling factor {c.factor}"
                             if size == c.factor else f"{what}: bad size {h}x{w}")

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x) for images x in [−1, 1], each (N, latent_channels, H/f, W/f)."""
        self._check(x, self.config.image_channels, self.config.factor, "encode")
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the deterministic latent that diffusion runs on (unscaled)."""
        return self.moments(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (not clamped) for unscaled latents z."""
        self._check(z, self.config.latent_channels, 1, "decode")
        return self.decoder(z).float()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = self.moments(x)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar


def kl_term(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per latent element, averaged: ½ mean(μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [−1, 1] (peak-to-peak 2), over the whole batch."""
    mse = float(F.mse_loss(x.float().clamp(-1, 1), y.float().clamp(-1, 1)))
    return float("inf") if mse == 0 else 10.0 * math.log10(4.0 / mse)


# ---- training -------------------------------------------------------------------------------------------------------
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
