"""The one range of every training setting a user can give, read by the command line's argument types, the app's
form, TrainConfig.validate and the checkpoint manifest alike (no torch here: `--help` stays fast), so a run can never
be started with a value its own checkpoint would refuse."""
from __future__ import annotations

# name → (lowest, highest) for whole numbers, both included
INT_LIMITS: dict[str, tuple[int, int]] = {
    "steps": (1, 10**10), "batch_size": (1, 1 << 20), "warmup_steps": (0, 10**10), "seed": (0, 2**63 - 1),
    "log_every": (1, 10**10), "preview_every": (0, 10**10), "checkpoint_every": (0, 10**10),
    "preview_n": (1, 1024), "preview_steps": (1, 100_000), "preview_seed": (0, 2**63 - 1), "buckets": (1, 1000),
}
# name → (lowest, highest, lowest excluded, highest excluded)
FLOAT_LIMITS: dict[str, tuple[float, float, bool, bool]] = {
    "minutes": (0.0, 1e8, True, False), "lr": (0.0, 1.0, True, True), "weight_decay": (0.0, 1e4, False, False),
    "grad_clip": (0.0, 1e12, True, False), "ema_decay": (0.0, 1.0, False, True), "p_uncond": (0.0, 1.0, False, False),
    "snr_gamma": (0.0, 1e6, True, False),
}
MAX_GUIDANCE = 100.0   # classifier-free guidance w beyond this only blows the samples up


def check(name: str, value) -> str | None:
    """Why ``value`` is out of range for setting ``name`` ("must be …"), or None when it is fine."""
    if name in INT_LIMITS:
        lo, hi = INT_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"must be a whole number in {lo:,}..{hi:,}, got {value!r}"
    elif name in FLOAT_LIMITS:
        lo, hi, lo_open, hi_open = FLOAT_LIMITS[name]
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value == value \
            and abs(value) != float("inf")
        ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            return f"must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}, got {value!r}"
    return None
