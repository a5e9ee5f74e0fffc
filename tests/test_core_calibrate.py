"""The CPU fast path is chosen by measuring the running CPU (core/calibrate.py), cached, and never by a CPU rule."""
from __future__ import annotations

import json

import pytest
import torch

from diffusion_studio.core.runtime import calibrate
from diffusion_studio.core.nets.unet import UNetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = UNetConfig(image_size=8, in_channels=3, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,), groups=8, num_heads=2)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_STUDIO_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate, "busy", lambda: False)  # the machine running the tests may well be busy
    calibrate.forget()
    yield tmp_path
    calibrate.forget()


def fake_timer(costs: dict, calls: list):
    """A timer that reports the given seconds per (layout, precision) and records what was timed."""
    def timer(model, x, t, precision, train):
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        # the model timed must be in the same layout as its input, or the measurement means nothing
        w = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
        assert w.is_contiguous(memory_format=torch.channels_last) == nhwc
        calls.append((nhwc, precision, train))
        return costs[(nhwc, precision)]
    return timer


@pytest.mark.parametrize("costs, expected", [
    # an AVX2-only EPYC: NHWC 3.3x slower, no bf16 → NCHW fp32
    ({(False, "fp32"): 1.0, (True, "fp32"): 3.3}, (False, "fp32")),
    # an AMX Xeon: NHWC 1.2x faster in fp32, bf16 1.7x faster but not in NHWC → NCHW bf16
    ({(False, "fp32"): 1.2, (True, "fp32"): 1.0, (False, "bf16"): 0.6, (True, "bf16"): 0.7}, (False, "bf16")),
    # bf16 available but only 5 % faster: not worth changing the arithmetic → fp32
    ({(False, "fp32"): 1.0, (True, "fp32"): 1.5, (False, "bf16"): 0.95, (True, "bf16"): 2.0}, (False, "fp32")),
    # a tie within 3 % keeps the conventional NCHW
    ({(False, "fp32"): 1.0, (True, "fp32"): 0.99}, (False, "fp32")),
])
def test_decide_picks_the_measured_winner(costs, expected):
    assert calibrate.decide(costs) == expected


def test_choose_measures_once_then_reads_the_cache(fresh, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: True)
    calls: list = []
    costs = {(False, "fp32"): 1.0, (True, "fp32"): 0.5, (False, "bf16"): 0.9, (True, "bf16"): 0.8}
    monkeypatch.setattr(calibrate, "_time_step", fake_timer(costs, calls))
    fp = calibrate.choose(MICRO, 64, "auto", "train")
    assert (fp.channels_last, fp.precision, fp.source) == (True, "fp32", "measured")
    assert {(c[0], c[1]) for c in calls} == set(costs) and all(c[2] for c in calls)
    assert len(calls) == 4 * (1 + calibrate.REPEATS)  # one warm-up and REPEATS interleaved rounds each
    # the same question again in this process, and in a new process (the cache file), measures nothing
    n = len(calls)
    assert calibrate.choose(MICRO, 64, "auto", "train") == fp
    calibrate.forget()
    again = calibrate.choose(MICRO, 64, "auto", "train")
    assert (again.channels_last, again.precision, again.source) == (True, "fp32", "cached") and len(calls) == n
    # another mode, precision or model shape is another question
    calibrate.choose(MICRO, 64, "fp32", "sample")
    assert len(calls) == n + 2 * (1 + calibrate.REPEATS) and not any(c[2] for c in calls[n:])


