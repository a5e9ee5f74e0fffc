"""Memory layout (NCHW/NHWC) and precision (fp32/bf16) for a CPU, chosen by timing them on the running machine.

Which is faster depends on the CPU's kernels, not on a rule: on an Intel Xeon with AMX, NHWC trained the tiny UNet
1.2× faster in fp32 and bf16 autocast 1.7× faster; on an AVX2-only AMD EPYC the same NHWC step ran 3.3× slower and
bf16 is emulated. So the first time a model shape meets a CPU, a few interleaved steps of each candidate are timed
(about a second for the small presets), and the fastest wins; the answer is kept in a small JSON cache keyed by the
CPU, torch version, thread count and model shape, so it is measured once per machine. GPUs are not calibrated here.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .device import PRECISIONS, autocast, cpu_supports_bf16

CACHE_VERSION = 1
CACHE_MAX_BYTES = 1 << 20       # a cache file larger than this is not ours: ignore it
BF16_MIN_GAIN = 1.10            # bf16 changes the arithmetic, so it must pay clearly to be chosen
NHWC_MIN_GAIN = 1.03            # a tie keeps the conventional NCHW layout
REPEATS = 3
MAX_BATCH = 32                  # timing a smaller batch is enough to rank the candidates

_lock = threading.Lock()
_memory: dict[str, "FastPath"] = {}
_bf16_answer: bool | None = None  # bf16_pays(), once measured
_sampling_answers: dict[str, "FastPath"] = {}  # for_sampling's first answer per workload, whatever the threads


@dataclass(frozen=True)
class FastPath:
    """The chosen layout and precision, with the seconds per step measured for each candidate (empty if cached)."""

    channels_last: bool
    precision: str
    seconds: dict[str, float]
    source: str = "measured"    # measured | cached | fixed (not a CPU, or nothing to choose)

    def describe(self) -> str:
        layout = "NHWC" if self.channels_last else "NCHW"
        return f"{layout}, {self.precision} ({self.source})"

    def explain(self) -> str:
        """One line for people: what runs, and why — 'bf16 (measured for this model at batch 16: fp32 12.3 ms,
        bf16 8.1 ms per step)', '… (measured on this machine before)', 'fp32 (fixed: not a CPU)'."""
        if self.source == "measured" and self.seconds:
            best: dict[str, float] = {}
            for label, s in self.seconds.items():  # "NCHW bf16": seconds → the best layout of each precision
                prec = label.split()[-1]
                best[prec] = min(best.get(prec, float("inf")), s)
            times = ", ".join(f"{p} {best[p]:.3g} s" if best[p] >= 1 else f"{p} {best[p] * 1e3:.3g} ms"
                              for p in sorted(best))
            return f"{self.precision} (measured for this model and batch: {times} per step)"
        if self.source == "cached":
            return f"{self.precision} (measured for this model and batch on this machine before)"
        if self.source == "fixed":
            return f"{self.precision} (nothing to measure: a GPU, or not a UNet)"
        return f"{self.precision} ({self.source})"


