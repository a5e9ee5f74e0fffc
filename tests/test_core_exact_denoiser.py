"""Sampling with the exact denoiser of Gaussian data must give back that Gaussian.

For x_0 ~ N(μ, s²) per dimension, q(x_t) = N(√ᾱ_t μ, ᾱ_t s² + 1 − ᾱ_t) and the optimal ε-predictor is
E[ε | x_t] = √(1−ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t). With it as ε_θ every sampler is an affine map of
Gaussian noise, so its output is exactly Gaussian with a mean and variance that a few lines of numpy float64 compute from the
paper's formulas (``reference``). Each sampler is checked twice:

* against that reference, to within 5 standard errors of the Monte Carlo estimate: this is the tight check of the code;
* against (μ, s²), to within the method's own bias plus 5 standard errors. The bias is not a defect of the code:
  - ancestral DDPM with σ² = β̃ leaves out the Var[x_0 | x_t] part of the true reverse variance, so it comes out low
    (≈ −1.5 % for s = 0.5, linear T = 1000); σ² = β is exact for s = 1 and slightly high for s < 1 (≈ +0.3 %);
  - DDIM with 50 of 1000 steps is a coarse discretisation: ≈ −11 % (η = 0) and −21 % (η = 1) in variance for the
    linear schedule; it vanishes as the steps grow (η = 0 with all 1000 steps: −0.6 %).
  The measured biases are asserted too, so a change that moved them would be noticed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion.samplers import sample, spaced_timesteps
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from gaussian_oracle import MU, S, np_betas
from gaussian_oracle import exact_eps as _exact_eps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S2 = S * S
SHAPE = (4000, 8)  # 32 000 numbers per run: under torch's parallel grain, so one thread does it without contention


def exact_eps(alpha_bars: np.ndarray):
    return _exact_eps(alpha_bars, MU, S, same_t=True)  # the samplers give the whole batch one t


def reference(alpha_bars: np.ndarray, ts: list[int], method: str, variance: str = "beta_tilde", eta: float = 0.0):
    """Mean and variance of the sampler's output, x_T ~ N(0, 1), by pushing (mean, var) through each affine step."""
    m, v = 0.0, 1.0
    for j, k in enumerate(ts):
        ab = alpha_bars[k]
        abp = alpha_bars[ts[j + 1]] if j + 1 < len(ts) else 1.0
        # ε(x) = A x + B and x̂_0(x) = (x − √(1−ᾱ) ε)/√ᾱ = P x + Q
        A = np.sqrt(1 - ab) / (ab * S2 + 1 - ab)
        B = -A * np.sqrt(ab) * MU
        P, Q = (1 - np.sqrt(1 - ab) * A) / np.sqrt(ab), -np.sqrt(1 - ab) * B / np.sqrt(ab)
        if method == "ddpm":  # Algorithm 2 with the (respaced) β' = 1 − ᾱ_t/ᾱ_prev
            alpha = ab / abp
            beta = 1 - alpha
            g = beta / np.sqrt(1 - ab)
            a, c = (1 - g * A) / np.sqrt(alpha), -g * B / np.sqrt(alpha)
            s2 = 0.0 if j + 1 == len(ts) else (beta * (1 - abp) / (1 - ab) if variance == "beta_tilde" else beta)
        else:  # DDIM: √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε + σ z
            s2 = eta ** 2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
            d = np.sqrt(max(1 - abp - s2, 0.0))
            a, c = np.sqrt(abp) * P + d * A, np.sqrt(abp) * Q + d * B
        m, v = a * m + c, a * a * v + s2
    return m, v


def monte_carlo(sched, fn, sampler, runs, **kw):
    xs = [sample(fn, sched, SHAPE, sampler, seed=100 + r, **kw).double().flatten() for r in range(runs)]
    x = torch.cat(xs).numpy()
    return x.mean(), x.var(), x.size


CASES = [
    # id, kind, T, sampler, kwargs, runs, |var/s² − 1| bound from the method's bias
    ("ddpm-beta_tilde-linear", "linear", 1000, "ddpm", {"variance": "beta_tilde"}, 2, 0.02),
    ("ddpm-beta-linear", "linear", 1000, "ddpm", {"variance": "beta"}, 2, 0.005),
    ("ddpm-beta_tilde-cosine", "cosine", 200, "ddpm", {"variance": "beta_tilde"}, 4, 0.04),
    ("ddpm-beta-cosine", "cosine", 200, "ddpm", {"variance": "beta"}, 4, 0.012),
    ("ddpm-respaced50-linear", "linear", 1000, "ddpm", {"steps": 50, "variance": "beta_tilde"}, 2, 0.22),
    ("ddim50-eta0-linear", "linear", 1000, "ddim", {"steps": 50, "eta": 0.0}, 2, 0.12),
    ("ddim50-eta1-linear", "linear", 1000, "ddim", {"steps": 50, "eta": 1.0}, 2, 0.22),
    ("ddim50-eta0-cosine", "cosine", 200, "ddim", {"steps": 50, "eta": 0.0}, 2, 0.07),
    ("ddim50-eta1-cosine", "cosine", 200, "ddim", {"steps": 50, "eta": 1.0}, 2, 0.14),
    ("ddim1000-eta0-linear", "linear", 1000, "ddim", {"steps": 1000, "eta": 0.0}, 1, 0.01),
]


