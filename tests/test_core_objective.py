"""Prediction targets (ε, x₀, v) and Min-SNR-γ weighting: exact conversions, and samplers that honour any target."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_studio.core.diffusion import objective
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.diffusion.samplers import sample
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MU, S2 = 0.3, 0.25  # data x0 ~ N(MU, S2) per dimension: the exact denoiser is known in closed form


def coeffs(sched: NoiseSchedule, t: torch.Tensor, like: torch.Tensor):
    return sched.at("sqrt_alpha_bars", t, like), sched.at("sqrt_one_minus_alpha_bars", t, like)


@pytest.mark.parametrize("prediction", objective.PREDICTIONS)
def test_to_eps_inverts_the_target_exactly(prediction):
    g = torch.Generator().manual_seed(0)
    sched = NoiseSchedule.create("cosine", 1000)
    x0 = torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (64,), generator=g)
    t[:2] = torch.tensor([0, 999])  # both ends: x0 conversion divides by √(1−ᾱ₁) = 0.01
    a, b = coeffs(sched, t, x0)
    x_t = a * x0 + b * eps
    target = objective.target(prediction, x0, eps, a, b)
    torch.testing.assert_close(objective.to_eps(prediction, target, x_t, a, b), eps, rtol=1e-9, atol=1e-9)
    if prediction == "v":  # v = √ᾱ ε − √(1−ᾱ) x0, and x0 = √ᾱ x_t − √(1−ᾱ) v
        torch.testing.assert_close(a * x_t - b * target, x0, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", objective.PREDICTIONS)
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_give_min_snr_times_the_x0_error_for_every_target(prediction, gamma):
    """Hang et al.'s definition, checked through the targets themselves: weight · ‖target error‖² equals
    min(SNR_t, γ) · ‖x̂₀ − x₀‖² when the prediction implies the estimate x̂₀."""
    g = torch.Generator().manual_seed(1)
    sched = NoiseSchedule.create("linear", 1000)
    x0 = torch.rand(32, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (32,), generator=g)
    a, b = coeffs(sched, t, x0)
    x_t = a * x0 + b * eps
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps_hat = (x_t - a * x0_hat) / b  # the same estimate expressed as ε and v
    pred = objective.target(prediction, x0_hat, eps_hat, a, b)
    mse = ((pred - objective.target(prediction, x0, eps, a, b)) ** 2).mean(dim=(1, 2, 3))
    snr = sched.snr.double()[t]
    w = objective.loss_weights(prediction, "min_snr", snr, gamma)
    expected = torch.clamp(snr, max=gamma) * ((x0_hat - x0) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(w * mse, expected, rtol=1e-8, atol=1e-12)
    assert torch.equal(objective.loss_weights(prediction, "uniform", snr), torch.ones_like(snr))


class ExactDenoiser(nn.Module):
    """The optimal predictor for Gaussian data, answering in whichever target its config names."""

    def __init__(self, sched: NoiseSchedule, prediction: str):
        super().__init__()
        self.sched = sched
        self.config = UNetConfig(image_size=4, in_channels=1, base_channels=8, channel_mults=(1,), groups=8,
                                 num_heads=1, attn_resolutions=(), prediction=prediction)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None, **_):
        a, b = coeffs(self.sched, t, x)
        ab = a * a
        eps = b * (x - a * MU) / (ab * S2 + 1 - ab)
        x0 = (x - b * eps) / a
        return objective.target(self.config.prediction, x0, eps, a, b)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_samplers_honour_the_target_a_model_was_trained_on(prediction):
    sched = NoiseSchedule.create("linear", 200)
    ref = model_fn(ExactDenoiser(sched, "eps"), "cpu", "fp32", channels_last=False)
    fn = model_fn(ExactDenoiser(sched, prediction), "cpu", "fp32", channels_last=False, schedule=sched)
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    for i in (0, 1, 100, 199):
        t = torch.full((8,), i)
        torch.testing.assert_close(fn(x, t), ref(x, t), rtol=1e-4, atol=1e-4)
    for method in ("ddim", "ddpm"):
        a = sample(ref, sched, (256, 1, 4, 4), method, steps=20, seed=3)
        b = sample(fn, sched, (256, 1, 4, 4), method, steps=20, seed=3)
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
    # a model that predicts x0 or v cannot be turned into ε without its schedule
    with pytest.raises(ValueError, match="schedule"):
        model_fn(ExactDenoiser(sched, prediction), "cpu", "fp32", channels_last=False)


def test_unknown_targets_and_weightings_are_refused_by_name():
    with pytest.raises(ValueError, match="prediction"):
        objective.check("score", "uniform", 5.0)
    with pytest.raises(ValueError, match="loss_weighting"):
        objective.check("eps", "p2", 5.0)
    with pytest.raises(ValueError, match="snr_gamma"):
        objective.check("eps", "min_snr", 0.0)
    with pytest.raises(ValueError, match="prediction"):
        UNetConfig(prediction="epsilon").validate()


@pytest.mark.parametrize("prediction, weighting", [("v", "min_snr"), ("x0", "min_snr"), ("eps", "min_snr")])
def test_trainer_learns_with_any_target_and_the_checkpoint_keeps_it(tmp_path, prediction, weighting):
    from diffusion_studio.core.io.checkpoint import load_checkpoint
    from diffusion_studio.core.train.trainer import TensorImages, Trainer
    from diffusion_studio.core.train.config import TrainConfig

    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                     attn_resolutions=(), groups=8, num_heads=2, prediction=prediction)
    g = torch.Generator().manual_seed(0)
    data = TensorImages((torch.rand(32, 1, 1, 1, generator=g) > 0.5).float().expand(32, 1, 8, 8) * 2 - 1)
    tr = Trainer(cfg, NoiseSchedule.create("linear", 100), data,
                 TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=5, device="cpu", precision="fp32",
                             loss_weighting=weighting, channels_last=False))
    losses = [e.loss for e in tr.run()]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])  # two flat images are easy: the loss must fall a lot
    ck = load_checkpoint(tr.save(tmp_path / "run"))
    assert ck.model_config.prediction == prediction and ck.meta["train"]["loss_weighting"] == weighting
    preview = tr.preview(n=4)
    assert preview.shape == (4, 1, 8, 8) and torch.isfinite(preview).all()
