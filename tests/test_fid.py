"""FID: the Fréchet distance against closed forms, statistics caching and files, and FID ordering on real digits."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusion_studio.core.metrics.fid import (
    FIDScore, FIDStats, FIDWarning, cached_stats, clear_stats_cache, compute_fid, extract_features, fid_against,
    frechet_distance, gaussian_stats, image_stats,
)
from diffusion_studio.data import ImageDataset


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---- closed forms ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -3.0, 0.5), (0.3, 1e-3, 0.3, 4.0)])
def test_one_dimensional_closed_form(m1, s1, m2, s2):
    got = frechet_distance([m1], [[s1 ** 2]], [m2], [[s2 ** 2]])
    assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-9, abs=1e-12)


def test_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(7), rng.standard_normal(7)
    a, b = rng.uniform(0.01, 3, 7), rng.uniform(0.01, 3, 7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_commuting_full_covariances():
    rng = np.random.default_rng(2)
    d = 12
    q = _rotation(d, rng)
    l1, l2 = rng.uniform(0.05, 5, d), rng.uniform(0.05, 5, d)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_non_commuting_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    d = 20
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    assert not np.allclose(s1 @ s2, s2 @ s1)  # really non-commuting
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = linalg.sqrtm(s1 @ s2).real  # the pytorch-fid route, computed independently
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_identity_symmetry_and_torch_inputs():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((400, 6)), rng.standard_normal((300, 6)) * 1.5 + 0.2
    mx, sx = gaussian_stats(x)
    my, sy = gaussian_stats(torch.from_numpy(y).float())
    assert mx.dtype == np.float64 and sx.shape == (6, 6)
    np.testing.assert_allclose(sx, np.cov(x, rowvar=False), rtol=1e-12)
    assert frechet_distance(mx, sx, mx, sx) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(frechet_distance(my, sy, mx, sx), rel=1e-10)
    assert frechet_distance(mx, sx, my, sy) > 0.1


def test_singular_covariances_warn_but_work():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((10, 32)), rng.standard_normal((12, 32)) + 1.0
    with pytest.warns(FIDWarning, match="rank-deficient"):
        mx, sx = gaussian_stats(x)
    with pytest.warns(FIDWarning):
        my, sy = gaussian_stats(y)
    d = frechet_distance(mx, sx, my, sy)
    assert math.isfinite(d) and d > 0
    assert frechet_distance(mx, sx, mx, sx) == pytest.approx(0.0, abs=1e-8)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---- statistics files -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_stats_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(6)
    stats = FIDStats.from_features(rng.standard_normal((50, 4)), "net-abc", {"spec": "builtin:digits"})
    path = stats.save(tmp_path / f"real{suffix}")
    back = FIDStats.load(path)
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert (back.n, back.extractor, back.meta) == (50, "net-abc", {"spec": "builtin:digits"})
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:  # plain arrays: no pickle needed to read it
            assert json.loads(str(z["header"]))["n"] == 50


def test_stats_load_pytorch_fid_npz_and_errors(tmp_path):
    np.savez(tmp_path / "pf.npz", mu=np.zeros(3), sigma=np.eye(3))  # pytorch-fid's --save-stats layout
    assert FIDStats.load(tmp_path / "pf.npz").dim == 3
    with pytest.raises(ValueError, match="no such"):
        FIDStats.load(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz") as e:
        FIDStats.load(tmp_path / "junk.npz")
    assert "\n" not in str(e.value)


def test_mismatched_extractors_are_refused():
    a = FIDStats(np.zeros(2), np.eye(2), 10, "net-a")
    b = FIDStats(np.zeros(2), np.eye(2), 10, "net-b")
    with pytest.raises(ValueError, match="net-a"):
        compute_fid(a, b, extractor=None)


# ---- with the digits feature network --------------------------------------------------------------------------------


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :]) / 256
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.view(1, 1, 5, 5).to(x))


@pytest.fixture(scope="module")
def split(digits, digits_net):
    """Two random halves of the digits and the first half's statistics (computed once: features cost time)."""
    _, x = digits
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[: len(x) // 2]], x[perm[len(x) // 2:]]
    return image_stats(a, digits_net), b


def test_fid_orders_real_split_blur_and_noise(split, digits_net):
    stats_a, b = split
    noise = torch.rand(b.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    real_split = compute_fid(stats_a, b, digits_net)
    blurred = compute_fid(stats_a, _blur(b), digits_net)
    to_noise = compute_fid(stats_a, noise, digits_net)
    assert isinstance(real_split, FIDScore) and real_split.reliable and real_split.dim == digits_net.feature_dim
    assert real_split < 0.1 * to_noise
    assert real_split < blurred < to_noise


def test_datasets_and_tensors_give_the_same_features(digits, digits_net):
    ds, x = digits
    small = ImageDataset(ds.images[:300], ds.labels[:300])
    np.testing.assert_allclose(extract_features(digits_net, small, 128), extract_features(digits_net, x[:300], 256),
                               rtol=1e-5, atol=1e-5)


def test_few_samples_give_a_flagged_score_not_an_error(split, digits_net):
    stats_a, b = split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        few = compute_fid(stats_a, b[:40], digits_net)  # 40 samples for 128-d features: rank-deficient
    assert math.isfinite(few) and not few.reliable and "40 samples" in few.warnings[0]
    assert any(issubclass(w.category, FIDWarning) for w in caught)


def test_fid_against_caches_real_statistics(digits, digits_net, monkeypatch):
    ds, x = digits
    small = ImageDataset(ds.images[:300], ds.labels[:300])
    fake = x[300:500]
    clear_stats_cache()
    first = fid_against(small, fake, digits_net)
    calls = []
    import diffusion_studio.core.metrics.fid as fid_mod
    real_image_stats = fid_mod.image_stats
    monkeypatch.setattr(fid_mod, "image_stats", lambda imgs, *a, **k: calls.append(len(imgs)) or
                        real_image_stats(imgs, *a, **k))
    second = fid_against(small, fake, digits_net)
    assert calls == [200]  # only the generated side was recomputed
    assert float(first) == pytest.approx(float(second), rel=1e-9)
    stats = cached_stats(small, digits_net)
    assert stats.n == 300 and stats.extractor == digits_net.name
    assert float(fid_against(stats, fake, digits_net)) == pytest.approx(float(first), rel=1e-9)
