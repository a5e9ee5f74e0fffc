"""Sampling a class-conditional model with no --label draws one of each class in turn (issue 25): image k of the
whole run is class k mod C however --batch cuts the run, each image the same pixels as that class asked alone; the
run says so; 'none' still draws unconditionally, and --guidance without a class is refused as before."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.jobs.sampling import SamplingJob, job_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODELS = Path(__file__).parent / "fixtures" / "release2" / "models"
CLASS_MODEL = "builtin:mnist"                            # the shipped class model: its labels change the pictures
TINY_CLASS_MODEL = MODELS / "cli_class" / "checkpoint.json"  # micro, 8 px, 10 classes (builtin:digits), T = 50
PLAIN_MODEL = MODELS / "cli_run" / "checkpoint.json"     # unconditional


def test_labels_continue_across_batches():
    """Batches of 4, 4 and 3 from first = 0, 4, 8 label images 0 … 10 as 0 … 9, 0 — not 0 1 2 3 0 1 2 3 …"""
    got = torch.cat([job_labels(SamplingJob(n_images=n, label=-1, first=first), 10)
                     for n, first in ((4, 0), (4, 4), (3, 8))])
    assert got.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert job_labels(SamplingJob(n_images=3, label=7, first=5), 10).tolist() == [7, 7, 7]
    assert job_labels(SamplingJob(n_images=3, label=None), 10) is None


def _run(tmp_path, capsys, name: str, *args: str) -> tuple[list[np.ndarray], str]:
    out = tmp_path / name
    code = cli.main(["sample", "--model", str(CLASS_MODEL), "--out", str(out), "--steps", "3", "--precision", "fp32",
                     "--seed", "4", *args])
    text = capsys.readouterr()
    assert code == 0, text.err
    files = sorted(out.glob("sample_*.png"))
    return [np.asarray(Image.open(f), dtype=np.int16) for f in files], text.out


def test_default_is_one_of_each_class_and_matches_each_class_alone(tmp_path, capsys):
    each, said = _run(tmp_path, capsys, "each", "--n", "12", "--batch", "12")
    assert len(each) == 12
    assert "one of each in turn (image k draws class k mod 10), guidance w = 2" in said
    assert "precision fp32" in said
    for k in (0, 3, 9, 10):  # image k asked as class k mod 10 alone, in the same batch position and seed
        alone, _ = _run(tmp_path, capsys, f"c{k}", "--n", "12", "--batch", "12", "--label", str(k % 10))
        assert np.abs(alone[k] - each[k]).max() <= 1, k  # ≤ 1 grey level: the same pixels up to PNG rounding
    # 'each' spelled out is the default; 'none' is unconditional and draws other pictures
    spelled, _ = _run(tmp_path, capsys, "spelled", "--n", "12", "--batch", "12", "--label", "each")
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(each, spelled))
    plain, said = _run(tmp_path, capsys, "none", "--n", "12", "--batch", "12", "--label", "none")
    assert "one of each" not in said
    assert sum(np.abs(a - b).mean() > 2 for a, b in zip(each, plain)) >= 6


def test_classes_do_not_restart_in_each_batch(tmp_path, capsys):
    """--batch 4: image 5 is class 5 (batch 2, position 1), as in a run of class 5 alone whose batch 2 has seed 5."""
    each, _ = _run(tmp_path, capsys, "b4", "--n", "10", "--batch", "4")
    five, _ = _run(tmp_path, capsys, "five", "--n", "10", "--batch", "4", "--label", "5")
    assert np.abs(each[5] - five[5]).max() <= 1
    one, _ = _run(tmp_path, capsys, "one", "--n", "10", "--batch", "4", "--label", "1")
    assert np.abs(each[5] - one[5]).mean() > 2  # not class 1, which a restart at each batch would have drawn


@pytest.mark.parametrize("model, args, needle", [
    (PLAIN_MODEL, ["--guidance", "3"], "argument --guidance: needs a class"),
    (PLAIN_MODEL, ["--label", "each"], "not class-conditional"),
    (TINY_CLASS_MODEL, ["--label", "none", "--guidance", "2"], "argument --guidance: needs a class"),
    (TINY_CLASS_MODEL, ["--label", "eleven"], "each or none"),
])
def test_refusals(tmp_path, capsys, model, args, needle):
    code = cli.main(["sample", "--model", str(model), "--out", str(tmp_path / "s"), "--steps", "2", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert not (tmp_path / "s").exists()


def test_the_quality_lab_draws_a_class_model_as_the_cli_does(monkeypatch, tmp_path):
    """The Quality tab scores a class-conditional model on what `sample` draws by default: one of each class in
    turn, continued across its batches, guided at w = 2."""
    from diffusion_studio.core.io.models import load_model
    from diffusion_studio.jobs import quality

    monkeypatch.setenv("DIFFUSION_STUDIO_CACHE", str(tmp_path))
    loaded = load_model(TINY_CLASS_MODEL, "cpu", "cli_class")
    seen = []
    real = quality.final_images

    def spy(loaded, job, precision="auto", **kw):
        seen.append(job)
        return real(loaded, job, precision, **kw)

    monkeypatch.setattr(quality, "final_images", spy)
    judge = quality.judge_for(loaded)
    assert judge is not None  # trained on builtin:digits: the shipped digit classifier judges it
    points = list(quality.evaluate(loaded, judge, [("ddim", 2)], n=20, batch=8, use_cache=False))
    assert len(points) == 1 and points[0].n == 20
    assert [(j.label, j.guidance, j.first, j.n_images) for j in seen] == \
        [(-1, 2.0, 0, 8), (-1, 2.0, 8, 8), (-1, 2.0, 16, 4)]


def test_the_ideal_denoiser_stays_unconditional_unless_asked(tmp_path, capsys):
    """ideal:DATA has classes because its data does, not because anyone chose to condition: by default it draws the
    whole data's field (no label column); --label each asks for one of each class."""
    header = {}
    for name, extra in (("plain", []), ("each", ["--label", "each"])):
        code = cli.main(["sample", "--model", "ideal:toy:8gaussians", "--n", "16", "--steps", "5",
                         "--out", str(tmp_path / name), *extra])
        said = capsys.readouterr()
        assert code == 0, said.err
        header[name] = next(line for line in (tmp_path / name / "points.csv").read_text().splitlines()
                            if not line.startswith("#"))
        assert ("one of each in turn" in said.out) == (name == "each")
    assert header == {"plain": "x,y", "each": "x,y,label"}
