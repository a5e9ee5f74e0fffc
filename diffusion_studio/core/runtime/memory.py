"""What a run needs in memory, worked out before it starts: the network's weights and optimizer state, and the
activations a training step keeps for backward, measured by a forward pass on the meta device (no memory at all),
against the memory this machine has free. A size or batch that cannot fit is refused up front, with what would."""
from __future__ import annotations

import math
import os

import torch
from torch import nn

GIB = 1 << 30
TRAIN_STATE = 5        # weights, gradients, two AdamW moments and the EMA copy: five float32 copies of the weights
HEADROOM = 0.85        # of the free memory a run may plan to use (the app, the data and torch's own buffers need room)
ROUGH_ACTIVATIONS = 500  # activations per input value of the largest preset, an upper bound for the quick test
# A real step holds 1.4-3.2× the activations the meta pass counts (their gradients, each op's temporaries, attention
# scores: bench/bench_memory.py). The count alone decides a refusal (what cannot fit even so); advice on what would
# fit uses this bound, so the batch or size it names does fit.
ACTIVATION_UPPER = 3.5


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_left() -> int | None:
    """What a container's memory limit (cgroup v2) leaves: memory.max − memory.current, or None without a limit."""
    try:
        with open("/proc/self/cgroup", encoding="ascii", errors="replace") as f:
            rel = next((ln.split("::", 1)[1].strip() for ln in f if ln.startswith("0::")), None)
        if rel is None:
            return None
        base = "/sys/fs/cgroup" + rel.rstrip("/")
        with open(f"{base}/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(f"{base}/memory.current", encoding="ascii") as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError, StopIteration):
        return None


def _address_space_left() -> int | None:
    """What an address-space limit (ulimit -v) leaves beyond what this process has mapped, or None without one."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            mapped = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))
        return max(0, soft - mapped)
    except (ImportError, OSError, ValueError, StopIteration):
        return None


def available_bytes() -> int:
    """Memory free for a new allocation: the least of MemAvailable (Linux; else the physical memory), what a
    container's limit leaves and what an address-space limit leaves; a large number when none can be read."""
    known = [b for b in (_meminfo_available(), _cgroup_left(), _address_space_left()) if b is not None]
    return min(known) if known else 1 << 50


def activation_bytes(build: nn.Module, shape: tuple[int, ...], condition=None) -> int:
    """Bytes of the outputs every leaf module produces in one forward pass of a batch of ``shape`` (float32) — what
    training keeps for backward — measured on the meta device, where nothing is allocated."""
    total = 0

    def hook(_module, _inputs, out):
        nonlocal total
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                total += o.numel() * 4

    handles = [m.register_forward_hook(hook) for m in build.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            x = torch.empty(shape, device="meta")
            t = torch.zeros(shape[0], dtype=torch.long, device="meta")
            build(x, t, condition)
    finally:
        for h in handles:
            h.remove()
    return total


def training_bytes(model_config, batch: int) -> tuple[int, int]:
    """(bytes a training step of ``batch`` needs, of which the batch-independent part) for the network the config
    describes: its training state plus the forward pass's activations (kept for backward), estimated on the meta
    device."""
    from ..nets.networks import build_network

    with torch.device("meta"):
        net = build_network(model_config)
    state = TRAIN_STATE * 4 * sum(p.numel() for p in net.parameters())
    per_item = activation_bytes(net, (1, *model_config.shape))
    return state + batch * per_item, state


def check_training_fits(model_config, batch: int, device: torch.device | str = "cpu") -> None:
    """ValueError "batch_size: …" or "image_size: …" (the field to change: one line with how much the run would
    take, what this machine has, and what would fit) when a training step of ``batch`` cannot fit in this machine's
    free memory. GPUs are left to their own allocator."""
    if torch.device(device).type != "cpu":
        return
    have = int(available_bytes() * HEADROOM)
    if batch * math.prod(model_config.shape) * 4 * ROUGH_ACTIVATIONS < have // 10:
        return  # far from the limit: no need to measure
    need, state = training_bytes(model_config, batch)
    if need <= have:
        return
    per_item = max(1, (need - state) // max(1, batch))
    fits = max(0, int((have - state) // (per_item * ACTIVATION_UPPER)))
    shape = "×".join(map(str, model_config.shape))
    what = "batch_size" if fits >= 1 else "image_size"
    if fits >= 1:
        advice = f"a batch of {fits} or less should fit"
    else:
        side = getattr(model_config, "image_size", 0)
        smaller = int(side * math.sqrt(max(have - state, 0) / (per_item * ACTIVATION_UPPER))) if side else 0
        advice = f"use a smaller size (about {smaller} px or less at batch 1)" if smaller >= 2 else \
            "this network does not fit at all"
    raise ValueError(f"{what}: training {shape} with batch {batch} needs at least {need / GIB:.1f} GiB, more than "
                     f"the {have / GIB:.1f} GiB this machine has free; {advice}")


def check_data_fits(n: int, channels: int, size: int, name: str) -> None:
    """ValueError "size: …" when n images of size² px would not fit (uint8, as datasets are kept)."""
    need = n * channels * size * size
    have = int(available_bytes() * HEADROOM)
    if need > have:
        most = int(math.sqrt(have / max(1, n * channels)))
        raise ValueError(f"size: {name} has {n:,} images; at {size}×{size} they need {need / GIB:.1f} GiB, more than "
                         f"the {have / GIB:.1f} GiB free; {most} px or less fits")
