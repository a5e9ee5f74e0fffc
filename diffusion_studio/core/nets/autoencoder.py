"""A small convolutional KL-autoencoder (image ↔ latent), as latent diffusion uses; its training: core/train/autoencoder.py."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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
