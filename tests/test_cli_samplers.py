"""`sample` with today's samplers (issue 23): --sampler euler|heun|dpm++2m|unipc|euler_a, --timestep-spacing,
--karras and --x-T on pixel, latent, text and diffusers-folder models; the count of model evaluations; one-line
refusals of a bad x_T file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.core.diffusion import samplers
from diffusion_studio.core.io.models import open_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODELS = Path(__file__).parent / "fixtures" / "release2" / "models"


def _x_T(tmp_path: Path, model, n: int = 4, seed: int = 3) -> Path:
    mc = open_checkpoint(model).model_config
    x = torch.randn((n, mc.in_channels, mc.image_size, mc.image_size), generator=torch.Generator().manual_seed(seed))
    path = tmp_path / "xT.npy"
    np.save(path, x.numpy())
    return path


def _images(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(f)) for f in sorted(folder.glob("sample_*.png"))]


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    pytest.importorskip("diffusers")
    from test_convert_diffusers import make_folder

    return make_folder(tmp_path_factory.mktemp("dfs"), "ddpm-cifar10-32", sample_size=8)[0]


def test_the_cli_offers_every_sampler_the_engine_has():
    from diffusion_studio.cli.sample import SAMPLERS, SPACINGS

    assert SAMPLERS == samplers.SAMPLERS and SPACINGS == samplers.SPACINGS


@pytest.mark.parametrize("name, extra", [("cli_run", []), ("latent_run", []),
                                         ("text_run", ["--prompt", "a red circle", "--guidance", "3"])])
def test_dpm_solver_trailing_from_a_given_x_T(name, extra, tmp_path, capsys):
    """The issue's command on pixel, latent and text models: 4 images from xT.npy, 10 model evaluations."""
    model = MODELS / name
    x_T = _x_T(tmp_path, model)
    out = tmp_path / "out"
    code = cli.main(["sample", "--model", str(model), "--sampler", "dpm++2m", "--timestep-spacing", "trailing",
                     "--steps", "10", "--x-T", str(x_T), "--n", "4", "--out", str(out), "--quiet", *extra])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert "dpm++2m, 10 steps, 10 model evaluations per image" in said.out
    assert len(_images(out)) == 4


def test_dpm_solver_on_a_diffusers_folder(diffusers_folder, tmp_path, capsys):
    x_T = _x_T(tmp_path, diffusers_folder, n=2)
    out = tmp_path / "out"
    assert cli.main(["sample", "--model", str(diffusers_folder), "--sampler", "dpm++2m", "--timestep-spacing",
                     "trailing", "--steps", "10", "--x-T", str(x_T), "--n", "2", "--out", str(out), "--quiet"]) == 0
    assert len(_images(out)) == 2


def test_x_T_is_the_start_the_seed_would_draw(tmp_path, capsys):
    """x_T drawn from seed S by the samplers' own rule gives the same pictures as --seed S (diffusers' latents=);
    another x_T gives other pictures. Batches take consecutive rows of the file."""
    model = MODELS / "cli_run"
    mc = open_checkpoint(model).model_config
    x = torch.randn((4, mc.in_channels, mc.image_size, mc.image_size), generator=torch.Generator().manual_seed(11))
    np.save(tmp_path / "same.npy", x.numpy())
    np.save(tmp_path / "other.npy", (-x).numpy())
    common = ["sample", "--model", str(model), "--sampler", "heun", "--steps", "4", "--n", "4", "--quiet"]
    assert cli.main([*common, "--seed", "11", "--out", str(tmp_path / "seed")]) == 0
    assert "heun, 4 steps, 7 model evaluations per image" in capsys.readouterr().out  # 2N − 1
    assert cli.main([*common, "--x-T", str(tmp_path / "same.npy"), "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*common, "--x-T", str(tmp_path / "same.npy"), "--batch", "2", "--out", str(tmp_path / "b")]) == 0
    assert cli.main([*common, "--x-T", str(tmp_path / "other.npy"), "--out", str(tmp_path / "c")]) == 0
    seed, a, b, c = (_images(tmp_path / d) for d in ("seed", "a", "b", "c"))
    assert all(np.array_equal(p, q) for p, q in zip(seed, a))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm++2m", "unipc", "euler_a"])
@pytest.mark.parametrize("spacing, karras", [("linspace", False), ("leading", False), ("trailing", True)])
def test_every_ode_sampler_and_spacing_writes_images(sampler, spacing, karras, tmp_path):
    args = ["sample", "--model", str(MODELS / "cli_run"), "--sampler", sampler, "--steps", "3", "--n", "2",
            "--timestep-spacing", spacing, "--out", str(tmp_path / "o"), "--quiet"]
    if karras and sampler != "euler_a":
        args.append("--karras")
    assert cli.main(args) == 0
    assert len(_images(tmp_path / "o")) == 2


def _refused(tmp_path, capsys, array_or_bytes, needle: str, name="bad.npy") -> None:
    path = tmp_path / name
    if isinstance(array_or_bytes, bytes):
        path.write_bytes(array_or_bytes)
    else:
        np.save(path, array_or_bytes, allow_pickle=True)
    code = cli.main(["sample", "--model", str(MODELS / "cli_run"), "--sampler", "euler", "--steps", "2", "--n", "2",
                     "--x-T", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"diffusion-studio: error: argument --x-T: {name}: ") and needle in err[0], err[0]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize("payload, needle", [
    (np.zeros((3, 1, 8, 8), np.float32), "shape 3×1×8×8; this needs 2×1×8×8"),
    (np.zeros((2, 1, 8, 8), np.int64), "dtype int64: must be a float array"),
    (np.array([{"x": 1}, None], dtype=object), "holds Python objects"),
    (np.full((2, 1, 8, 8), np.nan, np.float32), "NaN or infinite"),
    (b"\x80\x04\x95 a pickle, not an array", "not a .npy array file"),
])
def test_a_bad_x_T_is_refused_in_one_line(payload, needle, tmp_path, capsys):
    _refused(tmp_path, capsys, payload, needle)


def test_an_x_T_whose_header_claims_more_than_its_data_is_refused(tmp_path, capsys):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 1, 8, 8), np.float32))
    _refused(tmp_path, capsys, good.read_bytes()[:-100], "bytes of data where its header promises")


def test_option_mistakes_are_usage_errors(tmp_path, capsys):
    for args, needle in ((["--sampler", "ddim", "--karras"], "argument --karras: for the ODE samplers"),
                         (["--sampler", "heun", "--eta", "0.5"], "argument --eta: only used by --sampler ddim"),
                         (["--sampler", "dpm++2m", "--timestep-spacing", "middle"], "invalid choice")):
        code = cli.main(["sample", "--model", str(MODELS / "cli_run"), "--out", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err
        assert code == 2 and needle in err, err
