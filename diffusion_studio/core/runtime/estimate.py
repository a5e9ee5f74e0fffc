"""How long sampling will take, from one timed forward pass on the running machine (big models on a CPU)."""
from __future__ import annotations

import time

import torch

MIN_SIDE = 128  # below this a CPU samples in seconds to a minute; above, a 256-px DDPM takes minutes per step count


def worth_estimating(image_size: int, device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu" and image_size >= MIN_SIDE


@torch.no_grad()
def seconds_per_step(fn, shape: tuple[int, ...], T: int, device: torch.device | str) -> float:
    """Wall time of one call of ε_θ ``fn`` on a batch of ``shape`` (what one reverse step costs)."""
    x = torch.randn(shape, device=device)
    t = torch.full((shape[0],), T - 1, dtype=torch.long, device=device)
    start = time.perf_counter()
    fn(x, t)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def describe(sampler: str, n_steps: int, n_batches: int, per_step_s: float, side: int) -> str:
    """One line: e.g. "DDIM-50 at 256x256: about 3m20s here (50 steps × 1 batch, 4.0 s a step)"."""
    total = per_step_s * n_steps * n_batches
    took = f"{total / 3600:.1f} h" if total >= 3600 else (f"{int(total // 60)}m{int(total % 60):02d}s"
                                                            if total >= 60 else f"{total:.0f} s")
    batches = f" × {n_batches} batches" if n_batches > 1 else ""
    return (f"{sampler.upper()}-{n_steps} at {side}x{side}: about {took} on this CPU ({n_steps} steps{batches}, "
            f"{per_step_s:.1f} s a step, timed just now)")
