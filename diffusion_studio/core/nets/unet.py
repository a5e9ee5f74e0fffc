"""The noise predictor ε_θ(x_t, t [, class]): a DDPM-style UNet whose sizes are derived, never hard-coded."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import Context, CrossAttnBlock, TextConditioning


@dataclass
class UNetConfig:
    """Everything needed to rebuild the network; stored in checkpoints as JSON."""

    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    num_heads: int = 4
    groups: int = 32
    num_classes: int | None = None  # with classes, label index num_classes is the null ("unconditional") class
    preset: str | None = None
    # Options that let published weights (diffusers' UNet2DModel, core/io/diffusers.py) run unchanged; the
    # defaults are this project's own choices.
    norm_eps: float = 1e-5
    time_sin_first: bool = False      # sinusoidal embedding as [sin, cos] (diffusers' flip_sin_to_cos=False)
    time_freq_shift: float = 0.0      # frequencies exp(−ln(10⁴)·k/(half − shift)); the DDPM checkpoints use 1
    downsample_padding: int = 1       # 0: pad right/bottom by one, then a stride-2 conv without padding
    prediction: str = "eps"  # what the output means: eps, x0 or v (core/objective.py); samplers always get ε
    text_encoder: str | None = None   # text conditioning (core/conditioning.py): the encoder the model was trained with
    context_dim: int = 0              # its token width
    cross_attn_resolutions: tuple[int, ...] = ()

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W)."""
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def divisor(self) -> int:
        """Image sides must be divisible by this: one halving per level after the first."""
        return 2 ** (self.levels - 1)

    def validate(self) -> None:
        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"{field_name}: {why}")

        if not 1 <= self.in_channels <= 64:  # 1 or 3 for images; a latent model has its autoencoder's channels
            raise bad("in_channels", f"must be in 1..64, got {self.in_channels}")
        if self.image_size < 2 or self.image_size % self.divisor:
            raise bad("image_size", f"{self.image_size} is not divisible by {self.divisor} "
                      f"(2^{self.levels - 1}, one halving per level of {self.levels})")
        if self.base_channels < 1 or not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise bad("channel_mults", "base_channels and every multiplier must be positive")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise bad("groups", f"{self.groups} does not divide the channel count {self.base_channels * m}")
            if (self.base_channels * m) % self.num_heads:
                raise bad("num_heads", f"{self.num_heads} does not divide the channel count {self.base_channels * m}")
        if self.num_res_blocks < 1:
            raise bad("num_res_blocks", f"must be at least 1, got {self.num_res_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise bad("num_classes", f"must be at least 1, got {self.num_classes}")
        if not (isinstance(self.norm_eps, (int, float)) and 0 < self.norm_eps < 1):
            raise bad("norm_eps", f"must be in (0, 1), got {self.norm_eps!r}")
        if not (isinstance(self.time_freq_shift, (int, float)) and 0 <= self.time_freq_shift < self.base_channels // 2):
            raise bad("time_freq_shift", f"must be in [0, {self.base_channels // 2}), got {self.time_freq_shift!r}")
        if self.downsample_padding not in (0, 1):
            raise bad("downsample_padding", f"must be 0 or 1, got {self.downsample_padding!r}")
        if self.prediction not in ("eps", "x0", "v"):
            raise bad("prediction", f"must be eps, x0 or v, got {self.prediction!r}")
        if self.text_encoder is not None and (self.context_dim < 1 or self.num_classes is not None):
            raise bad("context_dim", "a text-conditioned model needs context_dim ≥ 1 and no num_classes")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attn_resolutions"] = list(self.attn_resolutions)
        d["cross_attn_resolutions"] = list(self.cross_attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        if not isinstance(d, dict):
            raise ValueError("model config must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"model config has unknown field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        for k in ("channel_mults", "attn_resolutions", "cross_attn_resolutions"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        cfg = cls(**d)
        cfg.validate()
        return cfg


# Presets: attention resolutions are given relative to the image size ("at 1/2 of the input side"), so every
# preset works at every valid size instead of the 64×64-only attention of the code the seeds quote.
PRESETS: dict[str, dict[str, Any]] = {
    # ≈ 0.28M parameters: 8 px images (the digits) on a CPU, the fastest to good samples there (bench/RESULTS.md §9).
    "micro": dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attn_fractions=(4,), groups=8, num_heads=4),
    # ≈ 1.1M parameters: 16–32 px on a CPU in minutes.
    "tiny": dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attn_fractions=(4,), groups=8, num_heads=4),
    # ≈ 6.5M: 32–64 px.
    "small": dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attn_fractions=(2,), groups=16, num_heads=4),
    # ≈ 17M: 64 px.
    "base": dict(base_channels=64, channel_mults=(1, 2, 2, 4), num_res_blocks=2, attn_fractions=(4,), groups=32, num_heads=4),
    # Ho et al.'s CIFAR-10 model, 35.7M parameters at 32×32 with 3 channels.
    "ddpm-cifar": dict(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attn_fractions=(2,), groups=32,
                       num_heads=1, dropout=0.1),
}
PRESET_NOTES = {
    "micro": "≈0.28M parameters, 8 px (the digits' default), the quickest to good samples on a CPU",
    "tiny": "≈1.1M parameters, 16–32 px, trains on a CPU in minutes",
    "small": "≈6.5M parameters, 32–64 px",
    "base": "≈17M parameters, 64 px",
    "ddpm-cifar": "Ho et al.'s 35.7M CIFAR-10 UNet (32 px, GPU)",
}


def preset_config(name: str, image_size: int, in_channels: int, num_classes: int | None = None) -> UNetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = dict(PRESETS[name])
    fractions = p.pop("attn_fractions")
    cfg = UNetConfig(image_size=image_size, in_channels=in_channels, num_classes=num_classes, preset=name,
                     attn_resolutions=tuple(max(1, image_size // f) for f in fractions), **p)
    cfg.validate()
    return cfg


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0, sin_first: bool = False,
                       freq_shift: float = 0.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (B,) timesteps → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - freq_shift))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)] if sin_first else [torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity, which trains more stably
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape  # taken from the tensor, so any resolution works
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, c: int, padding: int = 1):
        super().__init__()
        self.pad = padding == 0  # the published DDPM weights were trained with TF's "SAME": one extra row/column
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.pad else x)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x_t, t [, y]) for (B, C, H, W) inputs with H = W divisible by ``config.divisor``."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        ch = cfg.base_channels
        emb_dim = ch * 4
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.text = TextConditioning(cfg.context_dim, emb_dim) if cfg.text_encoder else None
        self.inp = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch]
        res, c = cfg.image_size, ch
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                c_out = ch * mult
                blocks = nn.ModuleList([ResBlock(c, c_out, emb_dim, cfg.dropout, cfg.groups, cfg.norm_eps)])
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c_out, cfg.num_heads, cfg.groups, cfg.norm_eps))
                if self.text is not None and res in cfg.cross_attn_resolutions:
                    blocks.append(CrossAttnBlock(c_out, cfg.context_dim, cfg.num_heads, cfg.groups))
                self.down.append(blocks)
                c = c_out
                skips.append(c)
            if level != cfg.levels - 1:
                self.down.append(nn.ModuleList([Downsample(c, cfg.downsample_padding)]))
                skips.append(c)
                res //= 2

        self.mid = nn.ModuleList([
            ResBlock(c, c, emb_dim, cfg.dropout, cfg.groups, cfg.norm_eps),
            AttnBlock(c, cfg.num_heads, cfg.groups, cfg.norm_eps),
            ResBlock(c, c, emb_dim, cfg.dropout, cfg.groups, cfg.norm_eps),
        ])
        if self.text is not None:  # the bottleneck always listens to the caption
            self.mid.insert(2, CrossAttnBlock(c, cfg.context_dim, cfg.num_heads, cfg.groups))

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                c_out = ch * mult
                blocks = nn.ModuleList([ResBlock(c + skips.pop(), c_out, emb_dim, cfg.dropout, cfg.groups, cfg.norm_eps)])
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c_out, cfg.num_heads, cfg.groups, cfg.norm_eps))
                if self.text is not None and res in cfg.cross_attn_resolutions:
                    blocks.append(CrossAttnBlock(c_out, cfg.context_dim, cfg.num_heads, cfg.groups))
                if level and i == cfg.num_res_blocks:
                    blocks.append(Upsample(c_out))
                    res *= 2
                self.up.append(blocks)
                c = c_out
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, c, eps=cfg.norm_eps), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected input (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % cfg.divisor or w % cfg.divisor:
            raise ValueError(f"input size {h}×{w} is not divisible by {cfg.divisor}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | Context | None = None) -> torch.Tensor:
        """``y``: class labels (index num_classes = ∅), or a text Context for a text model; None = ∅."""
        self._check_input(x)
        cfg = self.config
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels, sin_first=cfg.time_sin_first,
                                                freq_shift=cfg.time_freq_shift).to(x.dtype))
        ctx = None
        if isinstance(y, Context) and self.text is None:
            raise ValueError("this model is not text-conditioned; it takes no prompt")
        if self.text is not None:
            add, tokens, mask = self.text(y, x.shape[0], x.device)
            emb, ctx = emb + add.to(emb.dtype), (tokens, mask)
        elif self.class_emb is not None:
            if y is None:  # no label given: the null class, i.e. unconditional
                y = torch.full((x.shape[0],), self.config.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(y)
        h = self.inp(x)
        hs = [h]
        for blocks in self.down:
            for layer in blocks:
                h = _apply(layer, h, emb, ctx)
            hs.append(h)
        for layer in self.mid:
            h = _apply(layer, h, emb, ctx)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in blocks:
                h = _apply(layer, h, emb, ctx)
        return self.out(h)


def _apply(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor, ctx) -> torch.Tensor:
    if isinstance(layer, ResBlock):
        return layer(h, emb)
    if isinstance(layer, CrossAttnBlock):
        return layer(h, *ctx)
    return layer(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(preset: str = "tiny", image_size: int = 32, in_channels: int = 3, num_classes: int | None = None) -> UNet:
    return UNet(preset_config(preset, image_size, in_channels, num_classes))
