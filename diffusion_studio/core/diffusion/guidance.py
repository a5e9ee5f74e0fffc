"""Classifier-free guidance (Ho & Salimans 2022): ε̃ = ε_∅ + w (ε_c − ε_∅), both halves in one doubled batch."""
from __future__ import annotations

from typing import Callable

import torch

from ..nets.conditioning import cat_conditions, null_like

Net = Callable[..., torch.Tensor]  # net(x, t, condition) → the network's output (ε, or x0 / v: guidance is linear)


def guided(net: Net, x: torch.Tensor, t: torch.Tensor, cond, w: float, negative=None,
           num_classes: int | None = None) -> torch.Tensor:
    """ε̃ for condition ``cond`` (class labels or a text Context) at weight ``w``.

    The unconditional half is ∅ (the null class / null caption), or ``negative`` (a negative prompt) when given.
    w = 1 is the conditional model alone and w = 0 the unconditional one: each then costs a single pass.
    The conditional half comes first in the doubled batch, so attention recorders find it in the first rows.
    """
    if cond is None:
        return net(x, t, None)
    uncond = negative if negative is not None else null_like(cond, num_classes)
    if w == 1.0:
        return net(x, t, cond)
    if w == 0.0:
        return net(x, t, uncond)
    both = net(torch.cat([x, x]), torch.cat([t, t]), cat_conditions(cond, uncond))
    eps_c, eps_u = both.chunk(2)
    return eps_u + w * (eps_c - eps_u)
