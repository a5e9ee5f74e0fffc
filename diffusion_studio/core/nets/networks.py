"""Which network a model config builds: the image UNet, or the 2-D MLP of the geometry lab (its config says
"arch": "mlp"). Everything that builds a model from a checkpoint asks here."""
from __future__ import annotations

from typing import Any

from torch import nn

from .mlp import MLPConfig, MLPDenoiser
from .unet import UNet, UNetConfig

ModelConfig = UNetConfig | MLPConfig


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """The config a checkpoint's model section describes (no "arch", or "unet": the UNet)."""
    if isinstance(d, dict) and d.get("arch", "unet") == "mlp":
        return MLPConfig.from_dict(d)
    return UNetConfig.from_dict(d)


def build_network(config: ModelConfig) -> nn.Module:
    return MLPDenoiser(config) if isinstance(config, MLPConfig) else UNet(config)


def is_image_model(config) -> bool:
    """Images (C, H, W): a UNet; else points (dim,)."""
    return isinstance(config, UNetConfig)