@pytest.mark.parametrize("kind, T, sampler, kw, runs, bias_bound", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exact_denoiser_reproduces_the_data_distribution(kind, T, sampler, kw, runs, bias_bound):
    sched = NoiseSchedule.create(kind, T)
    ab = np.cumprod(1 - np_betas(kind, T))
    steps = kw.get("steps", T)
    ts = spaced_timesteps(T, steps) if steps < T else list(range(T - 1, -1, -1))
    ref_m, ref_v = reference(ab, ts, sampler, kw.get("variance", "beta_tilde"), kw.get("eta", 0.0))
    mean, var, n = monte_carlo(sched, exact_eps(ab), sampler, runs, **kw)
    se_m, se_v = np.sqrt(ref_v / n), ref_v * np.sqrt(2 / n)
    # 1) the code produces exactly the distribution the formulas say it should
    assert abs(mean - ref_m) < 5 * se_m, (mean, ref_m, se_m)
    assert abs(var - ref_v) < 5 * se_v, (var, ref_v, se_v)
    # 2) and that distribution is the data's, up to the method's known bias
    assert abs(ref_m - MU) < 0.002, ref_m  # x_T ~ N(0, 1) instead of N(√ᾱ_T μ, ·) costs at most √ᾱ_T μ
    assert abs(ref_v / S2 - 1) < bias_bound, ref_v / S2
    assert abs(mean - MU) < 0.002 + 5 * se_m
    assert abs(var / S2 - 1) < bias_bound + 5 * se_v / S2


def test_reference_converges_to_the_data_as_steps_grow():
    """The biases above are discretisation: with more steps every method closes in on s²."""
    T = 1000
    ab = np.cumprod(1 - np_betas("linear", T))
    errs = {}
    for n in (20, 50, 200, 1000):
        ts = spaced_timesteps(T, n)
        errs[n] = tuple(abs(reference(ab, ts, "ddim", eta=eta)[1] / S2 - 1) for eta in (0.0, 1.0))
    for a, b in zip((20, 50, 200), (50, 200, 1000)):
        assert errs[b][0] < errs[a][0] and errs[b][1] < errs[a][1]
    assert errs[1000][0] < 0.01
    # η = 1 over all steps is DDPM with β̃
    full = list(range(T - 1, -1, -1))
    ddpm_bt = reference(ab, full, "ddpm", "beta_tilde")[1]
    assert reference(ab, full, "ddim", eta=1.0)[1] == pytest.approx(ddpm_bt, rel=1e-9)
    # σ² = β is exact in the reverse conditional for s = 1 data: a sanity check of the reference itself
    assert reference(ab, full, "ddpm", "beta")[1] == pytest.approx(0.25075, abs=3e-4)


def test_beta_vs_beta_tilde_variance_gap_paired():
    """Same seeds for both variance choices: the noise largely cancels, so the small gap itself can be checked."""
    T = 1000
    sched = NoiseSchedule.create("linear", T)
    ab = np.cumprod(1 - np_betas("linear", T))
    fn = exact_eps(ab)
    full = list(range(T - 1, -1, -1))
    gap_ref = reference(ab, full, "ddpm", "beta")[1] - reference(ab, full, "ddpm", "beta_tilde")[1]
    a = sample(fn, sched, SHAPE, "ddpm", variance="beta", seed=7).double()
    b = sample(fn, sched, SHAPE, "ddpm", variance="beta_tilde", seed=7).double()
    gap = float(a.var() - b.var())
    assert gap_ref == pytest.approx(0.00463, abs=2e-4)
    assert gap == pytest.approx(gap_ref, rel=0.25), (gap, gap_ref)


def test_exact_eps_formula_is_the_conditional_mean_of_the_noise():
    """The closed form used above, checked by Monte Carlo: ε − E[ε|x_t] is uncorrelated with x_t and has mean 0."""
    ab = np.cumprod(1 - np_betas("linear", 1000))
    g = torch.Generator().manual_seed(0)
    n = 30_000
    for t in (0, 100, 500, 999):
        x0 = MU + S * torch.randn(n, generator=g, dtype=torch.float64)
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        x_t = np.sqrt(ab[t]) * x0 + np.sqrt(1 - ab[t]) * eps
        r = (eps - exact_eps(ab)(x_t[:, None], torch.full((n,), t))[:, 0]).numpy()  # float64 in, float64 out
        xt = x_t.numpy()
        assert abs(r.mean()) < 5 * r.std() / np.sqrt(n)
        corr = np.corrcoef(r, xt)[0, 1]
        assert abs(corr) < 5 / np.sqrt(n), (t, corr)
        # and the fitted variance of x_t is ᾱ s² + 1 − ᾱ
        assert xt.var() == pytest.approx(ab[t] * S2 + 1 - ab[t], rel=5 * np.sqrt(2 / n))
