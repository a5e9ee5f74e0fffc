"""The autoencoder and latent diffusion: shapes, reconstruction, scale, latent = pixel math, checkpoints, CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_studio.core.nets.autoencoder import Autoencoder, AutoencoderConfig
from diffusion_studio.core.train.autoencoder import (
    AETrainConfig, AutoencoderTrainer, evaluate_psnr, measure_scale,
)
from diffusion_studio.core.io.autoencoder_io import fingerprint, load_autoencoder, save_autoencoder
from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.train.recipe import recipe_for
from diffusion_studio.core.errors import CheckpointError
from diffusion_studio.core.train.latent import LatentTrainer, encode_dataset
from diffusion_studio.core.io.space import LatentSpace, PixelSpace, space_from_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.core.nets.unet import preset_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(base_channels=8, groups=4)


def blobs(n: int = 64, size: int = 16, seed: int = 0) -> TensorImages:
    """Soft coloured discs on a plain background: structured images a tiny autoencoder can learn in seconds."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cx, cy = torch.rand(n, generator=g) * size, torch.rand(n, generator=g) * size
    r = 2 + torch.rand(n, generator=g) * size / 4
    d = ((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2).sqrt()
    mask = torch.sigmoid((r[:, None, None] - d) * 2.0)  # (n, H, W)
    ink = torch.rand(n, 3, generator=g) * 2 - 1
    bg = torch.rand(n, 3, generator=g) * 2 - 1
    x = bg[:, :, None, None] + (ink - bg)[:, :, None, None] * mask[:, None]
    return TensorImages(x.clamp(-1, 1), spec="blobs")


@pytest.fixture(scope="module")
def trained():
    """A tiny autoencoder (f = 2) trained for a few seconds on 16 px blobs, with its data and scale factor."""
    data = blobs(64)
    cfg = AutoencoderConfig(image_size=16, factor=2, latent_channels=4, **TINY)
    tr = AutoencoderTrainer(cfg, data, AETrainConfig(steps=100, batch_size=16, lr=1e-2, warmup_steps=10, loss="mse",
                                                     device="cpu", precision="fp32", ema_decay=0.0, seed=0))
    for _ in tr.run():
        pass
    return tr.ema, data, measure_scale(tr.ema, data)


# ---- shapes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("size", [8, 16, 24])
@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_decoder_shapes_for_every_factor_and_size(factor, size, channels):
    cfg = AutoencoderConfig(image_size=size, image_channels=channels, factor=factor, latent_channels=3, **TINY)
    ae = Autoencoder(cfg)
    x = torch.rand(2, channels, size, size) * 2 - 1
    mean, logvar = ae.moments(x)
    assert mean.shape == logvar.shape == (2, 3, size // factor, size // factor)
    assert ae.decode(mean).shape == x.shape
    rec, m, _ = ae(x)
    assert rec.shape == x.shape and m.shape == mean.shape


def test_sizes_not_divisible_by_the_factor_are_refused_clearly():
    with pytest.raises(ValueError, match=r"image_size: 18 is not divisible by the downsampling factor 4"):
        AutoencoderConfig(image_size=18, factor=4).validate()
    with pytest.raises(ValueError, match="factor: must be one of 2, 4, 8"):
        AutoencoderConfig(factor=3).validate()
    ae = Autoencoder(AutoencoderConfig(image_size=16, factor=8, **TINY))
    with pytest.raises(ValueError, match=r"encode: size 12x12 is not divisible by the downsampling factor 8"):
        ae.encode(torch.zeros(1, 3, 12, 12))


# ---- training, reconstruction and scale -----------------------------------------------------------------------------
def test_trained_autoencoder_beats_the_mean_image_by_a_wide_margin(trained):
    model, data, _ = trained
    x = data.images
    baseline = float(F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x))  # "identity of the mean"
    with torch.no_grad():
        rec = model.decode(model.encode(x)).clamp(-1, 1)
    mse = float(F.mse_loss(rec, x))
    assert mse < 0.25 * baseline, (mse, baseline)
    assert evaluate_psnr(model, data) == pytest.approx(10 * math.log10(4 / mse), abs=0.05)


def test_scale_factor_makes_the_encoded_training_set_unit_std(trained):
    model, data, scale = trained
    with torch.no_grad():  # encoded one image at a time, independently of encode_all's batching
        z = torch.cat([model.encode(data.images[i:i + 1]) for i in range(len(data))])
    raw_std = float(z.std())
    assert abs(raw_std - 1) > 0.05  # the scale has work to do
    assert float((z * scale).std()) == pytest.approx(1.0, abs=1e-3)
    space = LatentSpace(model, scale, "0" * 64)
    assert float(encode_dataset(space, data).images.std()) == pytest.approx(1.0, abs=1e-3)


def test_decode_inverts_the_scaling(trained):
    model, data, scale = trained
    space = LatentSpace(model, scale, "0" * 64)
    x = data.images[:4]
    with torch.no_grad():
        direct = model.decode(model.encode(x)).clamp(-1, 1)
    assert torch.allclose(space.decode(space.encode(x)), direct, atol=1e-5)
    assert torch.allclose(PixelSpace().decode(PixelSpace().encode(x)), x)


# ---- latent diffusion is pixel diffusion on the latent tensor -------------------------------------------------------
def _trainer_pair(trained, tmp_path):
    model, data, scale = trained
    space = LatentSpace(model, scale, fingerprint(model.config, model.state_dict(), scale), "test-ae")
    latents = encode_dataset(space, data)
    schedule = NoiseSchedule.create("linear", 100)
    mc = preset_config("tiny", 8, 4)
    cfg = TrainConfig(steps=3, batch_size=8, seed=3, device="cpu", precision="fp32", channels_last=False,
                      preview_every=0, checkpoint_every=0)
    lat = LatentTrainer(mc, schedule, latents, cfg, out=tmp_path / "lat" / "checkpoint.json", space=space)
    pix = Trainer(mc, schedule, TensorImages(latents.images.clone()), cfg)
    return space, latents, lat, pix


def test_latent_training_is_the_pixel_math_on_the_same_tensor(trained, tmp_path):
    space, latents, lat, pix = _trainer_pair(trained, tmp_path)
    for a, b in zip(lat.run(), pix.run()):
        assert a.loss == pytest.approx(b.loss, rel=1e-4, abs=1e-6)
    for p, q in zip(lat.model.parameters(), pix.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    # q(z_t | z_0) is the closed form on the latent tensor
    s = lat.schedule
    z0, eps, t = latents.images[:4], torch.randn(4, 4, 8, 8), torch.tensor([0, 10, 50, 99])
    from diffusion_studio.core.diffusion.forward import q_sample

    expected = s.alpha_bars[t].sqrt().view(-1, 1, 1, 1) * z0 + (1 - s.alpha_bars[t]).sqrt().view(-1, 1, 1, 1) * eps
    assert torch.allclose(q_sample(s, z0, t, eps), expected.float(), atol=1e-5)
    # previews come back decoded: image-sized
    assert lat.preview(2).shape == (2, 3, 16, 16)


def test_latent_checkpoint_round_trips_and_refuses_another_autoencoder(trained, tmp_path):
    space, latents, lat, _ = _trainer_pair(trained, tmp_path)
    for _ in lat.run():
        pass
    path = lat.save()
    ckpt = load_checkpoint(path)
    back = space_from_checkpoint(ckpt)
    assert back.is_latent and back.fingerprint == space.fingerprint and back.scale_factor == space.scale_factor
    z = torch.randn(2, 4, 8, 8)
    assert torch.allclose(back.decode(z), space.decode(z), atol=1e-6)
    # the same autoencoder, saved and named explicitly, is accepted; another one is refused in one line
    model, data, scale = trained
    save_autoencoder(tmp_path / "same", model, scale)
    assert space_from_checkpoint(ckpt, str(tmp_path / "same")).fingerprint == space.fingerprint
    other = Autoencoder(model.config)
    save_autoencoder(tmp_path / "other", other, 1.0)
    with pytest.raises(CheckpointError, match="refusing to decode with a different autoencoder") as err:
        space_from_checkpoint(ckpt, str(tmp_path / "other"))
    assert "\n" not in str(err.value)
    # a pixel model takes no autoencoder
    pix_ckpt = load_checkpoint(_pixel_checkpoint(tmp_path))
    assert not space_from_checkpoint(pix_ckpt).is_latent
    with pytest.raises(CheckpointError, match="pixel-space model"):
        space_from_checkpoint(pix_ckpt, str(tmp_path / "same"))
    # edited embedded weights no longer match the fingerprint
    ckpt.tensors["autoencoder"]["decoder.0.bias"] = ckpt.tensors["autoencoder"]["decoder.0.bias"] + 0.1
    with pytest.raises(CheckpointError, match="does not match its fingerprint"):
        space_from_checkpoint(ckpt)


def _pixel_checkpoint(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=4, device="cpu", precision="fp32", preview_every=0, checkpoint_every=0)
    tr = Trainer(preset_config("tiny", 8, 1), NoiseSchedule.create("linear", 50), TensorImages(torch.zeros(8, 1, 8, 8)),
                 cfg, out=tmp_path / "pix" / "checkpoint.json")
    return tr.save()


def test_autoencoder_files_round_trip_and_bad_ones_are_refused(trained, tmp_path):
    model, data, scale = trained
    path = save_autoencoder(tmp_path / "ae", model, scale, {"note": "test"})
    ae = load_autoencoder(tmp_path / "ae")
    assert ae.scale_factor == scale and ae.fingerprint == fingerprint(model.config, model.state_dict(), scale)
    x = data.images[:3]
    with torch.no_grad():
        assert torch.allclose(ae.model.decode(ae.model.encode(x)), model.decode(model.encode(x)), atol=1e-6)
    meta = json.loads(path.read_text())
    meta["autoencoder"]["factor"] = 5
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "autoencoder.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="autoencoder: factor: must be one of"):
        load_autoencoder(bad)
    (bad / "autoencoder.json").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="pickle"):
        load_autoencoder(bad)
    with pytest.raises(CheckpointError, match="not an autoencoder"):
        load_autoencoder(_pixel_checkpoint(tmp_path))


# ---- the command line, end to end -----------------------------------------------------------------------------------
def test_cli_train_autoencoder_then_latent_train_then_sample(tmp_path, capsys):
    from PIL import Image

    from diffusion_studio.cli import main

    ae_dir, run, out = tmp_path / "ae", tmp_path / "run", tmp_path / "samples"
    assert main(["train-autoencoder", "--data", "builtin:shapes", "--size", "16", "--factor", "4",
                 "--base-channels", "8", "--steps", "4", "--batch", "8", "--out", str(ae_dir), "-q"]) == 0
    said = capsys.readouterr().out
    assert "latent scale factor" in said and "held-out" in said
    assert main(["train", "--data", "builtin:shapes", "--autoencoder", str(ae_dir), "--steps", "3", "--batch", "8",
                 "--out", str(run), "-q", "--precision", "fp32"]) == 0
    said = capsys.readouterr().out
    assert f"model     {recipe_for(16)['model']}" in said and "4x4x4" in said  # the recipe of the 16-px images
    assert main(["sample", "--model", str(run), "--n", "3", "--steps", "2", "--out", str(out), "--gif",
                 str(tmp_path / "r.gif"), "-q", "--precision", "fp32"]) == 0
    files = sorted(out.glob("sample_*.png"))
    assert len(files) == 3
    assert Image.open(files[0]).size == (16, 16) and Image.open(files[0]).mode == "RGB"
    assert (tmp_path / "r.gif").stat().st_size > 0
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert "space      latent" in capsys.readouterr().out
    assert main(["info", str(ae_dir)]) == 0
    assert "fingerprint" in capsys.readouterr().out
    # --init continues from a trained autoencoder (its settings; a differing one is a usage error)
    first = load_autoencoder(ae_dir)
    assert main(["train-autoencoder", "--data", "builtin:shapes", "--init", str(ae_dir), "--steps", "2", "--batch", "8",
                 "--out", str(tmp_path / "ae2"), "-q"]) == 0
    second = load_autoencoder(tmp_path / "ae2")
    assert second.meta["data"]["init"]["fingerprint"] == first.fingerprint and second.config == first.config
    capsys.readouterr()
    assert main(["train-autoencoder", "--data", "builtin:shapes", "--init", str(ae_dir), "--factor", "2",
                 "--steps", "1", "--out", str(tmp_path / "ae3"), "-q"]) == 2
    assert "--factor" in capsys.readouterr().err
    # a --size other than the autoencoder's is a usage error naming the flag
    assert main(["train", "--data", "builtin:shapes", "--autoencoder", str(ae_dir), "--size", "32", "--steps", "1",
                 "--out", str(tmp_path / "run2"), "-q"]) == 2
    assert "--size" in capsys.readouterr().err


def test_cli_text_conditioned_latent_model_samples_a_prompt(tmp_path, capsys):
    """--text and --autoencoder together: captions cross-attend into the latent UNet; a prompt samples decoded PNGs."""
    from PIL import Image

    from diffusion_studio.cli import main

    ae_dir, run, out = tmp_path / "ae", tmp_path / "run", tmp_path / "samples"
    assert main(["train-autoencoder", "--data", "builtin:shapes", "--size", "16", "--factor", "4",
                 "--base-channels", "8", "--steps", "2", "--batch", "8", "--out", str(ae_dir), "-q"]) == 0
    assert main(["train", "--data", "builtin:shapes", "--autoencoder", str(ae_dir), "--text", "--steps", "2",
                 "--batch", "8", "--out", str(run), "-q", "--precision", "fp32"]) == 0
    ckpt = load_checkpoint(run / "checkpoint.json")
    assert ckpt.model_config.text_encoder and ckpt.model_config.in_channels == 4 and "latent" in ckpt.meta
    assert main(["sample", "--model", str(run), "--prompt", "a red star", "--guidance", "3", "--n", "2", "--steps",
                 "2", "--out", str(out), "-q", "--precision", "fp32"]) == 0
    files = sorted(out.glob("sample_*.png"))
    assert len(files) == 2 and Image.open(files[0]).size == (16, 16) and Image.open(files[0]).mode == "RGB"
    capsys.readouterr()
    # a latent has no [−1, 1] range: --clip-x0 is refused in one line rather than crushing the latents
    assert main(["sample", "--model", str(run), "--prompt", "a red star", "--clip-x0", "--n", "1", "--steps", "2",
                 "--out", str(tmp_path / "clipped"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--clip-x0" in err and "latent" in err and len(err.splitlines()) == 1
    assert main(["info", str(run)]) == 0
    said = capsys.readouterr().out
    assert "space      latent" in said and "prompts through" in said
    # the app's sampling worker: per-word maps laid over the DECODED pictures (16 px here, not the 4-px latent), and
    # the Attention tab's "sample" tile is that picture, not an empty one
    import numpy as np

    from diffusion_studio.jobs.sampling import SamplingJob, load_factory, sampling_factory
    from diffusion_studio.gui.panels.sampling.text import crop

    gen = load_factory(run / "checkpoint.json", "run", "cpu")()
    try:
        next(gen)
    except StopIteration as stop:
        loaded = stop.value
    job = SamplingJob(steps=2, n_images=2, every=1, clip_x0=False, prompt="a red star", guidance=3.0)
    frames = [f for f in sampling_factory(loaded, job, precision="fp32")() if getattr(f, "attention", None)]
    last = frames[-1]
    assert last.attention.words == ["a", "red", "star"] and last.attention.maps.shape == (2, 3, 16, 16)
    tile = crop(last.x0, 1, last.attention.maps.shape[-1])
    assert tile.shape == (16, 16, 3) and np.array_equal(tile, last.x0[2:18, 20:36])


def test_shipped_latent_model_decodes_with_the_shipped_autoencoder():
    """builtin:shapes-latent embeds builtin:shapes-ae (same fingerprint) and samples 32 px RGB pictures."""
    from diffusion_studio.core.diffusion.eps import model_fn
    from diffusion_studio.core.diffusion.samplers import sample
    from diffusion_studio.resources import resolve_model_spec

    ckpt = load_checkpoint(resolve_model_spec("builtin:shapes-latent"))
    ae = load_autoencoder("builtin:shapes-ae")
    space = space_from_checkpoint(ckpt, ae)  # the shipped pair agrees; another autoencoder would be refused
    assert space.fingerprint == ae.fingerprint and ckpt.model_config.in_channels == ae.config.latent_channels
    fn = model_fn(ckpt.build_model("cpu"), "cpu", "fp32", condition=torch.tensor([3, 3]), guidance=2.0)
    z = sample(fn, ckpt.schedule, (2, 4, 8, 8), "ddim", steps=3, seed=0)
    x = space.decode(z)
    assert x.shape == (2, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1


def _ink(images: torch.Tensor) -> torch.Tensor:
    """Mean RGB (in [−1, 1]) of each image's pixels that stand out from its border's median colour."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=-1)
    bg = border.median(dim=-1).values[:, :, None, None]
    far = (images - bg).norm(dim=1, keepdim=True) > 0.5
    return (images * far).sum(dim=(2, 3)) / far.sum(dim=(2, 3)).clamp(min=1)


def test_shipped_text_model_draws_the_prompted_colour_through_the_cli(tmp_path, capsys):
    """builtin:shapes is the text-to-image latent model: it embeds builtin:shapes-ae, and `sample --prompt` writes
    32 px decoded pictures whose ink is the prompted colour."""
    import numpy as np
    from PIL import Image

    from diffusion_studio.cli import main
    from diffusion_studio.resources import resolve_model_spec

    ckpt = load_checkpoint(resolve_model_spec("builtin:shapes"))
    assert ckpt.model_config.text_encoder and space_from_checkpoint(ckpt).fingerprint == \
        load_autoencoder("builtin:shapes-ae").fingerprint
    inks = {}
    for prompt in ("a red star", "a blue circle"):
        out = tmp_path / prompt.replace(" ", "-")
        assert main(["sample", "--model", "builtin:shapes", "--prompt", prompt, "--n", "4", "--steps", "10",
                     "--out", str(out), "-q", "--precision", "fp32", "--seed", "1"]) == 0
        files = sorted(out.glob("sample_*.png"))
        assert len(files) == 4 and all(Image.open(f).size == (32, 32) for f in files)
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32))
                         .permute(2, 0, 1) / 127.5 - 1 for f in files])
        inks[prompt] = _ink(x)
    red, blue = inks["a red star"], inks["a blue circle"]
    assert (red[:, 0] > red[:, 1] + 0.5).all() and (red[:, 0] > red[:, 2] + 0.5).all(), red
    assert (blue[:, 2] > blue[:, 0] + 0.5).all(), blue
