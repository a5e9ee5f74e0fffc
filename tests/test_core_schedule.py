"""NoiseSchedule against the paper's formulas recomputed in numpy float64, and against published reference values."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion.schedule import KINDS, NoiseSchedule

ATTRS = (
    "betas", "alphas", "alpha_bars", "alpha_bars_prev", "sqrt_alphas", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars",
    "sqrt_recip_alphas", "sqrt_recip_alpha_bars", "sqrt_recipm1_alpha_bars", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "snr", "log_snr",
)


def np_betas(kind: str, T: int) -> np.ndarray:
    """β_1..β_T written straight from the papers (Ho et al. 2020; Nichol & Dhariwal 2021) with their default numbers."""
    if kind == "linear":
        return np.linspace(1e-4, 0.02, T)
    if kind == "quadratic":
        return np.linspace(1e-4 ** 0.5, 0.02 ** 0.5, T) ** 2
    if kind == "sigmoid":
        x = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T)))
        return 1e-4 + (x - x[0]) / (x[-1] - x[0]) * (0.02 - 1e-4)
    if kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
        return np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    raise AssertionError(kind)


def np_derived(b: np.ndarray) -> dict[str, np.ndarray]:
    """Every derived quantity by its defining formula, index i ↔ paper t = i + 1, ᾱ_0 = 1."""
    a = 1.0 - b
    ab = np.cumprod(a)
    abp = np.concatenate([[1.0], ab[:-1]])
    bt = b * (1.0 - abp) / (1.0 - ab)
    return {
        "alphas": a, "alpha_bars": ab, "alpha_bars_prev": abp,
        "sqrt_alphas": np.sqrt(a), "sqrt_alpha_bars": np.sqrt(ab), "sqrt_one_minus_alpha_bars": np.sqrt(1 - ab),
        "sqrt_recip_alphas": 1 / np.sqrt(a), "sqrt_recip_alpha_bars": 1 / np.sqrt(ab),
        "sqrt_recipm1_alpha_bars": np.sqrt(1 / ab - 1),
        "posterior_variance": bt,
        "posterior_mean_coef1": np.sqrt(abp) * b / (1 - ab),
        "posterior_mean_coef2": np.sqrt(a) * (1 - abp) / (1 - ab),
        "snr": ab / (1 - ab), "log_snr": np.log(ab / (1 - ab)),
    }


# ---- published values --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("i, expected", [
    (0, 0.9999), (99, 0.89701814567496), (499, 0.07858724288177824), (999, 4.035829765375676e-05),
])
def test_linear_alpha_bar_reference_values(i, expected):
    s = NoiseSchedule.create("linear", 1000)
    assert float(s.alpha_bars[i]) == pytest.approx(expected, rel=1e-12)


def test_linear_beta_tilde_reference_value_and_first_is_zero():
    s = NoiseSchedule.create("linear", 1000)
    assert float(s.posterior_variance[1]) == pytest.approx(5.4531876613021935e-05, rel=1e-12)
    assert float(s.posterior_variance[0]) == 0.0  # β̃_1 = β_1 (1 − ᾱ_0)/(1 − ᾱ_1) with ᾱ_0 = 1
    # the log is clipped to stay finite: log β̃_2 in both of the first two places
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    assert float(s.posterior_log_variance_clipped[0]) == pytest.approx(math.log(5.4531876613021935e-05), rel=1e-12)


def test_cosine_alpha_bar_reference_value():
    s = NoiseSchedule.create("cosine", 1000)
    assert float(s.alpha_bars[499]) == pytest.approx(0.4938435904406382, rel=1e-12)


# ---- shapes, dtypes, ends ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [2, 10, 1000])
def test_every_attribute_is_1d_float64_of_length_T(kind, T):
    s = NoiseSchedule.create(kind, T)
    assert s.T == T
    for name in ATTRS:
        v = getattr(s, name)
        assert isinstance(v, torch.Tensor), name
        assert v.dtype == torch.float64 and v.shape == (T,), (name, v.dtype, v.shape)
    assert s.timestep_map.tolist() == list(range(T))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [2, 10, 1000])
def test_betas_and_derived_match_numpy(kind, T):
    s = NoiseSchedule.create(kind, T)
    b = np_betas(kind, T)
    np.testing.assert_allclose(s.betas.numpy(), b, rtol=1e-12, atol=0)
    for name, ref in np_derived(b).items():
        np.testing.assert_allclose(getattr(s, name).numpy(), ref, rtol=1e-10, atol=1e-300, err_msg=name)


@pytest.mark.parametrize("T", [2, 10, 1000])
def test_linear_ends_inclusive_without_rescaling(T):
    s = NoiseSchedule.create("linear", T)
    # Ho et al.: β_1 = 1e-4 and β_T = 0.02 exactly, whatever T (no 1000/T rescale as in improved-diffusion)
    assert float(s.betas[0]) == 1e-4
    assert float(s.betas[-1]) == pytest.approx(0.02, rel=1e-15)


@pytest.mark.parametrize("kind", ["quadratic", "sigmoid"])
def test_quadratic_and_sigmoid_ends_and_monotone(kind):
    s = NoiseSchedule.create(kind, 50, beta_start=2e-4, beta_end=0.03)
    assert float(s.betas[0]) == pytest.approx(2e-4, rel=1e-12)
    assert float(s.betas[-1]) == pytest.approx(0.03, rel=1e-12)
    assert bool((s.betas[1:] > s.betas[:-1]).all())


def test_cosine_clips_at_max_beta():
    s = NoiseSchedule.create("cosine", 1000)
    assert float(s.betas.max()) == 0.999
    assert float(s.betas[-1]) == 0.999  # f(T) = cos²(π/2) = 0, so the unclipped β_T would be 1
    assert int((s.betas == 0.999).sum()) >= 1
    s2 = NoiseSchedule.create("cosine", 100, max_beta=0.5)
    assert float(s2.betas.max()) == 0.5
    # below the clip the betas are the unclipped formula
    ref = np_betas("cosine", 100)
    keep = ref < 0.5
    np.testing.assert_allclose(s2.betas.numpy()[keep], ref[keep], rtol=1e-12)


def test_cosine_alpha_bar_is_the_cosine_ratio_before_clipping():
    T, s_ = 200, 0.008
    s = NoiseSchedule.create("cosine", T)
    t = np.arange(1, T + 1)
    f = lambda u: np.cos((u / T + s_) / (1 + s_) * np.pi / 2) ** 2  # noqa: E731
    ref = f(t) / f(0)
    np.testing.assert_allclose(s.alpha_bars.numpy()[:-1], ref[:-1], rtol=1e-10)


def test_posterior_mean_coefficients_sum_rule():
    # μ̃ of x_t built from x_0 alone: coef1 + coef2 √ᾱ_t = √ᾱ_{t−1} (an identity of the posterior)
    s = NoiseSchedule.create("linear", 300)
    lhs = s.posterior_mean_coef1 + s.posterior_mean_coef2 * s.sqrt_alpha_bars
    np.testing.assert_allclose(lhs.numpy(), np.sqrt(s.alpha_bars_prev.numpy()), rtol=1e-12)


def test_snr_decreasing_and_alpha_bar_helpers():
    s = NoiseSchedule.create("linear", 100)
    assert bool((s.snr[1:] < s.snr[:-1]).all())
    assert float(s.alpha_bar_at(-1)) == 1.0
    assert float(s.alpha_bar_at(0)) == float(s.alpha_bars[0])
    assert float(s.alpha_bar_at(99)) == float(s.alpha_bars[99])
    x = torch.zeros(3, 2, 4, 4)
    v = s.at("alpha_bars", torch.tensor([0, 5, 99]), x)
    assert v.shape == (3, 1, 1, 1) and v.dtype == x.dtype
    np.testing.assert_allclose(v.flatten().numpy(), s.alpha_bars[[0, 5, 99]].float().numpy())


# ---- validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    (dict(kind="linear", beta_start=0.0), "beta_start"),
    (dict(kind="linear", beta_start=-1e-4), "beta_start"),
    (dict(kind="linear", beta_end=1.0), "beta_end"),
    (dict(kind="linear", beta_end=1.5), "beta_end"),
    (dict(kind="quadratic", beta_start=float("nan")), "beta_start"),
    (dict(kind="sigmoid", beta_end=float("inf")), "beta_end"),
    (dict(kind="linear", beta_start=0.03, beta_end=0.02), "beta_start"),
    (dict(kind="quadratic", beta_start=0.03, beta_end=0.02), "beta_start"),
    (dict(kind="sigmoid", sigmoid_range=0.0), "sigmoid_range"),
    (dict(kind="cosine", s=-0.1), "s must"),  # the field is called s
    (dict(kind="cosine", max_beta=1.0), "max_beta"),
    (dict(kind="cosine", max_beta=0.0), "max_beta"),
    (dict(kind="linear", T=1), "T"),
    (dict(kind="linear", T=0), "T"),
    (dict(kind="linear", T=10.0), "T"),
    (dict(kind="linear", T=2.5), "T"),
    (dict(kind="linear", T="10"), "T"),
    (dict(kind="linear", T=True), "T"),
    (dict(kind="exponential"), "kind"),
    (dict(kind="linear", gamma=0.1), "gamma"),
    (dict(kind="cosine", beta_start=1e-4), "beta_start"),
])
def test_invalid_parameters_raise_naming_the_field(kwargs, field):
    kwargs = dict(kwargs)
    kind = kwargs.pop("kind")
    T = kwargs.pop("T", 20)
    with pytest.raises(ValueError) as e:
        NoiseSchedule.create(kind, T, **kwargs)
    assert field in str(e.value), str(e.value)


@pytest.mark.parametrize("betas", [[0.1], [0.1, 1.0], [0.0, 0.1], [0.1, float("nan")], [-0.1, 0.2]])
def test_from_betas_rejects_bad_betas(betas):
    with pytest.raises(ValueError):
        NoiseSchedule.from_betas(betas)


# ---- serialisation and respacing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_to_dict_from_dict_round_trip_through_json(kind):
    extra = {"cosine": {"s": 0.01}, "sigmoid": {"sigmoid_range": 4.0}}.get(kind, {"beta_end": 0.03})
    s = NoiseSchedule.create(kind, 37, **extra)
    d = json.loads(json.dumps(s.to_dict()))
    r = NoiseSchedule.from_dict(d)
    assert r == s and r.kind == kind and r.T == 37 and r.params == s.params
    assert torch.equal(r.alpha_bars, s.alpha_bars)


def test_custom_betas_round_trip():
    b = [0.01, 0.02, 0.05, 0.3]
    s = NoiseSchedule.from_betas(b)
    r = NoiseSchedule.from_dict(json.loads(json.dumps(s.to_dict())))
    assert r == s and r.betas.tolist() == b
    np.testing.assert_allclose(r.alpha_bars.numpy(), np.cumprod(1 - np.array(b)), rtol=1e-15)


def test_from_dict_rejects_garbage():
    with pytest.raises(ValueError):
        NoiseSchedule.from_dict([1, 2])
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule.from_dict({"kind": "nope", "T": 10})


@pytest.mark.parametrize("ts", [[999, 500, 0], list(range(0, 1000, 37)), [3, 1, 2, 2, 998]])
def test_respace_keeps_alpha_bar_at_kept_steps(ts):
    s = NoiseSchedule.create("linear", 1000)
    r = s.respace(ts)
    kept = sorted(set(ts))
    assert r.T == len(kept)
    assert r.timestep_map.tolist() == kept
    assert r.timestep_map.dtype == torch.long
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[kept]
    np.testing.assert_allclose(r.alpha_bars.numpy(), ab, rtol=1e-12)
    # respaced β'_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}}
    np.testing.assert_allclose(r.betas.numpy(), 1 - ab / np.concatenate([[1.0], ab[:-1]]), rtol=1e-12)


def test_respace_rejects_bad_timesteps():
    s = NoiseSchedule.create("linear", 10)
    for bad in ([], [5], [0, 10], [-1, 3]):
        with pytest.raises(ValueError):
            s.respace(bad)
