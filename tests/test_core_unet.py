"""The UNet: shapes at many sizes, derived attention sizes, presets' parameter counts, embeddings, configs."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from diffusion_studio.core.nets.unet import (
    PRESETS, AttnBlock, UNet, UNetConfig, build_model, count_parameters, preset_config, timestep_embedding,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """The UNet starts with zeroed output layers (ε_θ ≡ 0), which would make equality tests vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.mark.parametrize("preset", ["micro", "tiny", "small"])
@pytest.mark.parametrize("size", [16, 24, 32, 48])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_equals_input_shape(preset, size, channels):
    torch.manual_seed(0)
    model = randomize(build_model(preset, size, channels)).eval()
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().max() > 0
    # the attention sits where the preset says, at a resolution derived from the image size
    frac = PRESETS[preset]["attn_fractions"][0]
    assert model.config.attn_resolutions == (size // frac,)
    assert any(isinstance(m, AttnBlock) for m in model.down.modules())


def test_untrained_model_predicts_zero():
    model = build_model("tiny", 16, 1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 16, 16), torch.tensor([3, 4]))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("preset, size", [("tiny", 18), ("tiny", 30), ("small", 22), ("base", 20), ("tiny", 1)])
def test_size_not_divisible_raises_naming_image_size(preset, size):
    with pytest.raises(ValueError, match="image_size"):
        preset_config(preset, size, 3)


def test_input_size_and_channels_checked_at_forward():
    model = build_model("tiny", 16, 3)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, 18, 18), torch.tensor([0]))
    with pytest.raises(ValueError):
        model(torch.randn(1, 1, 16, 16), torch.tensor([0]))
    with pytest.raises(ValueError):
        model(torch.randn(3, 16, 16), torch.tensor([0]))


def test_class_conditional_none_is_the_null_class():
    torch.manual_seed(0)
    model = randomize(build_model("tiny", 16, 1, num_classes=10), seed=1).eval()
    assert model.class_emb.num_embeddings == 11
    x = torch.randn(3, 1, 16, 16)
    t = torch.tensor([5, 50, 500])
    with torch.no_grad():
        none = model(x, t)
        null = model(x, t, torch.full((3,), 10))
        cls3 = model(x, t, torch.full((3,), 3))
    assert torch.equal(none, null)
    assert not torch.allclose(none, cls3, atol=1e-4)  # the label does reach the network


def test_parameter_counts():
    cifar = build_model("ddpm-cifar", 32, 3)
    n = count_parameters(cifar)
    assert abs(n - 35.7e6) <= 0.1e6, n  # Ho et al. 2020, CIFAR-10: 35.7M
    assert cifar.config.dropout == 0.1 and cifar.config.attn_resolutions == (16,)
    tiny = count_parameters(build_model("tiny", 32, 3))
    assert 1e6 <= tiny <= 2e6, tiny
    small = count_parameters(build_model("small", 32, 3))
    assert tiny < small < n


@pytest.mark.parametrize("dim", [8, 32, 33, 128])
def test_timestep_embedding_matches_numpy(dim):
    t = np.array([0, 1, 17, 500, 999])
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    args = t[:, None].astype(np.float64) * freqs[None]
    ref = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    if dim % 2:
        ref = np.concatenate([ref, np.zeros((len(t), 1))], axis=1)
    got = timestep_embedding(torch.tensor(t), dim)
    assert got.shape == (5, dim)
    np.testing.assert_allclose(got.numpy(), ref, atol=3e-4)
    np.testing.assert_allclose(got[:, :half].numpy() ** 2 + got[:, half:2 * half].numpy() ** 2, 1.0, atol=1e-5)


def _attention_np(x: np.ndarray, w_qkv, b_qkv, w_proj, b_proj, heads, gn_w, gn_b, groups):
    """Multi-head self-attention over the pixels, written from scratch in float64."""
    b, c, h, w = x.shape
    xg = x.reshape(b, groups, -1)
    xn = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(b, c, h * w)
    xn = xn * gn_w[None, :, None] + gn_b[None, :, None]
    qkv = np.einsum("oc,bcn->bon", w_qkv, xn) + b_qkv[None, :, None]
    q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    d = c // heads
    out = np.zeros((b, c, h * w))
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        logits = np.einsum("bdn,bdm->bnm", q[:, sl], k[:, sl]) / np.sqrt(d)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, sl] = np.einsum("bnm,bdm->bdn", p, v[:, sl])
    proj = np.einsum("oc,bcn->bon", w_proj, out) + b_proj[None, :, None]
    return x + proj.reshape(b, c, h, w)


