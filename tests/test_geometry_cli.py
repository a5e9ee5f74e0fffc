"""The geometry lab on the command line (issue 22): `train --data toy:NAME` and `--data points.csv` (any units),
`sample` writing points.csv and points.png in the data's own units, `info` saying it is a 2-D model, the ideal denoiser
as `--model ideal:SPEC` (it returns training points), and the one-line refusals of bad point files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio import cli
from diffusion_studio.core.metrics.points import mode_shares
from diffusion_studio.data.points import EIGHT_GAUSSIANS_CENTRES, EIGHT_GAUSSIANS_SIGMA, make_toy
from diffusion_studio.data.points_csv import load_points_csv, save_points_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = "800"


def _run(*argv) -> None:
    assert cli.main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    _run("train", "--data", "toy:8gaussians", "--steps", STEPS, "--out", out, "--quiet", "--threads", "1")
    return out


def test_a_toy_trains_and_samples_points_on_its_modes(toy_run, tmp_path, capsys):
    _run("sample", "--model", toy_run, "--n", "2000", "--out", tmp_path / "s", "--gif", tmp_path / "s" / "a.gif",
         "--quiet")
    said = capsys.readouterr().out
    assert "wrote 2,000 points" in said and "points.csv" in said
    points, problems = load_points_csv(tmp_path / "s" / "points.csv")
    assert problems == [] and points.points.shape == (2000, 2)
    shares = mode_shares(points.points, EIGHT_GAUSSIANS_CENTRES, EIGHT_GAUSSIANS_SIGMA, k=3)
    assert shares.all_present and shares.in_mode >= 0.85, shares.describe()
    assert (tmp_path / "s" / "points.png").stat().st_size > 5000 and (tmp_path / "s" / "a.gif").exists()


def test_info_says_it_is_a_2d_model(toy_run, capsys):
    _run("info", toy_run)
    out = capsys.readouterr().out
    assert "a 2-D model" in out and "2-D points, standardised per axis" in out and "10,000 points" in out


def test_a_csv_in_odd_units_trains_and_samples_in_its_own_units(tmp_path, capsys):
    """8 Gaussians centred at (100, −50), 30 times larger: standardised inside, sampled back in those units."""
    base = make_toy("toy:8gaussians", n=4000, seed=3).points.astype(np.float64)
    odd = (base * 30 + np.array([100.0, -50.0])).astype(np.float32)
    csv = tmp_path / "odd.csv"
    save_points_csv(csv, odd)
    run = tmp_path / "run"
    _run("train", "--data", csv, "--steps", STEPS, "--out", run, "--quiet", "--threads", "1")
    _run("sample", "--model", run, "--n", "2000", "--out", tmp_path / "s", "--quiet")
    got, _ = load_points_csv(tmp_path / "s" / "points.csv")
    pts = got.points.astype(np.float64)
    assert np.allclose(pts.mean(0), [100.0, -50.0], atol=12.0), pts.mean(0)
    assert np.allclose(pts.std(0), odd.std(0), rtol=0.2), (pts.std(0), odd.std(0))
    shares = mode_shares(pts, EIGHT_GAUSSIANS_CENTRES * 30 + np.array([100.0, -50.0]), EIGHT_GAUSSIANS_SIGMA * 30)
    assert shares.all_present and shares.in_mode >= 0.85, shares.describe()


def test_bad_rows_are_named_and_the_rest_trains(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    good = "\n".join(f"{x:.3f},{y:.3f}" for x, y in make_toy("toy:moons", n=300).points)
    csv.write_text("x,y\n" + good + "\n1,oops\n2,3,4,5\nnan,1\n")
    _run("train", "--data", csv, "--steps", "20", "--out", tmp_path / "run", "--quiet", "--threads", "1")
    out = capsys.readouterr().out
    assert "data      " in out and "300 points" in out
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped) == 3 and "row 302: y is not a number" in skipped[0] and "bad.csv" in skipped[0]


@pytest.mark.parametrize("content, needle", [
    ("", "no points (the file is empty)"),
    ("x,y\n1,2\n", "only 1 point"),
    ("x,y\na,b\n", "no points (1 bad rows"),
])
def test_an_empty_or_one_point_set_is_refused_in_one_line(content, needle, tmp_path, capsys):
    csv = tmp_path / "few.csv"
    csv.write_text(content)
    code = cli.main(["train", "--data", str(csv), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "argument --data: " in err[0] and "few.csv" in err[0] and needle in err[0]


@pytest.mark.parametrize("args, needle", [
    (["--data", "toy:moons", "--size", "32"], "argument --size: not for 2-D points"),
    (["--data", "toy:moons", "--model", "tiny"], "argument --model: 2-D points train the mlp network"),
    (["--data", "builtin:digits", "--model", "mlp"], "argument --model mlp: for 2-D points"),
    (["--data", "toy:nonsense"], "argument --data: toy:nonsense"),
])
def test_image_options_on_points_and_point_options_on_images_are_usage_errors(args, needle, tmp_path, capsys):
    code = cli.main(["train", *args, "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err


def test_the_ideal_denoiser_returns_training_points(tmp_path, capsys):
    """DDIM with the ideal denoiser of 64 points lands within 1e-3 of training points (memorisation): it never
    generalises. (Points closer than the last step's noise, √(1 − ᾱ_1) = 0.01 standardised, would blend.)"""
    data = make_toy("toy:8gaussians", n=64, seed=3).points
    save_points_csv(tmp_path / "few.csv", data)
    _run("sample", "--model", f"ideal:{tmp_path / 'few.csv'}", "--n", "300", "--steps", "1000", "--out",
         tmp_path / "s", "--quiet")
    got, _ = load_points_csv(tmp_path / "s" / "points.csv")
    d = torch.cdist(torch.as_tensor(got.points, dtype=torch.float64), torch.as_tensor(data, dtype=torch.float64))
    assert float((d.min(1).values < 1e-3).double().mean()) >= 0.95  # the rest: two points closer than the noise
    assert len(torch.unique(d.argmin(1))) >= 40  # memorised, not collapsed onto a few points
