"""Device and precision resolution."""
from __future__ import annotations

import contextlib

import pytest
import torch

from diffusion_studio.core.runtime import device as device_mod
from diffusion_studio.core.runtime.device import autocast, describe_device, resolve_device
from diffusion_studio.core.runtime.calibrate import resolve_precision

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def test_auto_picks_the_best_available():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    for name in ("auto", None):
        assert resolve_device(name).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_clear_value_error(name):
    with pytest.raises(ValueError) as e:
        resolve_device(name)
    msg = str(e.value)
    assert msg.startswith("device:") and "CUDA" in msg and "\n" not in msg


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_index_out_of_range():
    with pytest.raises(ValueError, match="device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(HAS_MPS, reason="this machine has Apple MPS")
def test_mps_without_metal():
    with pytest.raises(ValueError, match="MPS"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["gpu", "tpu", "", "cuda:x", "meta"])
def test_unknown_device_names(name):
    with pytest.raises(ValueError, match="device"):
        resolve_device(name)


def test_precision_rules(monkeypatch):
    cpu = torch.device("cpu")
    # auto: bf16 only on a CPU that computes in bf16 natively (AVX512-BF16 / AMX) and was measured faster in it
    # (test_core_calibrate.py checks the measured half), fp32 on any other
    from diffusion_studio.core.runtime import calibrate

    monkeypatch.setattr(calibrate, "bf16_pays", lambda: True)
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"  # never on MPS, whatever the CPU
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # an explicit opt-in is honoured
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("bf16", torch.device("mps"))
    assert resolve_precision("fp32", torch.device("mps")) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    for bad in ("fp16", "float32", "", "BF16"):
        with pytest.raises(ValueError, match="precision"):
            resolve_precision(bad, cpu)
    if HAS_CUDA:
        expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        assert resolve_precision("auto", torch.device("cuda")) == expected


def test_autocast_contexts():
    cpu = torch.device("cpu")
    assert isinstance(autocast(cpu, "fp32"), contextlib.nullcontext)
    a = torch.randn(4, 4)
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32


def test_describe_device():
    assert describe_device("cpu").startswith("CPU (")


def test_an_isa_cap_below_bf16_means_no_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (how a CPU without AVX-512/bf16 is emulated) takes the bf16 path away."""
    try:
        for cap, allowed in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", None), ("ALL", None)):
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
            device_mod.cpu_supports_bf16.cache_clear()
            if allowed is False:
                assert device_mod.cpu_supports_bf16() is False, cap
                assert resolve_precision("auto", torch.device("cpu")) == "fp32"
            else:  # no cap below bf16: the CPU's own flags decide
                monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
                device_mod.cpu_supports_bf16.cache_clear()
                own = device_mod.cpu_supports_bf16()
                monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
                device_mod.cpu_supports_bf16.cache_clear()
                assert device_mod.cpu_supports_bf16() == own, cap
    finally:
        device_mod.cpu_supports_bf16.cache_clear()