@pytest.mark.parametrize("h, w, heads", [(6, 10, 2), (12, 12, 4), (3, 5, 1)])
def test_attention_block_at_any_resolution_matches_reference(h, w, heads):
    torch.manual_seed(0)
    blk = randomize(AttnBlock(16, heads, 4), seed=2, std=0.3).double()
    x = torch.randn(2, 16, h, w, dtype=torch.float64)
    with torch.no_grad():
        out = blk(x)
    ref = _attention_np(x.numpy(), blk.qkv.weight[:, :, 0, 0].detach().numpy(), blk.qkv.bias.detach().numpy(),
                        blk.proj.weight[:, :, 0, 0].detach().numpy(), blk.proj.bias.detach().numpy(), heads,
                        blk.norm.weight.detach().numpy(), blk.norm.bias.detach().numpy(), 4)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-8, atol=1e-8)


def test_attention_at_a_non_64_resolution_in_a_whole_model():
    cfg = UNetConfig(image_size=24, in_channels=3, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                     attn_resolutions=(12,), groups=8, num_heads=2)
    model = randomize(UNet(cfg), seed=3).eval()
    n_attn = sum(isinstance(m, AttnBlock) for m in model.modules())
    assert n_attn == 1 + 1 + 2  # down at 12, mid, up at 12 (two blocks: num_res_blocks + 1)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 24, 24), torch.tensor([10]))
        # the same weights work on a larger input too: nothing is hard-coded to the built size
        out2 = model(torch.randn(1, 3, 40, 40), torch.tensor([10]))
    assert out.shape == (1, 3, 24, 24) and out2.shape == (1, 3, 40, 40)


def test_config_round_trip_through_json():
    for cfg in (preset_config("tiny", 24, 1), preset_config("ddpm-cifar", 32, 3, num_classes=10),
                UNetConfig(channel_mults=(1, 2, 3), attn_resolutions=(16, 8), dropout=0.2, groups=16)):
        d = json.loads(json.dumps(cfg.to_dict()))
        back = UNetConfig.from_dict(d)
        assert back == cfg
        assert isinstance(back.channel_mults, tuple) and isinstance(back.attn_resolutions, tuple)


@pytest.mark.parametrize("change, field", [
    ({"in_channels": 0}, "in_channels"),
    ({"in_channels": 65}, "in_channels"),  # 2..64 are latent channels (core/latent.py)
    ({"groups": 7}, "groups"),
    ({"num_heads": 3}, "num_heads"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"num_res_blocks": 0}, "num_res_blocks"),
    ({"channel_mults": ()}, "channel_mults"),
    ({"channel_mults": (1, 0)}, "channel_mults"),
    ({"num_classes": 0}, "num_classes"),
    ({"image_size": 30}, "image_size"),
])
def test_bad_config_raises_naming_the_field(change, field):
    cfg = dataclasses.replace(preset_config("tiny", 32, 3), **change)
    with pytest.raises(ValueError, match=field):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        UNet(cfg)


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ValueError, match="preset"):
        preset_config("huge", 32, 3)
    with pytest.raises(ValueError, match="preset"):
        build_model("huge")
    with pytest.raises(ValueError, match="wings"):
        UNetConfig.from_dict({**preset_config("tiny", 32, 3).to_dict(), "wings": 2})
    with pytest.raises(ValueError):
        UNetConfig.from_dict([1, 2, 3])


def test_model_is_deterministic_and_depends_on_t():
    model = randomize(build_model("tiny", 16, 1), seed=4).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        a = model(x, torch.tensor([1, 1]))
        b = model(x, torch.tensor([1, 1]))
        c = model(x, torch.tensor([900, 900]))
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-4)
    # batch rows are independent (GroupNorm, not BatchNorm)
    with torch.no_grad():
        single = model(x[:1], torch.tensor([1]))
    assert torch.allclose(single, a[:1], atol=1e-5)
    assert not math.isnan(float(a.sum()))
