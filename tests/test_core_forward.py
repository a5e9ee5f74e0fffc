"""The forward process: closed form vs formula, chain vs closed form (Monte Carlo), ChainCache and ForwardScrubber."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion.forward import (
    ChainCache, ForwardScrubber, forward_chain, q_mean_variance, q_sample, q_sample_chain, q_step,
)
from diffusion_studio.core.diffusion.schedule import NoiseSchedule


def np_alpha_bars(T: int) -> np.ndarray:
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))


@pytest.fixture(scope="module")
def sched() -> NoiseSchedule:
    return NoiseSchedule.create("linear", 1000)


@pytest.mark.parametrize("t", [0, 1, 99, 500, 999])
def test_q_sample_closed_form(sched, t):
    g = torch.Generator().manual_seed(t)
    x0 = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    ab = np_alpha_bars(1000)[t]
    ref = np.sqrt(ab) * x0.numpy() + np.sqrt(1 - ab) * eps.numpy()
    np.testing.assert_allclose(q_sample(sched, x0, t, noise=eps).numpy(), ref, rtol=1e-12, atol=1e-14)
    # float32 in, float32 out, same numbers to float32 precision
    out32 = q_sample(sched, x0.float(), t, noise=eps.float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_q_sample_batched_long_t(sched):
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 10, 500, 999], dtype=torch.long)
    x0 = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    ab = np_alpha_bars(1000)[t.numpy()][:, None, None, None]
    ref = np.sqrt(ab) * x0.numpy() + np.sqrt(1 - ab) * eps.numpy()
    np.testing.assert_allclose(q_sample(sched, x0, t, noise=eps).numpy(), ref, rtol=1e-12)
    # each row equals the per-row int-t call
    for i in range(4):
        assert torch.allclose(q_sample(sched, x0[i:i + 1], int(t[i]), noise=eps[i:i + 1]),
                              q_sample(sched, x0, t, noise=eps)[i:i + 1], rtol=0, atol=1e-15)


def test_q_sample_draws_from_generator_reproducibly(sched):
    x0 = torch.zeros(2, 1, 4, 4)
    a = q_sample(sched, x0, 999, generator=torch.Generator().manual_seed(5))
    b = q_sample(sched, x0, 999, generator=torch.Generator().manual_seed(5))
    c = q_sample(sched, x0, 999, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_q_mean_variance(sched):
    x0 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 1, 2, 2)
    t = torch.tensor([3, 300, 998])
    mean, var = q_mean_variance(sched, x0, t)
    ab = np_alpha_bars(1000)[t.numpy()][:, None, None, None]
    np.testing.assert_allclose(mean.numpy(), np.sqrt(ab) * x0.numpy(), rtol=1e-12)
    assert var.shape == x0.shape
    np.testing.assert_allclose(var.numpy(), np.broadcast_to(1 - ab, x0.shape), rtol=1e-12)
    m1, v1 = q_mean_variance(sched, x0, 42)
    np.testing.assert_allclose(v1.numpy(), np.full(x0.shape, 1 - np_alpha_bars(1000)[42]), rtol=1e-12)


def test_forward_chain_follows_the_recursion_in_numpy():
    # Same noise draws (replayed from the same seed), recursion x_t = √α_t x_{t−1} + √β_t z written in float64 numpy.
    T = 30
    s = NoiseSchedule.create("linear", T, beta_end=0.2)
    x0 = torch.linspace(-1, 1, 8).reshape(1, 2, 2, 2)
    got = [x.clone() for _, x in forward_chain(s, x0, torch.Generator().manual_seed(3))]
    g = torch.Generator().manual_seed(3)
    b = np.linspace(1e-4, 0.2, T)
    x = x0.double().numpy()
    for t in range(T):
        z = torch.randn(x0.shape, generator=g).double().numpy()
        x = np.sqrt(1 - b[t]) * x + np.sqrt(b[t]) * z
        np.testing.assert_allclose(got[t].double().numpy(), x, rtol=1e-5, atol=1e-5)
    assert len(got) == T
    # q_sample_chain stops at t, forward_chain's t_end too
    xs = q_sample_chain(s, x0, 7, torch.Generator().manual_seed(3))
    assert torch.equal(xs, got[7])
    assert [t for t, _ in forward_chain(s, x0, t_end=4)] == [0, 1, 2, 3, 4]


def test_forward_chain_yields_fresh_tensors():
    s = NoiseSchedule.create("linear", 10)
    x0 = torch.zeros(1, 1, 2, 2)
    items = list(forward_chain(s, x0, torch.Generator().manual_seed(0)))
    ptrs = {x.data_ptr() for _, x in items}
    assert len(ptrs) == len(items)
    assert torch.equal(x0, torch.zeros(1, 1, 2, 2))


def test_chain_and_closed_form_give_the_same_distribution():
    """Monte Carlo: x_t from T chain steps and from q_sample both have mean √ᾱ_t x_0 and variance 1 − ᾱ_t."""
    T = 200
    s = NoiseSchedule.create("linear", T)
    ab = np_alpha_bars(T)
    N = 30_000
    x0 = torch.linspace(-1, 1, N, dtype=torch.float64)  # many pixels with different clean values
    x0_np = x0.numpy()
    var_x0 = x0_np.var()
    check = {0, 10, 100, T - 1}
    chain = {t: x.numpy().copy() for t, x in forward_chain(s, x0, torch.Generator().manual_seed(11)) if t in check}
    g = torch.Generator().manual_seed(12)
    for t in sorted(check):
        closed = q_sample(s, x0, t, generator=g).numpy()
        for name, xt in (("chain", chain[t]), ("closed", closed)):
            # slope of x_t on x_0 is √ᾱ_t; the residual is N(0, 1 − ᾱ_t) whatever x_0 is
            slope = np.cov(xt, x0_np, bias=True)[0, 1] / var_x0
            resid = xt - np.sqrt(ab[t]) * x0_np
            v = 1 - ab[t]
            se_slope = np.sqrt(v / (N * var_x0))
            assert abs(slope - np.sqrt(ab[t])) < 5 * se_slope, (name, t, slope, np.sqrt(ab[t]))
            assert abs(resid.mean()) < 5 * np.sqrt(v / N), (name, t, resid.mean())
            assert abs(resid.var() / v - 1) < 5 * np.sqrt(2 / N), (name, t, resid.var(), v)
            # and the two halves of the data (x_0 < 0, x_0 > 0) carry the same residual variance
            lo, hi = resid[x0_np < 0], resid[x0_np > 0]
            assert abs(lo.var() / hi.var() - 1) < 5 * np.sqrt(4 / N), (name, t)


# ---- ChainCache ----------------------------------------------------------------------------------------------------
def _straight(s: NoiseSchedule, x0: torch.Tensor, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out, x = [], x0
    for t in range(s.T):
        x = q_step(s, x, t, generator=g)
        out.append(x.clone())
    return out


def test_chain_cache_revisits_identically_in_any_order():
    s = NoiseSchedule.create("linear", 60, beta_end=0.1)
    x0 = torch.rand(3, 4, 4) * 2 - 1
    ref = _straight(s, x0, seed=9)
    cache = ChainCache(s, x0, seed=9, every=7)
    order = [30, 5, 59, 0, 30, 14, 7, 13, 58, 21, 6, 59, 1, 42, 42]
    for t in order:
        assert torch.equal(cache.get(t), ref[t]), t
    # a second cache visited in another order agrees too
    cache2 = ChainCache(s, x0, seed=9, every=1)
    for t in reversed(range(60)):
        assert torch.equal(cache2.get(t), ref[t]), t
    # and another seed gives another chain
    assert not torch.equal(ChainCache(s, x0, seed=10, every=7).get(30), ref[30])


def test_chain_cache_hands_out_copies():
    """A caller that edits the returned x_t in place (clamping for display, say) must not corrupt the cache."""
    s = NoiseSchedule.create("linear", 40, beta_end=0.1)
    x0 = torch.rand(1, 4, 4)
    ref = _straight(s, x0, seed=2)
    cache = ChainCache(s, x0, seed=2, every=5)
    for t in (10, 12, 0, 39):  # 10 and 0 are snapshot indices, 12 and 39 are not
        x = cache.get(t)
        x.fill_(float("nan"))
    for t in (10, 12, 0, 15, 39, 11):
        assert torch.equal(cache.get(t), ref[t]), t


def test_chain_cache_rejects_out_of_range():
    s = NoiseSchedule.create("linear", 10)
    cache = ChainCache(s, torch.zeros(1, 2, 2))
    for t in (-1, 10):
        with pytest.raises(ValueError):
            cache.get(t)


# ---- ForwardScrubber -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_scrubber_frame_matches_numpy(sched, t):
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 6, 5, generator=g) * 2 - 1
    x0[0, 0, 0], x0[1, 0, 0] = 1.0, -1.0
    eps = torch.randn(3, 6, 5, generator=g) * 2
    sc = ForwardScrubber(sched, x0, noise=eps)
    ab = np_alpha_bars(1000)[t]
    xt = np.sqrt(ab) * x0.double().numpy() + np.sqrt(1 - ab) * eps.double().numpy()
    ref = np.clip(np.round(127.5 * xt + 127.5), 0, 255).transpose(1, 2, 0)
    u8 = sc.frame_u8(t)
    assert u8.dtype == torch.uint8 and u8.shape == (6, 5, 3)
    assert np.abs(u8.numpy().astype(int) - ref.astype(int)).max() <= 1
    assert (u8.numpy().astype(int) != ref.astype(int)).mean() < 0.05  # ±1 only at the odd rounding tie
    # x_t in model units equals q_sample with the same noise
    np.testing.assert_allclose(sc.x_t(t).numpy(), q_sample(sched, x0[None], t, noise=eps[None])[0].numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sc.x_t(t).double().numpy(), xt, rtol=1e-5, atol=1e-5)


def test_scrubber_frame_clamps_and_uses_an_out_buffer(sched):
    x0 = torch.ones(1, 2, 2)
    x0[0, 0, 0] = -1
    sc = ForwardScrubber(sched, x0, noise=torch.full((1, 2, 2), 50.0))
    assert sc.frame_u8(999).numpy().min() == 255  # far out of range: clamped, not wrapped
    sc2 = ForwardScrubber(sched, x0, noise=torch.zeros(1, 2, 2))
    out = torch.empty(2, 2, 1, dtype=torch.uint8)
    r = sc2.frame_u8(0, out=out)
    assert r is out
    # t index 0: √ᾱ_1 = √0.9999, so 1 → 127.5·0.99995 + 127.5 = 254.99 → 255 and −1 → 0
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 255


def test_scrubber_noise_is_seeded_and_noise_u8(sched):
    x0 = torch.zeros(1, 3, 3)
    a, b = ForwardScrubber(sched, x0, seed=1), ForwardScrubber(sched, x0, seed=1)
    assert torch.equal(a.noise, b.noise) and not torch.equal(a.noise, ForwardScrubber(sched, x0, seed=2).noise)
    eps = torch.tensor([[[-3.0, 0.0, 3.0], [-10.0, 10.0, 1.5], [0.0, 0.0, 0.0]]])
    u = ForwardScrubber(sched, x0, noise=eps).noise_u8()
    ref = np.clip(np.round((eps.numpy() / 3.0) * 127.5 + 127.5), 0, 255).transpose(1, 2, 0)
    assert np.abs(u.numpy().astype(int) - ref.astype(int)).max() <= 1
    assert u[0, 0, 0] == 0 and u[0, 2, 0] == 255


def test_scrubber_rejects_batched_input(sched):
    with pytest.raises(ValueError):
        ForwardScrubber(sched, torch.zeros(1, 1, 4, 4))