def cache_path() -> Path:
    """$DIFFUSION_STUDIO_CACHE, else $XDG_CACHE_HOME/diffusion-studio, else ~/.cache/diffusion-studio."""
    root = os.environ.get("DIFFUSION_STUDIO_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "diffusion-studio")
    return Path(root) / "calibration.json"


@lru_cache(maxsize=None)
def cpu_identity() -> str:
    """The CPU's model name and a hash of its flags (and any ISA caps set for oneDNN/ATen), as a cache key."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name.startswith("model:"):
                    name = "model:" + value.strip()
                elif key == "flags" and not flags:
                    flags = value.strip()
                if name.startswith("model:") and flags:
                    break
    except OSError:
        pass
    caps = "|".join(f"{k}={os.environ.get(k, '')}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"))
    digest = hashlib.sha256(f"{flags}|{caps}".encode()).hexdigest()[:12]
    return f"{name}|{digest}"


def _key(mode: str, model_config, batch: int, precisions: tuple[str, ...]) -> str:
    cfg = json.dumps(model_config.to_dict(), sort_keys=True)
    return "|".join([f"v{CACHE_VERSION}", cpu_identity(), f"torch {torch.__version__}",
                     f"threads {torch.get_num_threads()}", mode, f"batch {batch}", ",".join(precisions), cfg])


def _read_cache() -> dict:
    path = cache_path()
    try:
        if not path.is_file() or path.stat().st_size > CACHE_MAX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a damaged cache costs one more measurement, nothing else


def _write_cache(key: str, entry: dict) -> None:
    path = cache_path()
    try:
        data = _read_cache()
        data[key] = entry
        if len(data) > 200:  # keep the newest entries only
            data = dict(list(data.items())[-200:])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still trains, it just measures again next time


def _from_entry(entry) -> FastPath | None:
    try:
        cl, prec = entry["channels_last"], entry["precision"]
        if isinstance(cl, bool) and prec in ("fp32", "bf16"):
            return FastPath(cl, prec, {}, "cached")
    except (TypeError, KeyError):
        pass
    return None


def busy() -> bool:
    """True when the 1-minute load average exceeds the cores this process may use (other work competes)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        return os.getloadavg()[0] > cores
    except (AttributeError, OSError):
        return False


def _candidates(precisions: tuple[str, ...]) -> list[tuple[bool, str]]:
    return [(cl, p) for p in precisions for cl in (False, True)]


def _time_step(model, x, t, precision: str, train: bool) -> float:
    device = torch.device("cpu")
    t0 = time.perf_counter()
    if train:
        with autocast(device, precision):
            out = model(x, t)
        F.mse_loss(out.float(), x).backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad(), autocast(device, precision):
            model(x, t)
    return time.perf_counter() - t0


def measure(model, model_config, batch: int, precisions: tuple[str, ...], train: bool,
            timer: Callable | None = None) -> dict[tuple[bool, str], float]:
    """Seconds per step (forward, plus backward if ``train``) for each (channels_last, precision), best of REPEATS
    interleaved rounds, so a burst of load from another process hits every candidate alike."""
    timer = timer or _time_step
    n = max(1, min(batch, MAX_BATCH))
    g = torch.Generator().manual_seed(0)
    size, ch = model_config.image_size, model_config.in_channels
    x = torch.randn(n, ch, size, size, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    models = {False: model, True: copy.deepcopy(model).to(memory_format=torch.channels_last)}
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}
    best: dict[tuple[bool, str], float] = {}
    for c in _candidates(precisions):  # warm-up: first calls pick kernels and allocate
        timer(models[c[0]], inputs[c[0]], t, c[1], train)
    for _ in range(REPEATS):
        for c in _candidates(precisions):
            s = timer(models[c[0]], inputs[c[0]], t, c[1], train)
            best[c] = min(best.get(c, float("inf")), s)
    return best


def decide(seconds: dict[tuple[bool, str], float]) -> tuple[bool, str]:
    """The fastest candidate, but bf16 only when it beats fp32 by BF16_MIN_GAIN and NHWC only by NHWC_MIN_GAIN."""
    def best_layout(prec: str) -> tuple[bool, float]:
        nchw, nhwc = seconds.get((False, prec), float("inf")), seconds.get((True, prec), float("inf"))
        return (True, nhwc) if nhwc * NHWC_MIN_GAIN < nchw else (False, nchw)

    cl32, s32 = best_layout("fp32")
    if any(p == "bf16" for _, p in seconds):
        cl16, s16 = best_layout("bf16")
        if "fp32" not in {p for _, p in seconds} or s16 * BF16_MIN_GAIN < s32:
            return cl16, "bf16"
    return cl32, "fp32"


def choose(model_config, batch: int, precision: str = "auto", mode: str = "train",
           device: torch.device | str = "cpu", timer: Callable | None = None) -> FastPath:
    """The layout and precision to run ``model_config`` at ``batch`` on ``device``: measured on a CPU (cached).

    ``precision`` 'auto' lets bf16 compete where the CPU has native bf16 instructions (elsewhere it is emulated and
    never pays); an explicit 'fp32' or 'bf16' is kept and only the layout is chosen. ``mode``: 'train' times forward
    and backward, 'sample' the forward pass alone.
    """
    device = torch.device(device)
    from ..nets.unet import UNetConfig

    if device.type != "cpu" or not isinstance(model_config, UNetConfig):  # a GPU, or the 2-D MLP: nothing to choose
        return FastPath(False, "fp32" if precision == "auto" else precision, {}, "fixed")
    if precision == "auto":
        precisions = ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",)
    else:
        precisions = (precision,)
    key = _key(mode, model_config, min(batch, MAX_BATCH), precisions)
    with _lock:
        if key in _memory:
            return _memory[key]
        cached = _from_entry(_read_cache().get(key))
        if cached is not None:
            _memory[key] = cached
            return cached
        from ..nets.unet import UNet  # here, not at the top: a cached answer never needs the network's code

        # The measurement must leave no trace: not on the caller's random stream (dropout draws from it, so a run
        # that measured and one that read the cache would differ), and not as an error of its own — a CPU that
        # cannot even run a small batch gets the conventional layout, and the run itself reports what went wrong.
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = UNet(model_config).train(mode == "train")
                seconds = measure(model, model_config, batch, precisions, mode == "train", timer)
        except (RuntimeError, MemoryError) as e:
            fallback = FastPath(False, "fp32" if precision == "auto" else precision, {},
                                f"fixed: measuring failed ({type(e).__name__})")
            _memory[key] = fallback
            return fallback
        cl, prec = decide(seconds)
        labels = {f"{'NHWC' if c else 'NCHW'} {p}": round(s, 6) for (c, p), s in seconds.items()}
        result = FastPath(cl, prec, labels)
        _memory[key] = result
        # A measurement taken while other work fills the cores is kept for this process only: the next one measures
        # again rather than inherit a choice that the load may have made.
        if not busy():
            _write_cache(key, {"channels_last": cl, "precision": prec, "seconds": labels,
                               "when": time.strftime("%Y-%m-%d %H:%M:%S")})
        return result


def forget() -> None:
    """Drop the in-process answers (tests; after changing the thread count the key changes anyway)."""
    global _bf16_answer
    with _lock:
        _memory.clear()
        _sampling_answers.clear()
        _bf16_answer = None


def bf16_pays() -> bool:
    """Whether bf16 autocast is measurably faster than fp32 on this CPU, judged on the tiny preset's forward pass
    (what 'auto' precision means for sampling). False without native bf16 instructions, without measuring.

    The first answer holds for the rest of the process: the measurement's key includes the thread count, and a
    precision that flipped with it would make the same seed draw different pictures within one session."""
    global _bf16_answer
    if not cpu_supports_bf16():
        return False
    if _bf16_answer is None:
        from ..nets.unet import preset_config

        _bf16_answer = choose(preset_config("tiny", 16, 1), 16, "auto", "sample").precision == "bf16"
    return _bf16_answer


def for_sampling(model_config, batch: int, precision: str = "auto", device: torch.device | str = "cpu",
                 timer: Callable | None = None) -> FastPath:
    """The precision (and layout) to sample ``model_config`` with, ``batch`` images at a time, on ``device``.

    On a CPU, 'auto' is measured for this very workload — the model, its size and the batch (forward passes; cached
    per machine like training's choice, core/runtime/calibrate.choose) — not judged by a proxy model: on one AMX
    Xeon the tiny UNet's 16-px batch-16 pass tied in bf16 and fp32 while a 32-px batch-64 one trained 1.44× faster in
    bf16. On a GPU, 'auto' is bf16 where the GPU supports it. An explicit fp32/bf16 is kept."""
    device = torch.device(device)
    resolved = precision
    if precision != "auto" or device.type != "cpu":
        resolved = resolve_precision(precision, device)  # validates the name
        if device.type != "cpu":
            return FastPath(False, resolved, {}, "fixed")
    # The first answer for a workload holds for the process: the measurement's key includes the thread count, and a
    # precision that flipped with it would make the same seed draw different pictures within one session.
    key = json.dumps([model_config.to_dict() if hasattr(model_config, "to_dict") else repr(model_config),
                      min(batch, MAX_BATCH), resolved], sort_keys=True, default=str)
    with _lock:
        known = _sampling_answers.get(key)
    if known is None:
        known = choose(model_config, batch, resolved, "sample", device, timer)
        with _lock:
            known = _sampling_answers.setdefault(key, known)
    return known


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → bf16 autocast on CUDA GPUs that support it, and on CPUs with native bf16 instructions (AVX512-BF16 or
    AMX) where a short measurement shows it faster (bf16_pays below; 1.7× on an AMX Xeon, bench/RESULTS.md); fp32
    elsewhere — the safe default, since bf16 emulated in software is slower. 'bf16' must be usable."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        if device.type == "cpu" and cpu_supports_bf16():
            return "bf16" if bf16_pays() else "fp32"
        return "fp32"
    if precision == "bf16" and device.type == "mps":
        raise ValueError("precision: bf16 autocast is not offered on MPS; use fp32")
    return precision
