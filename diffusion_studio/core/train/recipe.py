"""The default training recipe — one for the CLI and the GUI — and each dataset's natural image size.

Tuned for time to good samples on a 2-core CPU (bench/time_to_quality.py, figures in bench/RESULTS.md), not for
per-step speed alone: a 5-minute run whose learning rate warms up and decays over the time it has, Min-SNR-5 loss
weights on the seeds' ε target (Hang et al. 2023: the low-noise steps stop dominating the gradient), a high learning
rate the tiny UNet tolerates, and an EMA that warms up so a short run's average is not mostly its random start
(core/train/trainer.py). The seeds' plain objective stays one flag away: --loss-weighting uniform.
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
# Images of SMALL_SIDE px or less: a step's fixed costs (dozens of small kernels, the optimizer, the EMA) outweigh
# its arithmetic, so a larger batch trains more images per second (the tiny UNet at 8 px, 2 threads, AVX2 fp32:
# 505 img/s at batch 64, 699 at 128), with a learning rate raised to match; and the narrower micro UNet (0.28M
# parameters, 2.1× tiny's images/s there) reaches better samples in the same minutes (bench/RESULTS.md §9). At
# MNIST's 28 px the same held: micro at batch 128, lr 3e-3 beat tiny at 64, 2e-3 per minute (FID 1.74 vs 2.20 after
# 2,800 vs 2,900 steps, unconditional) and, conditioned on the labels, made 98.8 % confidently classified digits in
# 20 minutes (bench/RESULTS.md §12). Sizes above 28 (32-px RGB shapes and photos) keep tiny: not measured there.
SMALL_SIDE = 28
# 2-D points (the geometry lab): the small MLP, a large batch of cheap rows, a fixed number of steps; uniform weights
# put more points in the modes than Min-SNR-5 on toy:8gaussians (96.7 % vs 91.6 % within 3σ when it was chosen;
# bench/bench_geometry.py measures the default, RESULTS.md §13).
POINTS_RECIPE: dict[str, Any] = dict(
    model="mlp", steps=3000, batch=1024, lr=2e-3, warmup=100, lr_schedule="cosine", ema_decay=0.995,
    prediction="eps", loss_weighting="uniform", snr_gamma=5.0, points=10_000,
    schedule="linear", T=1000, beta_start=1e-4, beta_end=0.02,
)
SMALL_IMAGES: dict[str, Any] = dict(batch=128, lr=3e-3, model="micro")
DEFAULT_SIZE = 32
# The digits are 8×8 (sklearn's 16 grey levels): trained as they are, not upscaled (2.5× the images per second of
# 16 px and better samples in the same minutes, bench/RESULTS.md §9). Shapes are drawn at any size; 32 shows them.
NATURAL_SIZES = {"builtin:digits": 8, "builtin:mnist": 28, "builtin:shapes": 32}


def conditions_on_labels(num_classes: int | None, text: bool = False, latent: bool = False) -> bool:
    """Whether a run conditions on its data's labels unless told otherwise: labelled pixel images (builtin:digits,
    builtin:mnist, a folder with one subfolder per class) do — sampling then draws one of each class in turn, guided
    at w = 2, and 10 % of labels dropped to ∅ keep unconditional samples possible. On 28-px MNIST, 20 minutes of the
    recipe made 98.8 % confidently classified digits with the labels against far fewer without (bench/RESULTS.md §12).
    Not for a caption-conditioned run (the caption says the class) nor a latent one (not measured there)."""
    return bool(num_classes and num_classes >= 2) and not text and not latent


def recipe_for(image_size: int) -> dict[str, Any]:
    """The default recipe for images of side ``image_size`` (pixels the user trains on, latent runs included)."""
    recipe = dict(RECIPE)
    if image_size <= SMALL_SIDE:
        recipe.update(SMALL_IMAGES)
    return recipe


def natural_size(spec: str | None, native: int | None = None, divisor: int = 4) -> int:
    """The image size a dataset is best trained at: its own resolution (digits: 8), else ``native`` (e.g. MNIST's
    28, CIFAR's 32) rounded up to ``divisor`` (at least 8, the smallest side the tiny UNet takes), else 32."""
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
