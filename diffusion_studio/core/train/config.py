"""TrainConfig: the hyper-parameters of a run, stored in every checkpoint (a leaf: the manifest checks them)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..diffusion import objective


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in checkpoints, so a resumed run continues with the same ones)."""

    steps: int | None = 1000          # None: run until ``minutes`` have passed
    minutes: float | None = None
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "constant"     # or "cosine": decay to lr/10 at the last step (needs ``steps``)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"           # auto: bf16 where the hardware has it (CUDA, CPUs with AVX512-BF16/AMX), else fp32
    flip: bool = False                # random horizontal flips (not for digits: a flipped 2 is not a 2)
    channels_last: bool | None = None  # NHWC memory format; None: on a CPU whichever it measures faster, else NCHW
    loss_weighting: str = "uniform"   # or "min_snr": Min-SNR-γ (core/objective.py); uniform is the seeds' L_simple
    snr_gamma: float = 5.0
    compile: bool = False             # torch.compile the training forward pass (GPU fast path; slow first steps)
    class_conditional: bool = False   # feed labels, dropped to the null class with probability p_uncond
    text: bool = False                # feed the data's captions (core/nets/text.py), dropped to ∅ with probability p_uncond
    p_uncond: float = 0.1
    log_every: int = 10
    preview_every: int = 0            # 0: no previews
    preview_n: int = 16
    preview_steps: int = 20
    preview_seed: int = 1234
    checkpoint_every: int = 0         # 0: only when asked (and at the end, by the caller)
    buckets: int = 10

    def validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}: {why}")

        if self.steps is None and self.minutes is None:
            raise bad("steps", "give a number of steps or a time budget in minutes")
        if self.steps is not None and (isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1):
            raise bad("steps", f"must be a positive whole number, got {self.steps}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise bad("minutes", f"must be a positive number, got {self.minutes}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise bad("batch_size", f"must be a positive whole number, got {self.batch_size}")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise bad("lr", f"must be in (0, 1), got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise bad("grad_clip", f"must be positive, got {self.grad_clip}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise bad("warmup_steps" if self.warmup_steps < 0 else "weight_decay", "must not be negative")
        if not 0 <= self.p_uncond <= 1:
            raise bad("p_uncond", f"must be in [0, 1], got {self.p_uncond}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise bad("lr_schedule", f"must be constant or cosine, got {self.lr_schedule!r}")
        objective.check("eps", self.loss_weighting, self.snr_gamma)
        if self.buckets < 1 or self.log_every < 1:
            raise bad("buckets" if self.buckets < 1 else "log_every", "must be at least 1")
        # Checked here, not when first used: a bad preview setting would otherwise fail only after training started.
        for name in ("preview_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise bad(name, f"must not be negative (0 turns it off), got {getattr(self, name)}")
        for name in ("preview_n", "preview_steps"):
            if self.preview_every and getattr(self, name) < 1:
                raise bad(name, f"must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
