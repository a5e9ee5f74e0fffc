"""Memory-layout fast paths (bench/RESULTS.md) change speed, never results: NHWC training and sampling on a CPU."""
from __future__ import annotations

import pytest
import torch

from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.core.nets.unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = UNetConfig(image_size=16, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(8,), groups=8, num_heads=2)


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim == 4]


def all_nhwc(model: torch.nn.Module) -> bool:
    """Every convolution weight in NHWC layout (and so not NCHW wherever the two differ: C > 1 and kernel > 1)."""
    ws = conv_weights(model)
    return (all(w.is_contiguous(memory_format=torch.channels_last) for w in ws)
            and not any(w.is_contiguous() for w in ws if w.shape[1] > 1 and w.shape[-1] > 1))


def trainer(precision: str, channels_last: bool | None) -> Trainer:
    g = torch.Generator().manual_seed(0)
    data = TensorImages(torch.rand(16, 1, 16, 16, generator=g) * 2 - 1)
    cfg = TrainConfig(steps=3, batch_size=8, device="cpu", precision=precision, channels_last=channels_last,
                      warmup_steps=0, lr=1e-3)
    return Trainer(MICRO, NoiseSchedule.create("linear", 100), data, cfg)


def test_default_layout_is_what_the_calibration_measured(monkeypatch, tmp_path):
    """No rule about CPUs: the trainer takes the layout the calibration measured faster, whichever that is."""
    from diffusion_studio.core.runtime import calibrate

    for nhwc_faster in (True, False):
        calibrate.forget()
        monkeypatch.setenv("DIFFUSION_STUDIO_CACHE", str(tmp_path / str(nhwc_faster)))

        def timer(model, x, t, precision, train, nhwc_faster=nhwc_faster):
            return 1.0 if all_nhwc(model) == nhwc_faster else 2.0

        monkeypatch.setattr(calibrate, "_time_step", timer)
        tr = trainer("fp32", None)
        assert tr.channels_last is nhwc_faster
        assert all_nhwc(tr.model) if nhwc_faster else all(w.is_contiguous() for w in conv_weights(tr.model))
    calibrate.forget()
    # an explicit choice is kept, whatever was measured
    assert trainer("fp32", False).channels_last is False and trainer("bf16", True).channels_last is True


def test_nhwc_training_matches_nchw_training():
    a, b = trainer("fp32", True), trainer("fp32", False)
    for _ in range(3):
        la, lb = a.train_step()[0], b.train_step()[0]
        assert la == pytest.approx(lb, rel=1e-4, abs=1e-6)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-5)


def test_nhwc_checkpoint_round_trip(tmp_path):
    """A run trained in NHWC saves, reloads and resumes with the same numbers: the layout never reaches the file."""
    a = trainer("fp32", True)
    a.train_step()
    path = a.save(tmp_path / "run")
    ck = load_checkpoint(path)
    for name, p in a.ema.state_dict().items():
        torch.testing.assert_close(ck.tensors["ema"][name], p, rtol=0, atol=0)
    model = ck.build_model()
    for pa, pb in zip(model.parameters(), a.ema.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    b = Trainer.resume(ck, a.data)
    assert b.channels_last
    torch.testing.assert_close(b.train_step()[0], a.train_step()[0], rtol=1e-5, atol=1e-7)


def test_model_fn_nhwc_gives_the_same_eps_in_nchw_layout():
    torch.manual_seed(0)
    model = UNet(MICRO)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # no zero-initialised layer: every convolution matters
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 50, 99])
    ref = model_fn(model, "cpu", "fp32", channels_last=False)(x, t)
    assert all(w.is_contiguous() for w in conv_weights(model))
    fast = model_fn(model, "cpu", "fp32", channels_last=True)(x, t)
    assert all_nhwc(model)
    assert fast.is_contiguous() and fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_nhwc_resume_keeps_the_optimizer_moments_in_the_weights_layout(tmp_path):
    """The checkpoint stores Adam's moments in NCHW order; fused AdamW walks a weight and its moments as flat memory,
    so a resumed NHWC run must get them back in NHWC (it once updated with elements mixed up)."""
    straight, split = trainer("fp32", True), trainer("fp32", True)
    for _ in range(2):
        straight.train_step()
        split.train_step()
    resumed = Trainer.resume(load_checkpoint(split.save(tmp_path / "run")), split.data)
    assert resumed.channels_last
    for p, st in resumed.optimizer.state.items():
        if p.ndim == 4:
            assert all(v.stride() == p.stride() for k, v in st.items() if torch.is_tensor(v) and v.shape == p.shape)
    for _ in range(2):
        straight.train_step()
        resumed.train_step()
    for pa, pb in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)
