"""Frame: what every sampler yields at each step — x_t, and the x̂₀ and ε that made it — cloned so nothing changes it."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Frame:
    """One step of reverse sampling, cloned so later steps cannot change it.

    ``x`` is the sample at timestep index ``t`` (−1: the finished x_0; T − 1 at the start: pure noise x_T).
    ``x0_pred`` and ``eps_pred`` are the model's predictions, made at index ``t_model``, that produced ``x``
    (None for the starting frame). ``step`` counts finished steps out of ``n_steps``.
    """

    step: int
    n_steps: int
    t: int
    t_model: int | None
    x: torch.Tensor
    x0_pred: torch.Tensor | None
    eps_pred: torch.Tensor | None

    @property
    def is_final(self) -> bool:
        return self.t == -1

    @property
    def paper_t(self) -> int:
        """The paper's t of ``x``: index + 1, so x_0 is 0 and x_T is T."""
        return self.t + 1
