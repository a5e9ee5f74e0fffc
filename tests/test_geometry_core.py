"""The geometry lab's parts (issue 22): toy sources, the CSV reader, the standardiser, the ideal denoiser, the
2-D MLP and the metrics of point sets, each against an independent reference."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion import ideal, samplers as _samplers_mod
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.metrics import points as metrics2d
from diffusion_studio.core.nets import mlp, unet as _unet_mod
from diffusion_studio.data import points, points_csv
from diffusion_studio.data.points import PointsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_schedule(T: int = 1000):
    return NoiseSchedule.create("linear", T)


@pytest.fixture(scope="module")
def schedule():
    return make_schedule(1000)


def ddim64(model_fn, schedule, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """A minimal float64 DDIM (η = 0) from index T − 1 to 0, then the jump to x_0 (ᾱ = 1)."""
    T = len(schedule.alpha_bars)
    ts = sorted(set(torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().tolist()), reverse=True)
    ab = schedule.alpha_bars.to(torch.float64)
    x = x_T.to(torch.float64)
    for i, t in enumerate(ts):
        a = ab[t]
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        eps = model_fn(x, torch.full((len(x),), t, dtype=torch.long))
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


# ---- built-in toys --------------------------------------------------------------------------------------------------

BUILTINS = ["toy:moons", "toy:swissroll", "toy:8gaussians", "toy:checkerboard", "toy:rings", "toy:spiral",
            "toy:text:HELLO"]


@pytest.mark.parametrize("spec", BUILTINS)
def test_builtin_shape_finite_deterministic(spec):
    a = points.make_toy(spec, n=1001, seed=5)
    b = points.make_toy(spec, n=1001, seed=5)
    c = points.make_toy(spec, n=1001, seed=6)
    assert a.points.shape == (1001, 2) and a.points.dtype == np.float32
    assert np.isfinite(a.points).all()
    assert np.array_equal(a.points, b.points)
    assert not np.array_equal(a.points, c.points)
    assert a.points.std(0).min() > 0.1  # a spread-out set, not a point
    if a.labels is not None:
        assert a.labels.shape == (1001,) and a.labels.dtype == np.int64
        assert np.array_equal(a.labels, b.labels)
        assert len(a.class_names) == a.num_classes and set(np.unique(a.labels)) == set(range(a.num_classes))
    assert len(points.make_toy(spec).points) == points.DEFAULT_N


def test_eight_gaussians_points_lie_in_their_own_mode():
    ps = points.make_toy("toy:8gaussians", n=20_000, seed=1)
    assert ps.centres.shape == (8, 2) and ps.sigma == pytest.approx(points.EIGHT_GAUSSIANS_SIGMA)
    assert ps.class_names == tuple(f"mode {k}" for k in range(8))
    dist = np.linalg.norm(ps.points - ps.centres[ps.labels], axis=1)
    # Within 3σ per axis (a square of side 6σ): 0.9973² = 99.46 %.
    per_axis = (np.abs(ps.points - ps.centres[ps.labels]) <= 3 * ps.sigma).all(1).mean()
    assert per_axis >= 0.99
    # Within 3σ in Euclidean distance: an isotropic 2-D Gaussian holds 1 − e^(−9/2) = 98.89 % there (the 1-D
    # 99.7 % rule does not carry over), so ≥ 99 % cannot hold for untruncated modes; check the exact value instead.
    expected = 1 - math.exp(-4.5)
    tol = 4 * math.sqrt(expected * (1 - expected) / len(ps))
    assert abs((dist <= 3 * ps.sigma).mean() - expected) < tol
    assert (dist <= 3.5 * ps.sigma).mean() >= 0.99  # 1 − e^(−6.125) = 99.78 %
    # every point's own mode is its nearest within 3σ: the modes do not overlap there
    sep = np.linalg.norm(ps.centres[0] - ps.centres[1])
    assert sep > 6 * ps.sigma


def test_text_toy_draws_the_word_and_refuses_bad_words():
    ps = points.make_toy("toy:text:HI", n=3000, seed=0)
    mask = points.text_mask("HI")
    assert mask.shape[0] >= 40 and mask.sum() > 500  # big enough to be legible
    xs = ps.points[:, 0]
    assert (xs < 0).sum() > 900 and (xs > 0).sum() > 900  # both letters drawn
    for spec, why in [("toy:text:", "empty word"), ("toy:text:" + "W" * 40, "too long"),
                      ("toy:text:   ", "no ink"), ("toy:text:a\nb", "control")]:
        with pytest.raises(PointsError) as e:
            points.make_toy(spec)
        assert why in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PointsError, match="unknown toy 'nope'"):
        points.make_toy("toy:nope")
    with pytest.raises(PointsError, match="n must be"):
        points.make_toy("toy:moons", n=1)


# ---- CSV ------------------------------------------------------------------------------------------------------------

def test_csv_round_trip_is_exact(tmp_path):
    ps = points.make_toy("toy:8gaussians", n=2000, seed=2)
    pts = ps.points.copy()
    pts[:3] = [[1e-30, -3.4e38], [np.float32(0.1), np.nextafter(np.float32(1), np.float32(2))], [0, -0.0]]
    f = tmp_path / "p.csv"
    points_csv.save_points_csv(f, pts)
    back, problems = points_csv.load_points_csv(f)
    assert problems == [] and back.labels is None
    assert back.points.dtype == np.float32 and np.array_equal(back.points, pts)
    # with labels, and with labels written as names (their order kept)
    points_csv.save_points_csv(f, pts, ps.labels)
    back, _ = points_csv.load_points_csv(f)
    assert np.array_equal(back.points, pts) and np.array_equal(back.labels, ps.labels)
    names = ("zeta", "alpha", "mode, with comma", "μ", "b", "a", "7", "x")
    points_csv.save_points_csv(f, pts, ps.labels, names)
    back, problems = points_csv.load_points_csv(f)
    assert problems == [] and back.class_names == names
    assert np.array_equal(back.points, pts) and np.array_equal(back.labels, ps.labels)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # the temp file was replaced, not left


def test_csv_header_optional_and_labels_by_name(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("1.5,2\n-3,4e-1\n")
    got, problems = points_csv.load_points_csv(f)
    assert problems == [] and np.array_equal(got.points, np.array([[1.5, 2], [-3, 0.4]], np.float32))
    f.write_text("label,Y,X\ncat,1,2\ndog,3,4\ncat,5,6\n")  # named columns in any order
    got, problems = points_csv.load_points_csv(f)
    assert problems == []
    assert np.array_equal(got.points, np.array([[2, 1], [4, 3], [6, 5]], np.float32))
    assert got.class_names == ("cat", "dog") and got.labels.tolist() == [0, 1, 0]
    f.write_text("x\ty\n1\t2\n3\t4\n")  # tabs
    assert len(points_csv.load_points_csv(f)[0]) == 2
    f.write_text("x,y,label\n1,2,3\n3,4,0\n")  # integer labels are class indices
    got, _ = points_csv.load_points_csv(f)
    assert got.labels.tolist() == [3, 0] and got.class_names is None


def test_odd_units_standardise_and_invert_exactly(tmp_path):
    rng = np.random.default_rng(0)
    raw = (np.array([100.0, -50.0]) + 30.0 * rng.standard_normal((5000, 2))).astype(np.float32)
    f = tmp_path / "odd.csv"
    points_csv.save_points_csv(f, raw)
    ps, _ = points_csv.load_points_csv(f)
    st = points.Standardiser.fit(ps.points)
    z = st.forward(ps.points)
    assert z.dtype == np.float64
    assert np.abs(z.mean(0)).max() < 1e-12 and np.abs(z.std(0) - 1).max() < 1e-12
    back = st.inverse(z)
    x = ps.points.astype(np.float64)
    assert np.max(np.abs(back - x) / np.abs(x)) <= 1e-9
    st2 = points.Standardiser.from_dict(st.to_dict())
    assert np.array_equal(st2.forward(ps.points), z)
    zt = st.forward(torch.from_numpy(ps.points))  # a tensor keeps its dtype, the math is float64
    assert zt.dtype == torch.float32 and torch.allclose(zt.double(), torch.from_numpy(z), atol=1e-6)


def test_bad_rows_one_line_each_and_the_rest_loads(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("x,y\n1,2\nabc,3\n4,nan\n5,6,7\n\n# a comment\n8,inf\n1_0,2\n9,1e39\n10,11\n")
    got, problems = points_csv.load_points_csv(f)
    assert np.array_equal(got.points, np.array([[1, 2], [10, 11]], np.float32))
    assert len(problems) == 6
    for p, row, why in zip(problems, (3, 4, 5, 8, 9, 10), ("not a number", "not finite", "3 columns", "not finite",
                                                            "not a number", "float32")):
        assert p.startswith(f"{f}: row {row}: ") and why in p and "\n" not in p
    assert problems[-1].startswith(f"{f}: row 10")


def test_problem_lines_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(points_csv, "MAX_PROBLEMS", 3)
    f = tmp_path / "many.csv"
    f.write_text("x,y\n" + "a,b\n" * 50 + "1,2\n3,4\n")
    got, problems = points_csv.load_points_csv(f)
    assert len(got) == 2 and len(problems) == 4
    assert [p.split(": ")[1] for p in problems[:3]] == ["row 2", "row 3", "row 4"]
    assert problems[3] == f"{f}: … and 47 more bad rows"


def test_label_problems(tmp_path):
    f = tmp_path / "lab.csv"
    f.write_text('# class_names: ["a", "b"]\nx,y,label\n1,2,a\n3,4,c\n5,6,1\n7,8,\n')
    got, problems = points_csv.load_points_csv(f)
    assert got.labels.tolist() == [0, 1] and got.class_names == ("a", "b")
    assert len(problems) == 2 and "row 4" in problems[0] and "'c'" in problems[0] and "empty label" in problems[1]


@pytest.mark.parametrize("content, why", [
    (b"", "no points (the file is empty)"),
    (b"x,y\n", "no points (no data rows)"),
    (b"x,y\n1,2\n", "only 1 point"),
    (b"x,y\na,b\nc,d\n", "no points (2 bad rows"),
    (bytes(range(256)) * 20, "not a text file"),
    (b"\xff\xfe\x80garbage\x81,\x82\n", "not a UTF-8 text file"),
])
def test_refused_files_one_line(tmp_path, content, why):
    f = tmp_path / "r.csv"
    f.write_bytes(content)
    with pytest.raises(PointsError) as e:
        points_csv.load_points_csv(f)
    assert str(e.value).startswith(f"{f}: ") and why in str(e.value) and "\n" not in str(e.value)


def test_fifo_oversize_and_missing_files_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    code = ("from diffusion_studio.data import points, points_csv\n"
            "try:\n    points_csv.load_points_csv(%r)\nexcept points.PointsError as e:\n    print(e)\n") % str(fifo)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert time.monotonic() - t0 < 20
    assert out.stdout.strip() == f"{fifo}: not a regular file (FIFO)"
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(points.MAX_BYTES + 1)  # sparse: refused by size before reading
    with pytest.raises(PointsError, match="too large"):
        points_csv.load_points_csv(big)
    small = tmp_path / "s.csv"
    small.write_text("1,2\n" * 100)
    with pytest.raises(PointsError, match="too large"):
        points_csv.load_points_csv(small, max_bytes=50)
    with pytest.raises(PointsError, match="more than 10 rows"):
        points_csv.load_points_csv(small, max_rows=10)
    with pytest.raises(PointsError, match="no such file"):
        points_csv.load_points_csv(tmp_path / "missing.csv")
    with pytest.raises(PointsError, match="folder"):
        points_csv.load_points_csv(tmp_path)


# ---- the ideal denoiser ---------------------------------------------------------------------------------------------

def brute_force_eps(data, labels, alpha_bars, x, t, y):
    """Independent reference: Python loops over the batch, numpy over the data, float64."""
    data = np.asarray(data, np.float64).reshape(len(data), -1)
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    eps = np.empty_like(x)
    x0 = np.empty_like(x)
    for b in range(len(x)):
        ab = float(alpha_bars[int(t[b])])
        pool = data
        if y is not None and labels is not None and int(y[b]) != int(labels.max()) + 1:
            pool = data[labels == int(y[b])]
        log_w = np.array([-np.sum((x[b] - math.sqrt(ab) * xi) ** 2) / (2 * (1 - ab)) for xi in pool])
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        x0[b] = (w[:, None] * pool).sum(0)
        eps[b] = (x[b] - math.sqrt(ab) * x0[b]) / math.sqrt(1 - ab)
    return eps, x0


@pytest.mark.parametrize("shape", [(2,), (1, 3, 4)])
def test_ideal_denoiser_matches_brute_force(schedule, shape):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300,) + shape) * 1.5
    labels = rng.integers(0, 3, 300)
    x = torch.from_numpy(rng.normal(size=(12,) + shape) * 1.2)
    T = len(schedule.alpha_bars)
    ab = schedule.alpha_bars.numpy()
    for t_val in (0, 1, 50, 400, T - 1):
        t = torch.full((12,), t_val, dtype=torch.long)
        t[::3] = T - 1  # a mixed batch too
        for with_labels, y in [(False, None), (True, None), (True, torch.tensor([0, 1, 2, 3] * 3))]:
            den = ideal.IdealDenoiser(data, schedule, labels if with_labels else None, chunk_bytes=4096)
            got = den(x, t, y)
            want_eps, want_x0 = brute_force_eps(data, labels if with_labels else None, ab, x.numpy(), t.numpy(),
                                                y.numpy() if y is not None else None)
            assert got.shape == x.shape and got.dtype == torch.float64
            np.testing.assert_allclose(got.reshape(12, -1).numpy(), want_eps, rtol=0, atol=1e-10)
            np.testing.assert_allclose(den.x0_hat(x, t, y).reshape(12, -1).numpy(), want_x0, rtol=0, atol=1e-10)
    # the chunk size does not change the answer
    den_small = ideal.IdealDenoiser(data, schedule, chunk_bytes=1024)
    den_big = ideal.IdealDenoiser(data, schedule)
    t = torch.full((12,), 10)
    np.testing.assert_allclose(den_small(x, t).numpy(), den_big(x, t).numpy(), rtol=0, atol=1e-12)


def _separated(pts: np.ndarray, min_dist: float) -> np.ndarray:
    """Indices of a greedy subset whose points are all at least min_dist apart."""
    keep: list[int] = []
    for i, p in enumerate(pts):
        if all(np.linalg.norm(p - pts[j]) >= min_dist for j in keep):
            keep.append(i)
    return np.array(keep)


def test_ideal_denoiser_at_tiny_noise_returns_the_training_point(schedule):
    # At t = 0 (√(1−ᾱ_1) = 0.01) a neighbour at distance d still weighs exp(−d²/2·10⁻⁴): points 0.1 apart
    # contribute e^(−50), so x̂0 is the point to float64 precision; closer pairs blend (the DDIM test's caveat).
    ps = points.make_toy("toy:8gaussians", n=400, seed=0)
    keep = _separated(ps.points.astype(np.float64), 0.1)
    assert len(keep) >= 100
    data = torch.from_numpy(ps.points[keep].astype(np.float64))
    den = ideal.IdealDenoiser(data, schedule, ps.labels[keep])
    ps.labels = ps.labels[keep]
    t = torch.zeros(len(data), dtype=torch.long)
    x_t = schedule.sqrt_alpha_bars[0] * data  # x_t exactly at √ᾱ x_i: no noise
    assert torch.allclose(den.x0_hat(x_t, t), data, atol=1e-9, rtol=0)
    y = torch.from_numpy(ps.labels)
    assert torch.allclose(den.x0_hat(x_t, t, y), data, atol=1e-9, rtol=0)
    eps = den(x_t, t)
    assert eps.abs().max() < 1e-6
    # the score helper: −ε/√(1−ᾱ_t)
    s = ideal.score(torch.ones(3, 2, dtype=torch.float64), schedule, torch.tensor([0, 1, 999]))
    want = -1 / schedule.sqrt_one_minus_alpha_bars[[0, 1, 999]]
    assert torch.allclose(s[:, 0], want) and torch.allclose(s[:, 1], want)


def test_ideal_denoiser_refuses_bad_inputs(schedule):
    den = ideal.IdealDenoiser(np.zeros((5, 2)), schedule)
    with pytest.raises(ValueError, match="t must be timestep indices"):
        den(torch.zeros(2, 2), torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="no labels"):
        den(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="expected x"):
        den(torch.zeros(2, 3), torch.tensor([0, 1]))
    lab = ideal.IdealDenoiser(np.zeros((5, 2)), schedule, labels=[0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="labels in 0..2"):
        lab(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 3]))


def test_ddim_with_the_ideal_denoiser_returns_training_points(schedule):
    # 64 points in the data's own units: their nearest neighbours are ≥ 0.03 apart, well above √(1−ᾱ_1) = 0.01,
    # the noise left at the last step (denser sets end some particles between two neighbours).
    ps = points.make_toy("toy:8gaussians", n=64, seed=3)
    data = torch.from_numpy(ps.points.astype(np.float64))
    den = ideal.IdealDenoiser(data, schedule)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = ddim64(den, schedule, x_T, steps=len(schedule.alpha_bars))
    nearest = torch.cdist(x0, data).min(1).values
    assert (nearest < 1e-3).double().mean() >= 0.99
    # memorised, but not collapsed: many different training points are reached
    assert len(torch.unique(torch.cdist(x0, data).argmin(1))) >= 40


def test_project_ddim_sampler_with_the_ideal_denoiser(schedule):
    ps = points.make_toy("toy:8gaussians", n=32, seed=3)
    data = torch.from_numpy(ps.points.astype(np.float64))
    den = ideal.IdealDenoiser(data, schedule)
    x0 = _samplers_mod.sample(den, schedule, (500, 2), "ddim", steps=100, eta=0.0, seed=0)
    nearest = torch.cdist(x0.double(), data).min(1).values
    assert (nearest < 1e-3).double().mean() >= 0.99


# ---- the MLP --------------------------------------------------------------------------------------------------------

def test_mlp_shapes_and_unet_embedding():
    net = mlp.MLPDenoiser(mlp.MLPConfig())
    x, t = torch.randn(7, 2), torch.randint(0, 1000, (7,))
    assert net(x, t).shape == (7, 2)
    assert net(x, t.float() + 0.5).shape == (7, 2)  # float t allowed
    assert net(torch.randn(7, 1, 2), t).shape == (7, 1, 2)
    assert mlp.timestep_embedding is _unet_mod.timestep_embedding  # one sinusoidal embedding for both networks


def test_mlp_output_can_grow_with_the_input():
    # ε̂ ≈ x_t at high noise, so ‖ε̂‖ must keep growing with ‖x_t‖; a LayerNorm in the output head bounded it and DDIM
    # let the samples that started in the Gaussian's tails drift to ‖x‖ ≈ 70 (standardised) on toy:checkerboard.
    torch.manual_seed(0)
    net = mlp.MLPDenoiser(mlp.MLPConfig())
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(64, 2), torch.full((64,), 999)
    with torch.no_grad():
        small, big = net(10 * x, t).norm(dim=1), net(100 * x, t).norm(dim=1)
    assert (big / small).median() > 5


def test_mlp_classes_and_null_label():
    torch.manual_seed(0)
    net = mlp.MLPDenoiser(mlp.MLPConfig(num_classes=8, depth=2))
    for p in net.parameters():  # zero-initialised layers would hide the conditioning
        torch.nn.init.normal_(p, std=0.3)
    assert net.class_emb.num_embeddings == 9  # 8 classes + the null class at index 8, as the UNet
    x, t = torch.randn(4, 2), torch.full((4,), 100)
    out0, out1 = net(x, t, torch.zeros(4, dtype=torch.long)), net(x, t, torch.ones(4, dtype=torch.long))
    assert (out0 - out1).abs().max() > 1e-3
    null = net(x, t, torch.full((4,), 8))
    assert torch.equal(net(x, t), null)  # y=None is the null class
    with pytest.raises(ValueError, match="0..8"):
        net(x, t, torch.full((4,), 9))
    with pytest.raises(ValueError, match="no classes"):
        mlp.MLPDenoiser(mlp.MLPConfig())(x, t, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("field, value", [("hidden", 0), ("depth", -1), ("t_dim", 1), ("num_classes", 0),
                                          ("norm", "batch"), ("dropout", 1.0), ("prediction", "score"),
                                          ("dim", 2.5), ("hidden", True)])
def test_mlp_config_validation_names_the_field(field, value):
    cfg = mlp.MLPConfig(**{field: value})
    with pytest.raises(ValueError, match=f"^{field}: "):
        cfg.validate()
    with pytest.raises(ValueError, match=f"^{field}: "):
        mlp.MLPDenoiser(cfg)


def test_mlp_config_round_trip():
    cfg = mlp.MLPConfig(hidden=64, depth=2, num_classes=3, norm="none")
    assert mlp.MLPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        mlp.MLPConfig.from_dict({**cfg.to_dict(), "width": 3})


def test_mlp_training_reduces_the_loss(schedule):
    torch.manual_seed(0)
    ps = points.make_toy("toy:8gaussians", n=4000, seed=0)
    x0_all = torch.from_numpy(points.Standardiser.fit(ps.points).forward(ps.points)).float()
    net = mlp.MLPDenoiser(mlp.MLPConfig(hidden=128, depth=3))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sab = schedule.sqrt_alpha_bars.float()
    s1ab = schedule.sqrt_one_minus_alpha_bars.float()
    T = len(sab)
    # a fixed evaluation batch, scored before and after training
    g = torch.Generator().manual_seed(1)
    ev_x0 = x0_all[torch.randint(0, len(x0_all), (4096,), generator=g)]
    ev_t = torch.randint(0, T, (4096,), generator=g)
    ev_eps = torch.randn(ev_x0.shape, generator=g)
    ev_x_t = sab[ev_t, None] * ev_x0 + s1ab[ev_t, None] * ev_eps

    def eval_loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(net(ev_x_t, ev_t), ev_eps).item()

    before = eval_loss()
    losses = []
    for step in range(300):  # Algorithm 1
        x0 = x0_all[torch.randint(0, len(x0_all), (256,))]
        t = torch.randint(0, T, (256,))
        eps = torch.randn_like(x0)
        x_t = sab[t, None] * x0 + s1ab[t, None] * eps
        loss = torch.nn.functional.mse_loss(net(x_t, t), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = eval_loss()
    assert before == pytest.approx(1.0, abs=0.05)  # ε̂ starts at 0 (zero-initialised output): the loss is E[ε²] = 1
    assert after / before < 0.4
    assert np.mean(losses[-50:]) / losses[0] < 0.6


# ---- metrics --------------------------------------------------------------------------------------------------------

def test_energy_distance():
    a = points.make_toy("toy:8gaussians", n=1000, seed=0).points
    assert metrics2d.energy_distance(a, a) == 0.0
    assert metrics2d.energy_distance(a, a[::-1].copy()) < 1e-12
    values = [metrics2d.energy_distance(a, a + np.float32([d, 0])) for d in (0.1, 0.5, 1.0, 2.0)]
    assert all(v2 > v1 > 0 for v1, v2 in zip(values, values[1:]))
    # one point each: 2‖x − y‖
    assert metrics2d.energy_distance([[0, 0]], [[3, 4]]) == pytest.approx(10.0)


def test_sliced_wasserstein_of_a_shift():
    a = points.make_toy("toy:moons", n=1500, seed=0).points.astype(np.float64)
    for d in (0.5, 2.0):
        b = a + np.array([d, 0.0])
        # W_p of a 1-D set and its copy shifted by c is |c|; over directions φ, c = d cos φ.
        assert metrics2d.sliced_wasserstein(a, b, 64, seed=1, p=2) == pytest.approx(d / math.sqrt(2), rel=1e-3)
        assert metrics2d.sliced_wasserstein(a, b, 64, seed=1, p=1) == pytest.approx(2 * d / math.pi, rel=1e-3)
    assert metrics2d.sliced_wasserstein(a, a, 16) == 0.0
    # different sizes: a set against itself repeated is 0; in 5-D a shift is still seen
    assert metrics2d.sliced_wasserstein(a, np.concatenate([a, a]), 16) < 1e-12
    z = np.random.default_rng(0).normal(size=(500, 5))
    assert metrics2d.sliced_wasserstein(z, z + 1.0, 256, seed=0) == pytest.approx(1.0, rel=0.15)


def test_mode_shares_and_data_floor():
    ps = points.make_toy("toy:8gaussians", n=4000, seed=4)
    ms = metrics2d.mode_shares(ps.points, ps.centres, ps.sigma, k=3)
    # in 2-D 98.9 % of a Gaussian's mass lies within 3σ (see test_eight_gaussians_points_lie_in_their_own_mode)
    assert ms.in_mode >= 0.985 and ms.all_present
    assert metrics2d.mode_shares(ps.points, ps.centres, ps.sigma, k=3.5).in_mode >= 0.99
    assert np.all(np.abs(ms.shares - ms.in_mode / 8) < 0.03)
    collapsed = ps.points[ps.labels < 7]  # one mode dropped
    assert not metrics2d.mode_shares(collapsed, ps.centres, ps.sigma).all_present
    off = metrics2d.mode_shares(np.zeros((10, 2)), ps.centres, ps.sigma)
    assert off.off_mode == 1.0 and off.in_mode == 0.0
    floor = metrics2d.data_floor(ps.points, 1000, seed=0)
    assert 0 < floor < metrics2d.energy_distance(ps.points[:1000], ps.points[1000:2000] + np.float32([0.3, 0]))
    assert metrics2d.data_floor(ps.points, 1000, 0, metrics2d.sliced_wasserstein, n_projections=32) > 0
    with pytest.raises(ValueError, match="two disjoint draws"):
        metrics2d.data_floor(ps.points, 3000)
