"""The default training recipe — one for the CLI and the GUI — and each dataset's natural image size.

Tuned for time to good samples on a 2-core CPU (bench/time_to_quality.py, figures in bench/RESULTS.md), not for
per-step speed alone: a 5-minute run whose learning rate warms up and decays over the time it has, Min-SNR-5 loss
weights on the seeds' ε target (Hang et al. 2023: the low-noise steps stop dominating the gradient), a high learning
rate the tiny UNet tolerates, and an EMA that warms up so a short run's average is not mostly its random start
(core/training.py). The seeds' plain objective stays one flag away: --loss-weighting uniform.
"""
from __future__ import annotations

from typing import Any

RECIPE: dict[str, Any] = dict(
    model="tiny", minutes=5.0, batch=64, lr=2e-3, warmup=100, lr_schedule="cosine", ema_decay=0.999,
    prediction="eps", loss_weighting="min_snr", snr_gamma=5.0,
    schedule="linear", T=1000, beta_start=1e-4, beta_end=0.02,
)
# What the defaults were before this recipe (bench/time_to_quality.py compares the two).
PREVIOUS: dict[str, Any] = dict(
    model="tiny", size=32, steps=1000, batch=64, lr=2e-4, warmup=100, lr_schedule="constant", ema_decay=0.999,
    prediction="eps", loss_weighting="uniform", snr_gamma=5.0,
)
DEFAULT_SIZE = 32
# Images this small are upscaled by an integer factor to the smallest side the tiny UNet takes (divisible by 4).
NATURAL_SIZES = {"builtin:digits": 16, "builtin:shapes": 32}


def natural_size(spec: str | None, native: int | None = None, divisor: int = 4) -> int:
    """The image size a dataset is best trained at: its own resolution (digits are 8×8, so 16 — the smallest the
    tiny UNet takes), else ``native`` (e.g. MNIST's 28, CIFAR's 32) rounded up to ``divisor``, else 32."""
    if spec:
        key = str(spec).strip().lower()
        if key in NATURAL_SIZES:
            return NATURAL_SIZES[key]
        if key.startswith("mnist:"):
            native = native or 28
        elif key.startswith("cifar10:"):
            native = native or 32
    if native:
        return max(divisor * 2, -(-int(native) // divisor) * divisor)
    return DEFAULT_SIZE
