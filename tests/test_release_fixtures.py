"""What the round-two release wrote still opens (issue 21): run folders from `train` and from the app, an export, a
class, a text and a latent run, an autoencoder, a diffusers import, FID statistics and a feature net — written by
that release's code before the reorganisation (tests/fixtures/release2/make_fixtures.py says how) and read here by
today's. Each model draws the same pixels from the same seed as it did then."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_studio import cli
from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.io.space import space_from_checkpoint
from diffusion_studio.core.diffusion.samplers import sample
from diffusion_studio.core.diffusion.eps import model_fn

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FIXTURES = Path(__file__).parent / "fixtures" / "release2"
MODELS = FIXTURES / "models"
REF = json.loads((FIXTURES / "reference.json").read_text())
# The models are tiny fp32 nets: a change of formula or weights moves these values by 1e-2 or more, a different CPU's
# kernels by about 1e-6.
ATOL = 2e-4


def _first_values(name: str, **cond) -> np.ndarray:
    ckpt = load_checkpoint(MODELS / name)
    model = ckpt.build_model("cpu")
    mc = ckpt.model_config
    fn = model_fn(model, "cpu", "fp32", channels_last=False, schedule=ckpt.schedule, **cond)
    x = sample(fn, ckpt.schedule, (REF["n"], mc.in_channels, mc.image_size, mc.image_size), "ddim",
               steps=REF["steps"], seed=REF["seed"])
    return space_from_checkpoint(ckpt).decode(x).flatten()[:64].numpy()  # pixels: the identity


@pytest.mark.parametrize("name", ["cli_run", "exported", "latent_run", "imported", "gui_run"])
def test_a_release2_model_draws_the_same_pixels(name):
    np.testing.assert_allclose(_first_values(name), REF["first_values"][name], atol=ATOL, rtol=0)


def test_a_release2_class_model_draws_the_same_pixels():
    got = _first_values("cli_class", condition=torch.tensor([3, 5]), guidance=2.0)
    np.testing.assert_allclose(got, REF["first_values"]["cli_class"], atol=ATOL, rtol=0)


def test_a_release2_text_model_draws_the_same_pixels_for_a_prompt():
    from diffusion_studio.core.nets.text import get_encoder

    ckpt = load_checkpoint(MODELS / "text_run")
    cond = get_encoder(ckpt.model_config.text_encoder).encode(["a red circle"]).context(REF["n"])
    np.testing.assert_allclose(_first_values("text_run", condition=cond, guidance=3.0),
                               REF["first_values"]["text_run"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["cli_run", "exported", "cli_class", "latent_run", "text_run", "imported",
                                  "gui_run", "autoencoder"])
def test_info_reads_every_release2_model(name, capsys):
    assert cli.main(["info", str(MODELS / name)]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cli_run", "gui_run"])
def test_a_release2_run_resumes_one_more_step(name, tmp_path, capsys):
    run = tmp_path / name
    shutil.copytree(MODELS / name, run)
    assert cli.main(["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"]) == 0, capsys.readouterr()
    assert load_checkpoint(run).step == 3


def test_a_release2_prompt_samples_through_the_cli(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sample", "--model", str(MODELS / "text_run"), "--prompt", "a red circle", "--n", "2",
                     "--steps", "2", "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert len(list(out.glob("sample_*.png"))) == 2


def test_release2_autoencoder_fid_stats_and_feature_net_load():
    from diffusion_studio.core.io.autoencoder_io import load_autoencoder
    from diffusion_studio.core.metrics.features import load_feature_extractor
    from diffusion_studio.core.metrics.fid import FIDStats

    ae = load_autoencoder(MODELS / "autoencoder")
    z = ae.model.encode(torch.zeros(1, 3, 8, 8))
    assert z.shape == (1, 2, 4, 4) and ae.model.decode(z).shape == (1, 3, 8, 8)
    a, b = FIDStats.load(FIXTURES / "fid_stats.npz"), FIDStats.load(FIXTURES / "fid_stats.safetensors")
    assert a.n == b.n == 40 and a.extractor == "fixture"
    np.testing.assert_array_equal(a.mu, b.mu)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    net = load_feature_extractor(MODELS / "features")
    assert net.features(torch.zeros(2, 1, 8, 8)).shape == (2, 8) and net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
