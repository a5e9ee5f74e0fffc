"""Facts about the machine: the compute device (CUDA, then Apple MPS, then CPU), whether the CPU has native bf16,
and the autocast context. What to choose from these facts is core/runtime/calibrate.py's job."""
from __future__ import annotations

import contextlib
import os
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' → CUDA if present, then MPS, then CPU; an explicit device that is not available raises ValueError."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: {name!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was asked for but no CUDA GPU is available (use auto or cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device: {name} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device: MPS was asked for but Apple's Metal backend is not available (use auto or cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: {name!r} is not supported (use auto, cpu, cuda or mps)")
    return dev


def describe_device(device: torch.device | str) -> str:
    """A short human description: 'CUDA: NVIDIA H200', 'Apple MPS' or 'CPU (2 threads)'."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "Apple MPS"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n != 1 else ''})"


@lru_cache(maxsize=None)
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 instructions (AVX512-BF16 or AMX) that oneDNN may use: a cap such as
    ONEDNN_MAX_CPU_ISA=AVX2 (how a CPU without them is emulated, e.g. bench/time_to_quality.py --emulate-avx2)
    takes them away."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap != "ALL" and not any(s in cap for s in ("BF16", "AMX", "AVX10")):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def autocast(device: torch.device, precision: str):
    """A context that runs the forward pass in bf16 where asked for, and does nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
