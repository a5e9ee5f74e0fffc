"""The 2-D noise predictor ε_θ(x_t, t [, class]): a small residual MLP with the UNet's interface, trained in seconds."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .unet import timestep_embedding

NORMS = ("layernorm", "none")
MLP_PRESET = "mlp"  # the one preset name a 2-D model records
PREDICTIONS = ("eps", "x0", "v")


@dataclass
class MLPConfig:
    """Everything needed to rebuild the network; stored with a model as JSON (with "arch": "mlp")."""

    arch: str = "mlp"            # which network (core/nets/networks.py); the UNet's config has none
    dim: int = 2                 # coordinates per point
    hidden: int = 64             # width of every hidden layer (64 × 4 blocks: the fastest good 8gaussians fit on a CPU)
    depth: int = 4               # residual blocks
    t_dim: int = 64              # sinusoidal embedding width (then an MLP to `hidden`)
    num_classes: int | None = None  # with classes, label index num_classes is the null ("unconditional") class
    norm: str = "layernorm"      # inside each block: layernorm or none
    dropout: float = 0.0
    prediction: str = "eps"      # what the output means: eps, x0 or v (as the UNet's config); samplers always get ε
    preset: str | None = None

    def validate(self) -> None:
        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"{field_name}: {why}")

        def whole(field_name: str, lo: int, hi: int) -> None:
            v = getattr(self, field_name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise bad(field_name, f"must be an integer in {lo}..{hi:,}, got {v!r}")

        whole("dim", 1, 4096)
        whole("hidden", 1, 8192)
        whole("depth", 0, 64)
        whole("t_dim", 2, 4096)
        if self.num_classes is not None:
            whole("num_classes", 1, 100_000)
        if self.norm not in NORMS:
            raise bad("norm", f"must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if self.prediction not in PREDICTIONS:
            raise bad("prediction", f"must be eps, x0 or v, got {self.prediction!r}")
        if self.arch != "mlp":
            raise bad("arch", f"must be \"mlp\", got {self.arch!r}")
        if self.preset is not None and not isinstance(self.preset, str):
            raise bad("preset", f"must be a name or None, got {self.preset!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (dim,)."""
        return (self.dim,)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MLPConfig":
        if not isinstance(d, dict):
            raise ValueError("model config must be a JSON object")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"model config has unknown field(s): {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg


class ResidualBlock(nn.Module):
    """h + W₂ SiLU(norm(W₁ SiLU(norm(h)) + E(emb))): the UNet's ResBlock with linear layers; starts as the identity."""

    def __init__(self, width: int, norm: str, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width) if norm == "layernorm" else nn.Identity()
        self.lin1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width) if norm == "layernorm" else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.lin2 = nn.Linear(width, width)
        nn.init.zeros_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        a = self.lin1(F.silu(self.norm1(h))) + self.emb(F.silu(emb))
        return h + self.lin2(self.dropout(F.silu(self.norm2(a))))


class MLPDenoiser(nn.Module):
    """ε_θ(x_t, t [, y]) for (B, dim) inputs (or (B, ...) with dim values per row); ``forward(x, t, y=None)``."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        config.validate()
        self.config = cfg = config
        w = cfg.hidden
        self.time_mlp = nn.Sequential(nn.Linear(cfg.t_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, w) if cfg.num_classes else None
        self.inp = nn.Linear(cfg.dim, w)
        self.blocks = nn.ModuleList(ResidualBlock(w, cfg.norm, cfg.dropout) for _ in range(cfg.depth))
        # No norm in the head: the residual stream carries inp(x) linearly, so ε̂ can keep growing with ‖x_t‖ where
        # it must (ε̂ ≈ x_t at high noise). A LayerNorm here bounds ‖ε̂‖, and DDIM then lets tail samples drift off.
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(w, cfg.dim))
        nn.init.zeros_(self.out[-1].weight)  # ε̂ = 0 at the start, as the UNet's last conv
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``t``: (B,) timestep indices (float allowed); ``y``: (B,) class labels, index num_classes = ∅; None = ∅."""
        cfg = self.config
        if x.ndim < 2 or math.prod(x.shape[1:]) != cfg.dim:
            raise ValueError(f"expected input (B, {cfg.dim}), got {tuple(x.shape)}")
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"expected t of shape ({b},), got {tuple(t.shape)}")
        emb = self.time_mlp(timestep_embedding(t, cfg.t_dim).to(x.dtype))
        if self.class_emb is not None:
            if y is None:  # no label given: the null class, i.e. unconditional
                y = torch.full((b,), cfg.num_classes, device=x.device, dtype=torch.long)
            y = torch.as_tensor(y, device=x.device)
            if y.shape != (b,) or y.dtype.is_floating_point or bool(((y < 0) | (y > cfg.num_classes)).any()):
                raise ValueError(f"y must be ({b},) integer labels in 0..{cfg.num_classes} ({cfg.num_classes} = ∅)")
            emb = emb + self.class_emb(y.long())
        elif y is not None:
            raise ValueError("this model has no classes; pass y=None")
        h = self.inp(x.reshape(b, cfg.dim))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape)