def test_without_native_bf16_only_fp32_is_timed(fresh, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    calls: list = []
    monkeypatch.setattr(calibrate, "_time_step", fake_timer({(False, "fp32"): 1.0, (True, "fp32"): 2.0}, calls))
    fp = calibrate.choose(MICRO, 8, "auto", "sample")
    assert (fp.channels_last, fp.precision) == (False, "fp32")
    assert {c[1] for c in calls} == {"fp32"}


def test_a_damaged_cache_is_ignored_and_replaced(fresh, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    calibrate.cache_path().write_text("{not json")
    calls: list = []
    monkeypatch.setattr(calibrate, "_time_step", fake_timer({(False, "fp32"): 2.0, (True, "fp32"): 1.0}, calls))
    assert calibrate.choose(MICRO, 8, "fp32", "train").channels_last is True
    data = json.loads(calibrate.cache_path().read_text())
    (entry,) = data.values()
    assert entry["channels_last"] is True and entry["precision"] == "fp32"
    # an entry with nonsense in it is measured again rather than believed
    key = next(iter(data))
    calibrate.cache_path().write_text(json.dumps({key: {"channels_last": "yes", "precision": "fp8"}}))
    calibrate.forget()
    n = len(calls)
    assert calibrate.choose(MICRO, 8, "fp32", "train").source == "measured" and len(calls) > n


def test_real_measurement_times_every_candidate(fresh, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    fp = calibrate.choose(MICRO, 4, "auto", "train")
    assert set(fp.seconds) == {"NCHW fp32", "NHWC fp32"} and all(s > 0 for s in fp.seconds.values())
    assert fp.precision == "fp32" and isinstance(fp.channels_last, bool)


def test_auto_precision_needs_both_native_bf16_and_a_measured_gain(monkeypatch):
    from diffusion_studio.core.runtime.calibrate import resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(calibrate, "bf16_pays", lambda: pytest.fail("no bf16 instructions: nothing to measure"))
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(calibrate, "bf16_pays", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(calibrate, "bf16_pays", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"


def test_gpu_is_not_calibrated(monkeypatch):
    monkeypatch.setattr(calibrate, "_time_step", lambda *a: pytest.fail("a GPU is not timed here"))
    fp = calibrate.choose(MICRO, 8, "auto", "train", device="cuda")
    assert fp.source == "fixed" and fp.channels_last is False


def test_measuring_leaves_the_random_stream_alone_and_never_fails_the_run(fresh, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    dropout = UNetConfig(**{**MICRO.to_dict(), "dropout": 0.3, "channel_mults": (1, 2), "attn_resolutions": (4,)})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    calibrate.choose(dropout, 4, "auto", "train")  # trains a dropout model for a few steps
    assert torch.equal(torch.get_rng_state(), before)

    def oom(*a):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    calibrate.forget()
    monkeypatch.setattr(calibrate, "_time_step", oom)
    fp = calibrate.choose(MICRO, 4, "fp32", "sample")
    assert (fp.channels_last, fp.precision) == (False, "fp32") and "failed" in fp.source


def test_a_measurement_under_load_is_not_written_to_the_cache(fresh, monkeypatch):
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(calibrate, "busy", lambda: True)
    calls: list = []
    monkeypatch.setattr(calibrate, "_time_step", fake_timer({(False, "fp32"): 1.0, (True, "fp32"): 2.0}, calls))
    assert calibrate.choose(MICRO, 8, "fp32", "train").source == "measured"
    assert not calibrate.cache_path().exists()
    n = len(calls)
    calibrate.choose(MICRO, 8, "fp32", "train")
    assert len(calls) == n  # kept for this process
    calibrate.forget()
    calibrate.choose(MICRO, 8, "fp32", "train")
    assert len(calls) > n  # the next process measures again


def test_auto_precision_for_sampling_holds_for_the_process_whatever_the_thread_count(monkeypatch):
    """The measurement is keyed by thread count; bf16_pays keeps its first answer, so 'auto' cannot flip between
    bf16 and fp32 within a session when the threads change (the same seed must draw the same pictures)."""
    answers = iter(["bf16", "fp32", "fp32"])
    calls = []

    def fake_choose(*args, **kwargs):
        calls.append(torch.get_num_threads())
        return calibrate.FastPath(False, next(answers), {})

    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(calibrate, "choose", fake_choose)
    calibrate.forget()
    n = torch.get_num_threads()
    try:
        assert calibrate.bf16_pays() is True
        torch.set_num_threads(1 if n != 1 else 2)
        assert calibrate.bf16_pays() is True and len(calls) == 1  # not measured again, not flipped
        calibrate.forget()  # dropping the in-process answers measures afresh
        assert calibrate.bf16_pays() is False and len(calls) == 2
    finally:
        torch.set_num_threads(n)
        calibrate.forget()


def test_sampling_precision_is_measured_per_model_and_batch(fresh, monkeypatch):
    """'auto' for sampling times the very model and batch to be sampled (issue 25), not a proxy: a model where bf16
    pays gets bf16 and one where it does not keeps fp32, each said with the seconds measured."""
    monkeypatch.setattr(calibrate, "cpu_supports_bf16", lambda: True)
    small = MICRO
    big = UNetConfig(**{**MICRO.to_dict(), "image_size": 16, "channel_mults": (1, 2), "attn_resolutions": (4,)})
    costs = {8: {(False, "fp32"): 0.010, (True, "fp32"): 0.015, (False, "bf16"): 0.010, (True, "bf16"): 0.016},
             16: {(False, "fp32"): 2.0, (True, "fp32"): 2.5, (False, "bf16"): 1.2, (True, "bf16"): 1.9}}
    calls: list = []

    def timer(model, x, t, precision, train):
        calls.append((x.shape[-1], x.shape[0], precision, train))
        return fake_timer(costs[x.shape[-1]], [])(model, x, t, precision, train)

    a = calibrate.for_sampling(small, 16, "auto", "cpu", timer)
    b = calibrate.for_sampling(big, 16, "auto", "cpu", timer)
    assert (a.precision, b.precision) == ("fp32", "bf16") and not any(c[3] for c in calls)  # forward passes only
    assert {c[0] for c in calls} == {8, 16} and {c[1] for c in calls} == {16}
    assert a.explain() == "fp32 (measured for this model and batch: bf16 10 ms, fp32 10 ms per step)"
    assert b.explain() == "bf16 (measured for this model and batch: bf16 1.2 s, fp32 2 s per step)"
    n = len(calls)
    calibrate.for_sampling(big, 4, "auto", "cpu", timer)  # another batch is another workload
    assert len(calls) > n and {c[1] for c in calls[n:]} == {4}
    # asked again in this process: the same answer, not measured again, even with another thread count
    n, threads = len(calls), torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)
        assert calibrate.for_sampling(big, 16, "auto", "cpu", timer) == b and len(calls) == n
    finally:
        torch.set_num_threads(threads)
    # an explicit precision is kept (only the layout is measured); a GPU is not measured here
    assert calibrate.for_sampling(big, 16, "fp32", "cpu", timer).precision == "fp32"
    gpu = calibrate.for_sampling(big, 16, "fp32", "cuda", lambda *a: pytest.fail("a GPU is not timed here"))
    assert gpu.source == "fixed" and "nothing to measure" in gpu.explain()
    with pytest.raises(ValueError, match="precision"):
        calibrate.for_sampling(big, 16, "fp16", "cpu", timer)
