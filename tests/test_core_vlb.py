"""The variational bound (core/vlb.py) against independent references.

The exact oracle: for data x_0 ~ N(μ, s²) per dimension the optimal ε_θ is known (tests/gaussian_oracle.py), x̂_0 is
the linear E[x_0 | x_t] = μ + A (x_t − √ᾱ μ) with A = √ᾱ s² / (ᾱ s² + 1 − ᾱ), and every term of the bound has a
closed form, here in numpy float64 from β alone (nothing from core.schedule):

* given x_0, E_ε[(x_0 − x̂_0)²] = ((1 − A√ᾱ)(x_0 − μ))² + A² (1 − ᾱ), so E[L_{t−1} | x_0] =
  ½ (log(σ²/β̃) + β̃/σ² − 1 + c1² E[(x_0 − x̂_0)²] / σ²), c1 = β √ᾱ_{t−1} / (1 − ᾱ_t);
* the continuous decoder E[L_0 | x_0] = ½ log(2π σ_1²) + E[(x_0 − x̂_0)²] / (2σ_1²);
* L_T = ½ (−log(1 − ᾱ_T) + (1 − ᾱ_T) + ᾱ_T x_0² − 1).

Averaged over x_0 the bound must be ≥ the data's entropy ½ log(2πe s²) (the true NLL), and close to it for σ² = β
(exact in the reverse conditionals for s = 1, nearly so for s = 0.5); σ² = β̃ leaves out Var[x_0 | x_t] and pays
≈ 0.57 nats/dim on this data, which the closed form also says.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion import vlb
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from gaussian_oracle import MU, S, exact_eps, np_betas

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENTROPY = 0.5 * math.log(2 * math.pi * math.e * S * S)  # −E log q(x_0) of N(μ, s²) data, nats/dim


def closed_form(kind: str, T: int, variance: str, x0: np.ndarray | None = None):
    """(per-index expected terms, L_T) in nats/dim; given x0 (n, d) per image (n, T) and (n,), else averaged."""
    b = np_betas(kind, T)
    ab = np.cumprod(1 - b)
    abp = np.r_[1.0, ab[:-1]]
    bt = b * (1 - abp) / (1 - ab)
    sig = b.copy() if variance == "beta" else np.r_[bt[1], bt[1:]]
    c1 = b * np.sqrt(abp) / (1 - ab)
    A = np.sqrt(ab) * S * S / (ab * S * S + 1 - ab)
    if x0 is None:
        err = (1 - A * np.sqrt(ab)) ** 2 * S * S + A * A * (1 - ab)       # Var[x_0 | x_t]
        x2 = MU * MU + S * S
    else:
        d = x0[:, :, None] - MU                                          # (n, dims, 1)
        err = (((1 - A * np.sqrt(ab)) * d) ** 2 + A * A * (1 - ab)).mean(1)  # (n, T)
        x2 = (x0 ** 2).mean(1)
    L = 0.5 * (np.log(sig / np.r_[1.0, bt[1:]]) + np.r_[1.0, bt[1:]] / sig - 1 + c1 ** 2 * err / sig)
    L0 = 0.5 * np.log(2 * np.pi * sig[0]) + err[..., :1] / (2 * sig[0])
    L = np.concatenate([np.broadcast_to(L0, L[..., :1].shape), L[..., 1:]], axis=-1)
    prior = 0.5 * (-np.log(1 - ab[-1]) + (1 - ab[-1]) + ab[-1] * x2 - 1)
    return L, prior


# ---- the pieces --------------------------------------------------------------------------------------------------
def test_kl_of_identical_gaussians_is_zero_and_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    v1 = torch.rand(6, generator=g, dtype=torch.float64) * 2 + 0.05
    v2 = torch.rand(6, generator=g, dtype=torch.float64) * 2 + 0.05
    assert torch.allclose(vlb.normal_kl(m1, v1, m1, v1), torch.zeros(6, dtype=torch.float64), atol=1e-14)
    kl = vlb.normal_kl(m1, v1, m2, v2)
    assert bool((kl > 0).all())
    # Monte Carlo: KL = E_{x~p}[log p(x) − log q(x)]
    n = 400_000
    x = m1 + v1.sqrt() * torch.randn(n, 6, generator=g, dtype=torch.float64)
    diff = vlb.gaussian_log_density(x, m1.expand_as(x), v1) - vlb.gaussian_log_density(x, m2.expand_as(x), v2)
    se = diff.std(0) / math.sqrt(n)
    assert bool(((diff.mean(0) - kl).abs() < 5 * se).all()), (diff.mean(0), kl, se)


@pytest.mark.parametrize("var", [1e-6, 3e-5, 1e-3, 0.05, 4.0])
@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.2, 0.0, 0.5137, 0.999, 1.4])
def test_discretized_likelihood_is_a_distribution_over_the_256_bins(mean, var):
    x = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1
    logp = vlb.discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), var)
    assert bool(torch.isfinite(logp).all())
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_matches_the_normal_cdf():
    """Bin probabilities against Φ written with math.erfc, at an inner bin and both open end bins."""
    def phi(z):
        return 0.5 * math.erfc(-z / math.sqrt(2))

    mean, var = 0.1, 0.02
    sd = math.sqrt(var)
    x = torch.tensor([-1.0, 2 * 140 / 255 - 1, 1.0], dtype=torch.float64)
    got = vlb.discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), var).exp().tolist()
    xi = float(x[1])
    want = [phi((-1 + 1 / 255 - mean) / sd), phi((xi + 1 / 255 - mean) / sd) - phi((xi - 1 / 255 - mean) / sd),
            1 - phi((1 - 1 / 255 - mean) / sd)]
    assert got == pytest.approx(want, rel=1e-9)
    # a far tail keeps its real (tiny) size instead of a floor (improved-diffusion clamps at log 1e-12 = −27.6):
    # 89.6 σ out, P = Φ(−z_lo) − Φ(−z_hi) ≈ φ(z_lo)/z_lo (Mills' ratio, relative error 1/z² ≈ 1e-4)
    far = vlb.discretized_gaussian_log_likelihood(torch.tensor([0.0], dtype=torch.float64),
                                                  torch.tensor([-0.9], dtype=torch.float64), 1e-4)
    z = (0.9 - 1 / 255) / 0.01
    assert float(far) == pytest.approx(-0.5 * z * z - math.log(z * math.sqrt(2 * math.pi)), abs=1e-3)


def test_model_variances_and_prior():
    sched = NoiseSchedule.create("linear", 1000)
    b = np_betas("linear", 1000)
    ab = np.cumprod(1 - b)
    bt = b[1:] * (1 - ab[:-1]) / (1 - ab[1:])
    assert vlb.model_variances(sched, "beta").numpy() == pytest.approx(b, rel=1e-12)
    assert vlb.model_variances(sched, "beta_tilde").numpy() == pytest.approx(np.r_[bt[0], bt], rel=1e-9)
    x0 = torch.tensor([[0.5, -1.0, 1.0, 0.0]], dtype=torch.float64)
    want = (0.5 * (-np.log(1 - ab[-1]) + (1 - ab[-1]) + ab[-1] * x0.numpy() ** 2 - 1)).mean()
    assert float(vlb.prior_kl(sched, x0)) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="variance"):
        vlb.model_variances(sched, "learned")


# ---- the exact oracle --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, T, beta_gap, beta_tilde_gap", [("linear", 1000, (0.0005, 0.002), (0.5, 0.6)),
                                                                 ("cosine", 300, (0.001, 0.003), (0.6, 0.7))])
def test_bound_of_gaussian_data_with_the_exact_denoiser(kind, T, beta_gap, beta_tilde_gap):
    n, dims = 160, 8
    sched = NoiseSchedule.create(kind, T)
    fn = exact_eps(np.cumprod(1 - np_betas(kind, T)))
    x0 = MU + S * torch.randn(n, dims, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    run = vlb.vlb_total(fn, sched, x0, clip_x0=False, discrete=False, seed=3)
    assert run.complete and not run.is_estimate and sorted(run.ts) == list(range(T))
    for variance in vlb.VARIANCES:
        # 1) the expected bound (closed form) is above the true NLL, and close for β
        L, prior = closed_form(kind, T, variance)
        bound = L.sum() + prior
        lo, hi = beta_gap if variance == "beta" else beta_tilde_gap  # β̃ pays for leaving out Var[x_0 | x_t]
        assert ENTROPY + lo < bound < ENTROPY + hi, bound - ENTROPY
        # 2) the code's terms match the closed form given these x_0, term by term and in total
        Lc, prior_c = closed_form(kind, T, variance, x0.numpy())
        order = np.argsort(run.ts)
        got = np.stack(run.terms[variance])[order].T                    # (n, T)
        resid = got - Lc
        se_t = resid.std(0, ddof=1) / math.sqrt(n)
        z_t = resid.mean(0) / se_t
        assert np.abs(z_t).max() < 5.5, (np.argmax(np.abs(z_t)), np.abs(z_t).max())
        assert run.prior == pytest.approx(prior_c, rel=1e-9)
        total = run.totals(variance)
        se_total = (total - Lc.sum(1) - prior_c).std(ddof=1) / math.sqrt(n)
        assert abs((total - Lc.sum(1) - prior_c).mean()) < 5 * se_total
        # 3) and the measured bound sits above the data's true NLL on these very images (paired)
        nll = (0.5 * np.log(2 * np.pi * S * S) + (x0.numpy() - MU) ** 2 / (2 * S * S)).mean(1)
        gap = total - nll
        assert gap.mean() > -5 * gap.std(ddof=1) / math.sqrt(n)
        assert gap.mean() == pytest.approx(bound - ENTROPY, abs=5 * gap.std(ddof=1) / math.sqrt(n) + 0.01)


def test_per_t_generator_sums_to_the_one_shot_total():
    """The per-t generator and a one-shot pass with every (image, t) pair a row at its own t must agree."""
    T = 50
    sched = NoiseSchedule.create("cosine", T)
    fn = exact_eps(np.cumprod(1 - np_betas("cosine", T)))
    x0 = (torch.randint(0, 256, (6, 1, 4, 4), generator=torch.Generator().manual_seed(5)).double() * 2 / 255 - 1)
    for clip in (False, True):
        run = vlb.vlb_total(fn, sched, x0, clip_x0=clip, seed=7, batch=4)
        one = vlb.bound_one_shot(fn, sched, x0, clip_x0=clip, seed=7, rows=37)
        for v in vlb.VARIANCES:
            assert torch.allclose(torch.as_tensor(run.totals(v)), one[v], rtol=1e-10, atol=1e-12)
    # clipping matters here (these x_0 fill [−1, 1], the oracle's x̂_0 overshoots) and only ever helps the bound
    clipped = vlb.vlb_total(fn, sched, x0, clip_x0=True, seed=7).totals("beta")
    raw = vlb.vlb_total(fn, sched, x0, clip_x0=False, seed=7).totals("beta")
    assert not np.allclose(clipped, raw)


def test_clip_takes_the_mean_from_the_clipped_x0():
    sched = NoiseSchedule.create("linear", 10)
    x0 = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    t = 3

    def wild(x, tt):  # ε that puts x̂_0 at 3 everywhere
        ab = sched.alpha_bars[tt[0]]
        return (x - ab.sqrt() * 3.0) / (1 - ab).sqrt()

    item = vlb.terms_at(wild, sched, x0, t, clip_x0=True, probe=True)
    noise = vlb._noise(x0, 0, t)
    x_t = sched.sqrt_alpha_bars[t] * x0 + sched.sqrt_one_minus_alpha_bars[t] * noise
    want = sched.posterior_mean_coef1[t] * 1.0 + sched.posterior_mean_coef2[t] * x_t
    assert np.allclose(item.probe.p_mean, want[0].numpy(), atol=1e-6)
    assert float(item.x0_mse[0]) == pytest.approx(0.25, rel=1e-9)  # (0.5 − 1)²: the clipped x̂_0 is scored
    raw = vlb.terms_at(wild, sched, x0, t, clip_x0=False, probe=True)
    assert float(raw.x0_mse[0]) == pytest.approx(6.25, rel=1e-9)
    assert item.probe.q_var == pytest.approx(float(sched.posterior_variance[t]))
    assert item.probe.p_var == {"beta": pytest.approx(float(sched.betas[t])),
                                "beta_tilde": pytest.approx(float(sched.posterior_variance[t]))}


# ---- every k-th t --------------------------------------------------------------------------------------------------
def test_subset_timesteps_and_weights():
    assert vlb.subset_timesteps(10) == list(range(9, -1, -1))
    T, k = 1000, 7
    seen = set()
    for seed in range(60):
        ts = vlb.subset_timesteps(T, k, seed)
        assert ts == sorted(ts, reverse=True) and ts[-k:] == list(range(k - 1, -1, -1))  # the head, L_0 last
        blocks = [t // k for t in ts if t >= k]
        assert blocks == sorted(set(blocks), reverse=True) == list(range((T - 1) // k, 0, -1))  # one per block
        w = vlb.subset_weights(T, k, ts)
        assert sum(w.values()) == T  # the weights tile 0..T−1
        assert w[ts[0]] == T - (T - 1) // k * k  # the last, partial block
        seen |= set(ts)
    assert len(seen) > 0.95 * T
    assert vlb.subset_timesteps(T, k, 3) == vlb.subset_timesteps(T, k, 3)
    with pytest.raises(ValueError):
        vlb.subset_timesteps(10, 0)
    assert vlb.max_every(1000) == 50 and vlb.max_every(10) == 1
    with pytest.raises(ValueError, match="at most 50"):
        vlb.subset_timesteps(1000, 51)


@pytest.fixture(scope="module")
def full_linear_run():
    T = 1000
    sched = NoiseSchedule.create("linear", T)
    fn = exact_eps(np.cumprod(1 - np_betas("linear", T)))
    x0 = MU + S * torch.randn(40, 8, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    return sched, fn, x0, vlb.vlb_total(fn, sched, x0, clip_x0=False, discrete=False, seed=1)


def test_subset_run_reproduces_the_full_runs_terms(full_linear_run):
    sched, fn, x0, full = full_linear_run
    sub = vlb.vlb_total(fn, sched, x0, clip_x0=False, discrete=False, seed=1, every=25, design_seed=9)
    assert sub.is_estimate and sub.ts == vlb.subset_timesteps(1000, 25, 9)
    same = full.subset(25, 9)
    assert same.ts == sub.ts
    for v in vlb.VARIANCES:
        for t, row, row2 in zip(sub.ts, sub.terms[v], same.terms[v]):
            assert np.allclose(row, full.terms[v][full.ts.index(t)], rtol=1e-12)
            assert np.allclose(row, row2, rtol=1e-12)
        assert np.allclose(sub.totals(v), same.totals(v), rtol=1e-12)
        bpd = sub.bits_per_dim(v)
        assert bpd["estimate"] and bpd["t_err"] > 0 and bpd["half_width"] > bpd["ci"]
        assert full.bits_per_dim(v)["t_err"] == 0 and not full.bits_per_dim(v)["estimate"]


@pytest.mark.parametrize("every", [10, 40])
def test_subset_estimate_is_unbiased_and_its_interval_brackets_the_full_sum(full_linear_run, every):
    """Unbiased exactly: averaging a block's weighted term over every position it can be drawn at gives the block's
    sum, so the expected estimate is the full figure. Coverage: over 400 seeded designs the reported 95 % interval
    (images and t-sampling combined) holds the full run's figure at least 90 % of the time; with a true coverage of
    95 % or more, fewer than 360 of 400 happens with probability < 1e-5, so a pass is not luck and a fail means the
    interval is too narrow."""
    sched, fn, x0, full = full_linear_run
    T = 1000
    for v in vlb.VARIANCES:
        ts, y = full.per_t(v)
        target = full.bits_per_dim(v)["bits_per_dim"]
        expected = sum(y[:every])  # the head, always evaluated
        for a in range(every, T, every):
            block = range(a, min(a + every, T))
            expected += np.mean([vlb.subset_weights(T, every, [t])[t] * y[t] for t in block])
        assert expected == pytest.approx(y.sum(), rel=1e-12)
        covered, estimates = 0, []
        for seed in range(400):
            bpd = full.subset(every, seed).bits_per_dim(v)
            estimates.append(bpd["bits_per_dim"])
            covered += abs(bpd["bits_per_dim"] - target) <= bpd["half_width"]
        assert covered >= 360, (v, every, covered)
        assert min(estimates) <= target <= max(estimates)
        assert abs(np.mean(estimates) - target) < 5 * np.std(estimates) / math.sqrt(400)


def test_mean_ci_uses_students_t():
    mean, half = vlb.mean_ci(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-6)
    assert vlb.mean_ci(np.arange(100.0))[1] == pytest.approx(1.96 * np.arange(100.0).std(ddof=1) / 10)


def test_eps_weights_turn_the_kl_into_a_weighted_eps_error():
    """Unclipped, μ̃ − μ_θ = β_t/(√α_t √(1−ᾱ_t)) (ε_θ − ε): each L_{t−1} is λ_t‖ε − ε_θ‖² plus the variance term."""
    sched = NoiseSchedule.create("linear", 200)
    fn = exact_eps(np.cumprod(1 - np_betas("linear", 200)))
    x0 = MU + S * torch.randn(5, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for v in vlb.VARIANCES:
        lam = vlb.eps_weights(sched, v)
        assert math.isnan(float(lam[0])) and float(lam[1]) > 20 * float(lam[-1])  # small t weigh most
        sig2 = vlb.model_variances(sched, v)
        for t in (1, 7, 150, 199):
            item = vlb.terms_at(fn, sched, x0, t, variances=(v,), clip_x0=False, discrete=False)
            bt = float(sched.posterior_variance[t])
            var_term = 0.5 * (math.log(float(sig2[t]) / bt) + bt / float(sig2[t]) - 1)
            assert torch.allclose(item.terms[v], float(lam[t]) * item.eps_mse + var_term, rtol=1e-9, atol=1e-13)


def test_cumulative_and_share(full_linear_run):
    *_, full = full_linear_run
    for v in vlb.VARIANCES:
        t, cum = full.cumulative_bits(v)
        assert t[0] == 1 and t[-1] == 1000
        assert cum[-1] + full.prior.mean() / vlb.LN2 == pytest.approx(full.bits_per_dim(v)["bits_per_dim"], rel=1e-9)
        tc, y = full.curve_bits(v)
        assert cum[0] == pytest.approx(y[0]) and full.share_up_to(v, 1000) == pytest.approx(1.0)
        # (continuous data: L_0 is a log-density, negative here, so the shares start below 0 and rise to 1)
        assert full.share_up_to(v, 1) == pytest.approx(cum[0] / cum[-1])
        assert full.share_up_to(v, 1) < full.share_up_to(v, 10) < full.share_up_to(v, 100) < 1
