"""Algorithm 1 as a generator: learning, events, previews, validation, divergence, time budget, exact resume."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.diffusion.samplers import ddim_sample
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.core.errors import TrainingDiverged, TrainingError
from diffusion_studio.core.nets.unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A micro UNet (≈ 0.18M parameters): every code path of the real presets, a fraction of the cost.
MICRO = UNetConfig(image_size=16, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(8,), groups=8, num_heads=2)


def blobs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Gaussian blobs of random centre and radius, in [−1, 1]: easy data a tiny model learns in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = torch.rand(n, 2, generator=g) * (size - 6) + 3
    r = torch.rand(n, generator=g) * 2 + 2
    d2 = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2
    return (torch.exp(-d2 / (2 * r[:, None, None] ** 2)) * 2 - 1)[:, None]


@pytest.fixture(scope="module")
def data() -> TensorImages:
    return TensorImages(blobs(32, 16), labels=torch.arange(32) % 4)


@pytest.fixture(scope="module")
def sched() -> NoiseSchedule:
    return NoiseSchedule.create("linear", 100)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-3, warmup_steps=2, device="cpu", precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_falls_on_a_tiny_dataset(data, sched):
    torch.manual_seed(0)
    tr = Trainer(MICRO, sched, data, cfg(steps=80, batch_size=4, warmup_steps=5))
    losses = [ev.loss for ev in tr.run()]
    assert len(losses) == 80
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    # an untrained ε_θ ≡ 0 has loss E‖ε‖² = 1; after 80 steps it is ≈ 0.1 on these blobs (0.09–0.13 over seeds)
    assert first > 0.6, first
    assert last < 0.5 * first, (first, last)


def test_events(data, sched):
    torch.manual_seed(0)
    tr = Trainer(MICRO, sched, data, cfg(steps=6, warmup_steps=4, buckets=5))
    events = list(tr.run())
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.done for e in events] == [False] * 5 + [True]
    assert all(e.total_steps == 6 for e in events)
    assert [e.progress for e in events] == pytest.approx([i / 6 for i in range(1, 7)])
    # linear warm-up over 4 steps, then the full rate: the lr each step actually used
    assert [e.lr for e in events] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert all(e.images_per_s > 0 and np.isfinite(e.images_per_s) for e in events)
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in events) and events[-1].eta_s == 0
    assert all(np.isfinite(e.loss) and e.loss > 0 and np.isfinite(e.grad_norm) for e in events)
    assert all(len(e.bucket_loss) == 5 for e in events)
    seen = [b for b in events[-1].bucket_loss if b is not None]
    assert seen and all(0 < b < 10 for b in seen)
    assert all(b - a >= 0 for a, b in zip([e.elapsed_s for e in events], [e.elapsed_s for e in events][1:]))
    assert all(e.preview is None and e.checkpoint is None for e in events)
    assert tr.step == 6 and tr.last_loss == events[-1].loss


def test_previews(data, sched):
    torch.manual_seed(0)
    tr = Trainer(MICRO, sched, data, cfg(steps=4, preview_every=2, preview_n=3, preview_steps=3, preview_seed=5))
    events = list(tr.run())
    assert [e.preview is not None for e in events] == [False, True, False, True]
    p = events[-1].preview
    assert p.shape == (3, 1, 16, 16) and p.dtype == torch.float32
    assert float(p.min()) >= -1 and float(p.max()) <= 1
    assert not torch.equal(events[1].preview, p)  # the EMA weights moved in between
    # the preview is DDIM from the EMA weights with the preview seed, clamped
    last = list(ddim_sample(model_fn(tr.ema), sched, (3, 1, 16, 16), steps=3, seed=5))[-1]
    assert torch.equal(p, last.x.clamp(-1, 1))
    assert torch.equal(tr.preview(), p)  # same weights, same seed: same picture


def test_batch_size_larger_than_dataset(sched):
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(MICRO, sched, TensorImages(blobs(5, 16)), cfg(batch_size=6))
    with pytest.raises(ValueError, match="data"):
        Trainer(MICRO, sched, TensorImages(torch.zeros(0, 1, 16, 16)), cfg(batch_size=1))


@pytest.mark.parametrize("change, field", [
    ({"steps": 0}, "steps"), ({"steps": 1.5}, "steps"), ({"steps": True}, "steps"), ({"steps": None}, "steps"),
    ({"steps": None, "minutes": -1.0}, "minutes"), ({"minutes": float("nan")}, "minutes"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"lr": 0.0}, "lr"), ({"lr": 1.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": -1e-3}, "lr"),
    ({"ema_decay": 1.0}, "ema_decay"), ({"ema_decay": -0.1}, "ema_decay"),
    ({"grad_clip": 0.0}, "grad_clip"), ({"warmup_steps": -1}, "warmup_steps"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"p_uncond": 1.5}, "p_uncond"), ({"buckets": 0}, "buckets"), ({"log_every": 0}, "log_every"),
    ({"preview_every": -1}, "preview_every"), ({"preview_every": 2, "preview_n": 0}, "preview_n"),
    ({"preview_every": 2, "preview_steps": 0}, "preview_steps"), ({"checkpoint_every": -5}, "checkpoint_every"),
])
def test_invalid_train_config_names_the_field(data, sched, change, field):
    c = dataclasses.replace(cfg(), **change)
    with pytest.raises(ValueError, match=field):
        c.validate()
    with pytest.raises(ValueError, match=field):
        Trainer(MICRO, sched, data, c)


def test_invalid_device_precision_and_class_conditional(data, sched):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            Trainer(MICRO, sched, data, cfg(device="cuda"))
    with pytest.raises(ValueError, match="precision"):
        Trainer(MICRO, sched, data, cfg(precision="fp16"))
    with pytest.raises(ValueError, match="class_conditional"):
        Trainer(MICRO, sched, data, cfg(class_conditional=True))  # the model has no classes
    with pytest.raises(ValueError, match="class_conditional"):
        unlabelled = TensorImages(blobs(8, 16))
        Trainer(dataclasses.replace(MICRO, num_classes=4), sched, unlabelled, cfg(class_conditional=True))


def test_nan_in_the_data_stops_before_the_weights_are_touched(sched):
    torch.manual_seed(0)
    images = blobs(8, 16)
    tr = Trainer(MICRO, sched, TensorImages(images), cfg(steps=10))
    run = tr.run()
    for _ in range(3):
        next(run)
    before_model, before_ema = params(tr.model), params(tr.ema)
    before_opt = {k: v.clone() for k, v in tr.optimizer.state[next(iter(tr.model.parameters()))].items()}
    tr.data.images = torch.full_like(images, float("nan"))
    with pytest.raises(TrainingDiverged) as e:
        next(run)
    assert e.value.step == 4 and "step 4" in str(e.value)
    assert isinstance(e.value, TrainingError) and "\n" not in str(e.value)
    assert tr.step == 3
    for k, v in params(tr.model).items():
        assert torch.isfinite(v).all() and torch.equal(v, before_model[k]), k
    for k, v in params(tr.ema).items():
        assert torch.equal(v, before_ema[k]), k
    after_opt = tr.optimizer.state[next(iter(tr.model.parameters()))]
    assert all(torch.equal(after_opt[k], v) for k, v in before_opt.items())


def test_nan_at_the_first_step(sched):
    torch.manual_seed(0)
    images = blobs(8, 16)
    images[3] = float("nan")
    tr = Trainer(MICRO, sched, TensorImages(images), cfg(steps=50, batch_size=8))
    init = params(tr.model)
    with pytest.raises(TrainingDiverged, match="step 1"):
        list(tr.run())
    assert all(torch.equal(v, init[k]) for k, v in params(tr.model).items())


def test_minutes_mode_stops_by_time(data, sched):
    torch.manual_seed(0)
    tr = Trainer(MICRO, sched, data, cfg(steps=None, minutes=0.02))
    t0 = time.perf_counter()
    events = list(tr.run())
    wall = time.perf_counter() - t0
    assert events and events[-1].done and not any(e.done for e in events[:-1])
    assert events[-1].elapsed_s >= 1.2 and wall >= 1.2
    assert wall < 1.2 + 15  # at most one step late (generous: a loaded CI machine)
    assert all(e.total_steps is None and e.progress is None for e in events)
    etas = [e.eta_s for e in events]
    assert etas[-1] == 0 and all(b <= a for a, b in zip(etas, etas[1:]))


def test_checkpoint_every(tmp_path, data, sched):
    torch.manual_seed(0)
    tr = Trainer(MICRO, sched, data, cfg(steps=5, checkpoint_every=2), out=tmp_path / "run")
    events = list(tr.run())
    assert [e.checkpoint is not None for e in events] == [False, True, False, True, False]
    assert events[3].checkpoint == tmp_path / "run.json"
    assert load_checkpoint(events[3].checkpoint).step == 4
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_class_conditional_training_and_guidance(data, sched):
    torch.manual_seed(0)
    mc = dataclasses.replace(MICRO, num_classes=4)
    tr = Trainer(mc, sched, data, cfg(steps=3, class_conditional=True, p_uncond=0.5))
    assert all(np.isfinite(e.loss) for e in tr.run())
    model = tr.model
    with torch.no_grad():  # make the class embedding matter so the guidance formula is visible
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 10])
    y = torch.tensor([1, 2])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t)
    w = 3.0
    got = model_fn(model, condition=y, guidance=w)(x, t)
    assert torch.allclose(got, uncond + w * (cond - uncond), atol=1e-5)
    assert torch.allclose(model_fn(model, condition=y, guidance=1.0)(x, t), cond, atol=1e-6)
    assert torch.allclose(model_fn(model)(x, t), uncond, atol=1e-6)
    assert not model.training  # model_fn puts the network in eval mode


# ---- resume --------------------------------------------------------------------------------------------------------
def _straight_vs_resumed(tmp_path, data, sched, mc, n, m, **kw):
    torch.manual_seed(123)
    straight = Trainer(mc, sched, data, cfg(steps=n + m, flip=True, **kw))
    s_events = list(straight.run())

    torch.manual_seed(123)
    first = Trainer(mc, sched, data, cfg(steps=n, flip=True, **kw))
    f_events = list(first.run())
    path = first.save(tmp_path / "half")
    torch.manual_seed(999)  # whatever the global RNG holds now must not matter
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(999)
    resumed = Trainer.resume(path, data, steps=n + m)
    assert resumed.step == n
    r_events = list(resumed.run())
    return straight, s_events, first, f_events, resumed, r_events


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_resume_is_exact(tmp_path, data, sched, dropout, device):
    mc = dataclasses.replace(MICRO, dropout=dropout)
    n, m = 3, 3
    # On a GPU, kernels may sum in another order from run to run: allow that, but not a different dropout mask
    # (restoring only the CPU generator would leave the CUDA one, which GPU dropout draws from, wherever it was).
    rtol, atol = (1e-6, 1e-7) if device == "cpu" else (1e-4, 1e-6)
    straight, s_ev, first, f_ev, resumed, r_ev = _straight_vs_resumed(tmp_path, data, sched, mc, n, m, device=device)
    assert [e.step for e in r_ev] == list(range(n + 1, n + m + 1))
    assert [e.loss for e in f_ev + r_ev] == pytest.approx([e.loss for e in s_ev], rel=rtol * 10, abs=atol)
    for name in ("model", "ema"):
        a, b = params(getattr(straight, name)), params(getattr(resumed, name))
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=rtol, atol=atol), (name, k, float((a[k] - b[k]).abs().max()))
    # and the run really moved: a resumed run that silently restarted from scratch would differ
    p_first = params(first.model)
    assert any(not torch.equal(p_first[k], v) for k, v in params(resumed.model).items())
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for pid in sa:
        for k in sa[pid]:
            assert torch.allclose(torch.as_tensor(sa[pid][k]).float().cpu(), torch.as_tensor(sb[pid][k]).float().cpu(),
                                  rtol=rtol, atol=atol * 1e-2)
    assert resumed.elapsed_before >= first.elapsed_before > 0
    assert r_ev[-1].bucket_loss == pytest.approx(s_ev[-1].bucket_loss)


def test_resume_continues_the_step_count_and_keeps_hyperparameters(tmp_path, data, sched):
    torch.manual_seed(0)
    tr = Trainer(MICRO, sched, data, cfg(steps=2, lr=7e-4, warmup_steps=0, weight_decay=0.01))
    list(tr.run())
    path = tr.save(tmp_path / "r")
    ck = load_checkpoint(path)
    assert ck.step == 2 and ck.meta["train"]["lr"] == 7e-4
    res = Trainer.resume(path, data, steps=4)
    assert res.config.lr == 7e-4 and res.config.weight_decay == 0.01 and res.config.steps == 4
    assert [e.step for e in res.run()] == [3, 4]
    assert res.optimizer.param_groups[0]["weight_decay"] == 0.01
    assert load_checkpoint(res.save()).step == 4  # saves next to the checkpoint it came from
    assert res.out == path


def test_resume_refuses_an_exported_model(tmp_path, data, sched):
    model = UNet(MICRO)
    path = save_checkpoint(tmp_path / "export", {"ema": model.state_dict()},
                           {"step": 10, "model": MICRO.to_dict(), "schedule": sched.to_dict()})
    with pytest.raises(ValueError, match="training state"):
        Trainer.resume(path, data)


def test_run_at_its_total_takes_no_more_steps(tmp_path):
    """A resumed run that already reached its total must not train one step further (it used to)."""
    import torch as _torch

    from diffusion_studio.core.diffusion.schedule import NoiseSchedule as _NS
    from diffusion_studio.core.train.trainer import TensorImages as _TI
    from diffusion_studio.core.train.config import TrainConfig as _TC
    from diffusion_studio.core.train.trainer import Trainer as _Tr
    from diffusion_studio.core.nets.unet import preset_config as _pc

    data = _TI(_torch.rand(8, 1, 8, 8) * 2 - 1)
    tr = _Tr(_pc("tiny", 8, 1), _NS.create("linear", 20), data, _TC(steps=3, batch_size=4, warmup_steps=0))
    assert [ev.step for ev in tr.run()] == [1, 2, 3]
    before = [p.clone() for p in tr.model.parameters()]
    assert list(tr.run()) == []
    assert tr.step == 3
    assert all(_torch.equal(a, b) for a, b in zip(before, tr.model.parameters()))
