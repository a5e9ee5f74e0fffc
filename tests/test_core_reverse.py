"""Reverse steps against numpy float64 re-implementations of the posterior, Algorithm 2 line 4 and DDIM's update."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion.forward import q_sample
from diffusion_studio.core.diffusion.reverse import (
    ddim_step, ddpm_step, posterior_mean_from_eps, predict_eps_from_x0, predict_x0_from_eps, q_posterior,
)
from diffusion_studio.core.diffusion.schedule import NoiseSchedule

T = 100
B_NP = np.linspace(1e-4, 0.02, T)
A_NP = 1 - B_NP
AB_NP = np.cumprod(A_NP)
ABP_NP = np.concatenate([[1.0], AB_NP[:-1]])
BT_NP = B_NP * (1 - ABP_NP) / (1 - AB_NP)


@pytest.fixture(scope="module")
def sched() -> NoiseSchedule:
    return NoiseSchedule.create("linear", T)


def _post_mean_np(x0, x_t, t):
    """μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t (t may be an index array)."""
    c1 = np.sqrt(ABP_NP[t]) * B_NP[t] / (1 - AB_NP[t])
    c2 = np.sqrt(A_NP[t]) * (1 - ABP_NP[t]) / (1 - AB_NP[t])
    return c1 * x0 + c2 * x_t


def _rand(seed: int, shape=(3, 2, 4, 4)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("t", [0, 1, 37, T - 1])
def test_posterior_mean_two_forms_agree_with_numpy(sched, t):
    x_t, eps, _, _ = _rand(t)
    x, e = x_t.numpy(), eps.numpy()
    # form 1 (via ε): (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε)
    via_eps = (x - B_NP[t] / np.sqrt(1 - AB_NP[t]) * e) / np.sqrt(A_NP[t])
    # form 2 (via x̂_0): μ̃_t(x̂_0, x_t) with x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t
    x0_hat = (x - np.sqrt(1 - AB_NP[t]) * e) / np.sqrt(AB_NP[t])
    via_x0 = _post_mean_np(x0_hat, x, t)
    np.testing.assert_allclose(via_eps, via_x0, rtol=1e-10, atol=1e-10)  # the identity itself
    got_eps = posterior_mean_from_eps(sched, x_t, t, eps).numpy()
    got_x0 = predict_x0_from_eps(sched, x_t, t, eps)
    np.testing.assert_allclose(got_x0.numpy(), x0_hat, rtol=1e-10, atol=1e-10)
    mean, var = q_posterior(sched, got_x0, x_t, t)
    np.testing.assert_allclose(got_eps, via_eps, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mean.numpy(), via_x0, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(float(var), BT_NP[t], rtol=1e-12)


def test_posterior_at_first_step_is_x0(sched):
    x_t, eps, x0, _ = _rand(5)
    mean, var = q_posterior(sched, x0, x_t, 0)
    assert torch.allclose(mean, x0, atol=1e-12) and float(var) == 0.0


def test_q_posterior_batched_t(sched):
    x_t, _, x0, _ = _rand(6)
    t = torch.tensor([0, 50, 99])
    mean, var = q_posterior(sched, x0, x_t, t)
    tn = t.numpy()[:, None, None, None]
    ref = _post_mean_np(x0.numpy(), x_t.numpy(), tn)
    np.testing.assert_allclose(mean.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var.flatten().numpy(), BT_NP[t.numpy()], rtol=1e-12)


@pytest.mark.parametrize("t", [0, 20, T - 1])
def test_predict_x0_and_eps_invert_each_other_and_q_sample(sched, t):
    _, eps, x0, _ = _rand(t + 100)
    x_t = q_sample(sched, x0, t, noise=eps)
    assert torch.allclose(predict_x0_from_eps(sched, x_t, t, eps), x0, rtol=1e-9, atol=1e-9)
    assert torch.allclose(predict_eps_from_x0(sched, x_t, t, x0), eps, rtol=1e-9, atol=1e-9)
    e2 = torch.randn_like(eps)
    assert torch.allclose(predict_eps_from_x0(sched, x_t, t, predict_x0_from_eps(sched, x_t, t, e2)), e2, atol=1e-8)
    tb = torch.tensor([t, 0, T - 1])
    x_tb = q_sample(sched, x0, tb, noise=eps)
    assert torch.allclose(predict_x0_from_eps(sched, x_tb, tb, eps), x0, atol=1e-9)
    assert torch.allclose(predict_eps_from_x0(sched, x_tb, tb, x0), eps, atol=1e-8)


def _alg2_np(x, e, z, t, sigma2):
    """Algorithm 2, line 4: x_{t−1} = (1/√α_t)(x_t − (1−α_t)/√(1−ᾱ_t) ε_θ) + σ_t z."""
    return (x - (1 - A_NP[t]) / np.sqrt(1 - AB_NP[t]) * e) / np.sqrt(A_NP[t]) + np.sqrt(sigma2) * z


@pytest.mark.parametrize("t", [1, 2, 50, T - 1])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_step_matches_algorithm_2(sched, t, variance):
    x_t, eps, z, _ = _rand(t)
    s2 = BT_NP[t] if variance == "beta_tilde" else B_NP[t]
    res = ddpm_step(sched, x_t, t, eps, noise=z, variance=variance)
    x, e = x_t.numpy(), eps.numpy()
    np.testing.assert_allclose(res.x_prev.numpy(), _alg2_np(x, e, z.numpy(), t, s2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(res.variance), s2, rtol=1e-12)
    np.testing.assert_allclose(res.mean.numpy(), _alg2_np(x, e, 0.0, t, 0.0), rtol=1e-10, atol=1e-12)
    assert torch.allclose(res.x0_pred, predict_x0_from_eps(sched, x_t, t, eps))
    # deterministic given the noise: the same call again is bit-identical
    assert torch.equal(ddpm_step(sched, x_t, t, eps, noise=z, variance=variance).x_prev, res.x_prev)
    # and with a generator, the same seed gives the same draw
    r1 = ddpm_step(sched, x_t, t, eps, variance=variance, generator=torch.Generator().manual_seed(3))
    r2 = ddpm_step(sched, x_t, t, eps, variance=variance, generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1.x_prev, r2.x_prev) and not torch.equal(r1.x_prev, r1.mean)


def test_ddpm_step_variances_differ_as_they_should(sched):
    x_t, eps, z, _ = _rand(1)
    a = ddpm_step(sched, x_t, 10, eps, noise=z, variance="beta_tilde")
    b = ddpm_step(sched, x_t, 10, eps, noise=z, variance="beta")
    assert torch.equal(a.mean, b.mean)
    assert float(a.variance) < float(b.variance)  # β̃_t < β_t for t > 1
    np.testing.assert_allclose((b.x_prev - b.mean).numpy(), np.sqrt(B_NP[10]) * z.numpy(), rtol=1e-10)
    np.testing.assert_allclose((a.x_prev - a.mean).numpy(), np.sqrt(BT_NP[10]) * z.numpy(), rtol=1e-10)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_step_adds_no_noise_at_the_last_step(sched, variance):
    x_t, eps, _, _ = _rand(2)
    huge = torch.full_like(x_t, 1e6)
    res = ddpm_step(sched, x_t, 0, eps, noise=huge, variance=variance)
    assert torch.equal(res.x_prev, res.mean)
    assert float(res.variance.abs().max()) == 0.0
    np.testing.assert_allclose(res.x_prev.numpy(), _alg2_np(x_t.numpy(), eps.numpy(), 0, 0, 0), rtol=1e-10)
    # at t index 0 the mean is x̂_0 itself (ᾱ_0 = 1)
    assert torch.allclose(res.x_prev, res.x0_pred, atol=1e-10)


def test_ddpm_step_batched_t_masks_noise_only_where_t_is_zero(sched):
    x_t, eps, z, _ = _rand(3)
    t = torch.tensor([0, 7, 0])
    res = ddpm_step(sched, x_t, t, eps, noise=z, variance="beta")
    for i, ti in enumerate(t.tolist()):
        s2 = 0.0 if ti == 0 else B_NP[ti]
        ref = _alg2_np(x_t[i].numpy(), eps[i].numpy(), z[i].numpy(), ti, s2)
        np.testing.assert_allclose(res.x_prev[i].numpy(), ref, rtol=1e-10, atol=1e-12)
        assert float(res.variance[i]) == pytest.approx(s2, rel=1e-12)


def test_ddpm_step_clip_x0_uses_the_clamped_posterior(sched):
    x_t, eps, z, _ = _rand(4)
    x_t = x_t * 3
    t = 30
    res = ddpm_step(sched, x_t, t, eps, noise=z, clip_x0=True)
    x0c = np.clip((x_t.numpy() - np.sqrt(1 - AB_NP[t]) * eps.numpy()) / np.sqrt(AB_NP[t]), -1, 1)
    assert (np.abs(x0c) == 1).any()  # the clamp matters for this input
    mean = _post_mean_np(x0c, x_t.numpy(), t)
    np.testing.assert_allclose(res.x0_pred.numpy(), x0c, rtol=1e-12)
    np.testing.assert_allclose(res.x_prev.numpy(), mean + np.sqrt(BT_NP[t]) * z.numpy(), rtol=1e-10, atol=1e-12)


def test_ddpm_step_rejects_unknown_variance(sched):
    x_t, eps, _, _ = _rand(0)
    with pytest.raises(ValueError, match="variance"):
        ddpm_step(sched, x_t, 3, eps, variance="learned")


# ---- DDIM -------------------------------------------------------------------------------------------------------
def _ddim_np(x, e, z, t, tp, eta):
    ab, abp = AB_NP[t], (1.0 if tp == -1 else AB_NP[tp])
    x0 = (x - np.sqrt(1 - ab) * e) / np.sqrt(ab)
    s2 = eta ** 2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
    return np.sqrt(abp) * x0 + np.sqrt(1 - abp - s2) * e + np.sqrt(s2) * z, s2


@pytest.mark.parametrize("t, tp, eta", [(99, 79, 0.0), (99, 79, 0.5), (60, 3, 1.0), (10, 9, 0.3), (5, -1, 0.0),
                                        (5, -1, 1.0)])
def test_ddim_step_matches_numpy(sched, t, tp, eta):
    x_t, eps, z, _ = _rand(t)
    res = ddim_step(sched, x_t, t, tp, eps, eta=eta, noise=z)
    ref, s2 = _ddim_np(x_t.numpy(), eps.numpy(), z.numpy(), t, tp, eta)
    np.testing.assert_allclose(res.x_prev.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.variance.flatten().numpy(), np.full(3, s2), rtol=1e-12, atol=1e-300)


def test_ddim_eta0_is_deterministic(sched):
    x_t, eps, z, _ = _rand(8)
    a = ddim_step(sched, x_t, 80, 40, eps, eta=0.0, noise=z)
    b = ddim_step(sched, x_t, 80, 40, eps, eta=0.0, generator=torch.Generator().manual_seed(1))
    c = ddim_step(sched, x_t, 80, 40, eps, eta=0.0)
    assert torch.equal(a.x_prev, b.x_prev) and torch.equal(a.x_prev, c.x_prev) and torch.equal(a.x_prev, a.mean)
    assert float(a.variance.abs().max()) == 0.0


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_to_minus_one_returns_x0_pred(sched, eta):
    x_t, eps, z, _ = _rand(9)
    res = ddim_step(sched, x_t, 40, -1, eps, eta=eta, noise=z)
    assert torch.allclose(res.x_prev, res.x0_pred, atol=1e-12)
    x0 = (x_t.numpy() - np.sqrt(1 - AB_NP[40]) * eps.numpy()) / np.sqrt(AB_NP[40])
    np.testing.assert_allclose(res.x_prev.numpy(), x0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t", [1, 10, 99])
def test_ddim_eta1_consecutive_is_ddpm_with_beta_tilde(sched, t):
    x_t, eps, z, _ = _rand(t + 7)
    d = ddim_step(sched, x_t, t, t - 1, eps, eta=1.0, noise=z)
    np.testing.assert_allclose(d.variance.flatten().numpy(), np.full(3, BT_NP[t]), rtol=1e-10)
    p = ddpm_step(sched, x_t, t, eps, noise=z, variance="beta_tilde")
    assert torch.allclose(d.x_prev, p.x_prev, rtol=1e-9, atol=1e-10)
    assert torch.allclose(d.mean, p.mean, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("t, tp, eta", [(10, 10, 0.0), (10, 11, 0.0), (10, -2, 0.0), (10, 5, -0.1), (T, 5, 0.0)])
def test_ddim_step_rejects_bad_arguments(sched, t, tp, eta):
    x_t, eps, _, _ = _rand(0)
    with pytest.raises(ValueError):
        ddim_step(sched, x_t, t, tp, eps, eta=eta)
