"""Diffusers DDPM folders opened as our own UNet + NoiseSchedule: ε and one DDPM step against diffusers itself."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is the oracle of these tests ([test] extra)")
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from diffusion_studio.core.io.models import open_checkpoint
from diffusion_studio.core.errors import CheckpointError  # noqa: E402
from diffusion_studio.core.diffusion.reverse import ddpm_step  # noqa: E402

# The architectures of the published google/ddpm-* UNets (their unet/config.json), at reduced width so a CPU test
# runs in a moment; everything that decides how weights map (block types, padding, embedding, eps) is theirs.
CIFAR = dict(block_out_channels=[16, 32, 32, 32], layers_per_block=2, sample_size=32,
             down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
             up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"])
LSUN = dict(block_out_channels=[8, 8, 16, 16, 32, 32], layers_per_block=2, sample_size=256,
            down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4)
COMMON = dict(act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
              flip_sin_to_cos=False, freq_shift=1, in_channels=3, out_channels=3, mid_block_scale_factor=1,
              norm_eps=1e-6, norm_num_groups=8, time_embedding_type="positional")
# The four 256-px models share one architecture: one is built at its full 256 px, the others at 64 px (same blocks).
CONFIGS = {"ddpm-cifar10-32": CIFAR, "ddpm-celebahq-256": {**LSUN, "sample_size": 64},
           "ddpm-church-256": {**LSUN, "sample_size": 64}, "ddpm-bedroom-256": {**LSUN, "sample_size": 64},
           "ddpm-cat-256": LSUN}


def make_folder(root, name: str, scheduler: dict | None = None, **overrides):
    torch.manual_seed(sum(map(ord, name)))
    unet = UNet2DModel(**{**COMMON, **CONFIGS[name], **overrides})
    with torch.no_grad():  # diffusers zero-initialises nothing we rely on, but make every weight count anyway
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sched = DDPMScheduler(**(scheduler or {"beta_schedule": "linear", "clip_sample": True,
                                           "variance_type": "fixed_small"}))
    folder = root / name
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return folder, unet.eval(), sched


@pytest.mark.parametrize("name", list(CONFIGS))
def test_eps_equals_diffusers(tmp_path, name):
    folder, unet, _ = make_folder(tmp_path, name)
    ckpt = open_checkpoint(folder)
    model = ckpt.build_model()
    size = CONFIGS[name]["sample_size"]
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 3, size, size, generator=gen)
    t = torch.tensor([0, 999]) if name.endswith("32") else torch.tensor([417, 1])
    with torch.no_grad():
        ours = model(x_t, t)
        theirs = unet(x_t, t).sample
    assert theirs.abs().max() > 0.1  # a real signal, not two zeros agreeing
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert ckpt.schedule.T == 1000 and ckpt.meta["sampling"] == {"variance": "beta_tilde", "clip_x0": True}


@pytest.mark.parametrize("variance_type,clip", [("fixed_small", True), ("fixed_large", False)])
def test_one_ddpm_step_equals_scheduler_step(tmp_path, variance_type, clip):
    folder, unet, sched = make_folder(tmp_path, "ddpm-cifar10-32", {"variance_type": variance_type,
                                                                      "clip_sample": clip})
    ckpt = open_checkpoint(folder)
    model, schedule, sampling = ckpt.build_model(), ckpt.schedule, ckpt.meta["sampling"]
    assert sampling == {"variance": {"fixed_small": "beta_tilde", "fixed_large": "beta"}[variance_type],
                        "clip_x0": clip}
    # diffusers keeps ᾱ in float32, where 1 − ᾱ_t cancels to ~3e-4 relative error at small t (5e-5 in x_{t−1} at
    # index 1); the oracle is its own step() run in float64 from the same betas.
    sched.alphas_cumprod = torch.cumprod(1.0 - sched.betas.double(), 0)
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for t in (999, 500, 1, 0):  # first and last steps included: the off-by-ones live there
        tt = torch.full((2,), t)
        with torch.no_grad():
            eps = model(x_t, tt)
            theirs = sched.step(unet(x_t, tt).sample.double(), t, x_t.double(),
                                generator=torch.Generator().manual_seed(t)).prev_sample.float()
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64).float()
        ours = ddpm_step(schedule, x_t, t, eps, noise=noise, variance=sampling["variance"],
                         clip_x0=sampling["clip_x0"]).x_prev
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_old_attention_names_load_too(tmp_path):
    # google/ddpm-* weights on the hub predate diffusers 0.14: query/key/value/proj_attn instead of to_q/to_k/to_v/to_out.0
    from safetensors.torch import load_file, save_file

    folder, unet, _ = make_folder(tmp_path, "ddpm-cifar10-32")
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for k, v in load_file(path).items():
        for new, old in renames.items():
            k = k.replace(new, old)
        state[k] = v
    assert any(".proj_attn." in k for k in state)
    save_file(state, path)
    x_t, t = torch.randn(1, 3, 32, 32), torch.tensor([300])
    with torch.no_grad():
        torch.testing.assert_close(open_checkpoint(folder).build_model()(x_t, t), unet(x_t, t).sample,
                                   atol=1e-5, rtol=1e-5)


def _edit_json(path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_refusals_name_the_file_and_key(tmp_path):
    folder, _, _ = make_folder(tmp_path, "ddpm-cifar10-32")

    def refused(make) -> str:
        target = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, target)
        make(target)
        with pytest.raises(CheckpointError) as e:
            open_checkpoint(target)
        msg = str(e.value)
        assert "\n" not in msg
        return msg

    def only_bin(d):
        st = d / "unet" / "diffusion_pytorch_model.safetensors"
        st.rename(st.with_suffix(".bin"))

    assert "diffusion_pytorch_model.bin: refused: .bin weights are pickles" in refused(only_bin)
    msg = refused(lambda d: _edit_json(d / "unet" / "config.json", _class_name="UNet2DConditionModel"))
    assert msg.startswith("config.json: _class_name: 'UNet2DConditionModel' is not supported")
    msg = refused(lambda d: _edit_json(d / "unet" / "config.json", class_embed_type="timestep"))
    assert msg.startswith("config.json: class_embed_type:")
    msg = refused(lambda d: _edit_json(d / "unet" / "config.json", time_embedding_type="fourier"))
    assert msg.startswith("config.json: time_embedding_type:")
    msg = refused(lambda d: _edit_json(d / "scheduler" / "scheduler_config.json", variance_type="learned_range"))
    assert msg.startswith("scheduler_config.json: variance_type: 'learned_range' is not supported")
    msg = refused(lambda d: _edit_json(d / "scheduler" / "scheduler_config.json", prediction_type="v_prediction"))
    assert msg.startswith("scheduler_config.json: prediction_type:")
    # weights that do not fit the config: refused before any tensor data is read
    msg = refused(lambda d: _edit_json(d / "unet" / "config.json", layers_per_block=1))
    assert msg.startswith("diffusion_pytorch_model.safetensors: ") and "unet/config.json implies" in msg
    msg = refused(lambda d: _edit_json(d / "model_index.json", vqvae=["diffusers", "VQModel"]))
    assert msg.startswith("model_index.json: vqvae:")


def test_schedule_kinds_match_diffusers_betas(tmp_path):
    from diffusion_studio.core.io.diffusers import schedule_and_sampling

    for kind in ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"):
        sched = DDPMScheduler(beta_schedule=kind, num_train_timesteps=200)
        ours, _ = schedule_and_sampling(dict(sched.config, _class_name="DDPMScheduler"), tmp_path / "s.json")
        assert ours.T == 200
        torch.testing.assert_close(ours.betas.float(), sched.betas.float(), atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(ours.alpha_bars.float(), sched.alphas_cumprod.float(), atol=1e-6, rtol=1e-5)


def test_cli_opens_imports_and_samples_a_diffusers_folder(tmp_path, capsys, monkeypatch):
    from diffusion_studio.cli import main
    from diffusion_studio.core.runtime import calibrate

    # Timing the layouts of a 256-px model on a batch of 16 is calibrate's business, and slow: fix the choice here.
    monkeypatch.setattr(calibrate, "choose", lambda *a, **k: calibrate.FastPath(False, "fp32", {}, "fixed"))
    folder, unet, _ = make_folder(tmp_path, "ddpm-cat-256", {"variance_type": "fixed_large", "clip_sample": False})
    assert main(["info", str(folder)]) == 0
    assert "256x256x3" in capsys.readouterr().out
    # at 256 px on a CPU the command says how long it will take before it starts
    assert main(["sample", "--model", str(folder), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s"),
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("precision fp32") and "\nDDIM-2 at 256x256: about " in out  # said before it starts
    assert "s a step, timed just now" in out
    assert (tmp_path / "s" / "sample_00000.png").is_file()

    assert main(["import", str(folder), "--out", str(tmp_path / "imported")]) == 0
    ckpt = open_checkpoint(tmp_path / "imported")
    direct = open_checkpoint(folder)
    assert ckpt.meta["sampling"] == {"variance": "beta", "clip_x0": False} and ckpt.schedule == direct.schedule
    for k, v in direct.tensors["ema"].items():
        torch.testing.assert_close(ckpt.tensors["ema"][k], v, atol=0, rtol=0)  # stored as converted, bit for bit
    assert main(["import", str(folder), "--out", str(tmp_path / "imported")]) == 2  # never overwrites
    assert main(["import", str(tmp_path / "s"), "--out", str(tmp_path / "x")]) == 1
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
