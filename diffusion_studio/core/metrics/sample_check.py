"""Whether a batch of samples is degenerate (NaN/Inf, or every image one flat colour): a failure, never a success."""
from __future__ import annotations

import torch

FLAT_RANGE = 1e-4  # max − min of an image below this (in [−1, 1] units, ~1/80 of a grey level) is one flat colour


def degenerate(x: torch.Tensor) -> str | None:
    """A reason when the (B, C, H, W) samples ``x`` (before clamping) are unusable, else None."""
    x = x.detach()
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        share = 1.0 - float(finite.float().mean())
        return f"the samples hold NaN or infinite values ({share:.0%} of the pixels)"
    flat = x.flatten(1)
    spread = flat.amax(1) - flat.amin(1)
    if bool((spread < FLAT_RANGE).all()):
        value = float(flat[0, 0].clamp(-1, 1))
        return f"every sample is one flat colour (value {value:.3g} in [-1, 1])"
    return None
