"""TrainConfig: the hyper-parameters of a run, stored in every checkpoint (a leaf: the manifest checks them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import limits
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
        """ValueError "field: why" for the first setting out of its range (core/limits.py: the ranges every entry
        point and the checkpoint manifest share)."""
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}: {why}")

        if self.steps is None and self.minutes is None:
            raise bad("steps", "give a number of steps or a time budget in minutes")
        for name in (*limits.INT_LIMITS, *limits.FLOAT_LIMITS):
            value = getattr(self, name, None)
            if value is None and name in ("steps", "minutes", "grad_clip"):
                continue
            why = limits.check(name, value)
            if why is not None:
                raise bad(name, why)
        if self.lr_schedule not in ("constant", "cosine"):
            raise bad("lr_schedule", f"must be constant or cosine, got {self.lr_schedule!r}")
        objective.check("eps", self.loss_weighting, self.snr_gamma)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
