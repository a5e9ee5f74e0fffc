"""Frame-yielding samplers: timestep spacing, frame bookkeeping, seeding, cloning, respacing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion.samplers import ddim_sample, ddpm_sample, sample, sample_frames, spaced_timesteps
from diffusion_studio.core.diffusion.schedule import NoiseSchedule

T = 20
SHAPE = (2, 1, 3, 3)


@pytest.fixture(scope="module")
def sched() -> NoiseSchedule:
    return NoiseSchedule.create("linear", T, beta_end=0.2)


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in for ε_θ that depends on both x and t."""
    return 0.3 * x + 0.01 * t.float().reshape(-1, 1, 1, 1)


class Recorder:
    def __init__(self):
        self.ts: list[list[int]] = []

    def __call__(self, x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        self.ts.append(t.tolist())
        return fake_model(x, t)


# ---- spacing ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T_, n", [(1000, 50), (1000, 2), (1000, 1000), (1000, 999), (1000, 3), (10, 2), (10, 9),
                                   (10, 10), (2, 2), (7, 4), (1000, 7), (250, 100)])
def test_spaced_timesteps_first_last_unique_descending(T_, n):
    ts = spaced_timesteps(T_, n)
    assert len(ts) == n
    assert ts[0] == T_ - 1 and ts[-1] == 0  # diffusers issue 2585: the first step must start from pure noise
    assert len(set(ts)) == n
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert all(isinstance(t, int) for t in ts)


def test_spaced_timesteps_even_spacing_and_edge_cases():
    ts = spaced_timesteps(1000, 50)
    gaps = np.diff(ts[::-1])
    assert gaps.min() >= 20 and gaps.max() <= 21  # 999/49 ≈ 20.4
    assert spaced_timesteps(1000, 1) == [999]  # one step: straight from x_T (DDIM then jumps to x_0)
    assert spaced_timesteps(10, 10) == list(range(9, -1, -1))
    for bad in (0, -1, 11):
        with pytest.raises(ValueError):
            spaced_timesteps(10, bad)


# ---- frames -------------------------------------------------------------------------------------------------------
CASES = [("ddpm", {}), ("ddpm", {"variance": "beta"}), ("ddpm", {"steps": 6}), ("ddim", {"steps": 7}),
         ("ddim", {"steps": 5, "eta": 1.0}), ("ddim", {"steps": T}), ("ddim", {"steps": 1}), ("ddpm", {"steps": 1})]


def _n(kw):
    return kw.get("steps", T)


@pytest.mark.parametrize("sampler, kw", CASES)
def test_frames_count_final_and_equal_to_sample(sched, sampler, kw):
    frames = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=3, **kw))
    n = _n(kw)
    assert len(frames) == n
    assert [f.step for f in frames] == list(range(1, n + 1))
    assert all(f.n_steps == n for f in frames)
    assert frames[-1].is_final and frames[-1].t == -1 and frames[-1].paper_t == 0
    assert not any(f.is_final for f in frames[:-1])
    final = sample(fake_model, sched, SHAPE, sampler, seed=3, **kw)
    assert torch.equal(final, frames[-1].x)
    # ordinary tensors, not inference-mode ones: a consumer may edit them in place
    assert not final.is_inference() and not frames[0].x.is_inference()
    final.clamp_(-1, 1)
    for f in frames:
        assert f.x.shape == SHAPE and f.x0_pred.shape == SHAPE and f.eps_pred.shape == SHAPE
        assert f.t_model is not None and f.t_model > f.t


@pytest.mark.parametrize("sampler, kw", CASES)
def test_same_seed_same_frames_other_seed_other_frames(sched, sampler, kw):
    a = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=1, **kw))
    b = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=1, **kw))
    c = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=2, **kw))
    for fa, fb in zip(a, b):
        assert torch.equal(fa.x, fb.x) and torch.equal(fa.x0_pred, fb.x0_pred) and torch.equal(fa.eps_pred, fb.eps_pred)
    assert not torch.equal(a[-1].x, c[-1].x)


def test_ddpm_frames_follow_the_full_chain_in_order(sched):
    rec = Recorder()
    frames = list(ddpm_sample(rec, sched, SHAPE, seed=0))
    assert [ts[0] for ts in rec.ts] == list(range(T - 1, -1, -1))
    assert [f.t_model for f in frames] == list(range(T - 1, -1, -1))
    assert [f.t for f in frames] == list(range(T - 2, -2, -1))


def test_ddim_calls_the_model_at_the_spaced_timesteps(sched):
    rec = Recorder()
    frames = list(ddim_sample(rec, sched, SHAPE, steps=5, seed=0))
    ts = spaced_timesteps(T, 5)
    assert [r[0] for r in rec.ts] == ts and all(len(set(r)) == 1 for r in rec.ts)
    assert [f.t_model for f in frames] == ts
    assert [f.t for f in frames] == ts[1:] + [-1]


def test_respaced_ddpm_calls_the_model_with_original_timesteps(sched):
    rec = Recorder()
    frames = list(ddpm_sample(rec, sched, SHAPE, steps=5, seed=0))
    ts = spaced_timesteps(T, 5)
    assert ts == [19, 14, 10, 5, 0]
    assert [r[0] for r in rec.ts] == ts  # original indices, not the respaced schedule's 4, 3, 2, 1, 0
    assert [f.t_model for f in frames] == ts
    assert [f.t for f in frames] == ts[1:] + [-1]
    assert len(frames) == 5 and frames[-1].is_final


def test_frames_are_clones(sched):
    """A consumer editing a frame, or a model that reuses its output buffer, must not change any other frame."""
    buf = torch.empty(SHAPE)

    def static_model(x, t):  # returns the same tensor object every call, like a CUDA-graph'd model
        buf.copy_(fake_model(x, t))
        return buf

    ref = list(ddpm_sample(fake_model, sched, SHAPE, seed=4))
    gen = ddpm_sample(static_model, sched, SHAPE, seed=4)
    first = next(gen)
    kept = (first.x.clone(), first.x0_pred.clone(), first.eps_pred.clone())
    second = next(gen)
    first2 = (second.x.clone(), second.x0_pred.clone(), second.eps_pred.clone())
    second.x.fill_(float("nan"))  # a consumer scribbling on a yielded tensor
    second.x0_pred.fill_(float("nan"))
    rest = list(gen)
    assert torch.equal(first.x, kept[0]) and torch.equal(first.x0_pred, kept[1])
    assert torch.equal(first.eps_pred, kept[2])  # the model's buffer was overwritten since, the frame was not
    assert torch.equal(first.x, ref[0].x) and torch.equal(first2[0], ref[1].x)
    assert torch.equal(first2[2], ref[1].eps_pred)
    for f, r in zip(rest, ref[2:]):
        assert torch.equal(f.x, r.x) and torch.equal(f.eps_pred, r.eps_pred)
    ptrs = [f.x.data_ptr() for f in ref] + [f.eps_pred.data_ptr() for f in ref]
    assert len(set(ptrs)) == len(ptrs)


@pytest.mark.parametrize("sampler, kw, every, steps_seen", [
    ("ddpm", {}, 6, [6, 12, 18, 20]),
    ("ddpm", {}, 5, [5, 10, 15, 20]),
    ("ddim", {"steps": 7}, 3, [3, 6, 7]),
    ("ddim", {"steps": 7}, 100, [7]),
])
def test_every_yields_every_nth_and_the_last(sched, sampler, kw, every, steps_seen):
    full = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=5, **kw))
    part = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=5, every=every, **kw))
    assert [f.step for f in part] == steps_seen
    for f in part:
        assert torch.equal(f.x, full[f.step - 1].x) and f.t == full[f.step - 1].t
    assert part[-1].is_final


@pytest.mark.parametrize("sampler, kw", [("ddpm", {}), ("ddpm", {"steps": 4}), ("ddim", {"steps": 4})])
def test_include_start_yields_x_T(sched, sampler, kw):
    frames = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=8, include_start=True, **kw))
    start = frames[0]
    assert start.step == 0 and start.t == T - 1 and start.paper_t == T and start.t_model is None
    assert start.x0_pred is None and start.eps_pred is None
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    assert torch.equal(start.x, x_T)
    assert len(frames) == _n(kw) + 1
    without = list(sample_frames(fake_model, sched, SHAPE, sampler, seed=8, **kw))
    assert torch.equal(frames[-1].x, without[-1].x)


def test_given_x_T_is_used_and_not_modified(sched):
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    keep = x_T.clone()
    f = list(ddpm_sample(fake_model, sched, SHAPE, x_T=x_T, include_start=True, seed=99))
    assert torch.equal(f[0].x, keep) and torch.equal(x_T, keep)
    # x_T from seed 0 given explicitly, or drawn from seed 0: the DDIM (deterministic) results agree
    a = sample(fake_model, sched, SHAPE, "ddim", steps=4, x_T=x_T, seed=123)
    b = sample(fake_model, sched, SHAPE, "ddim", steps=4, seed=0)
    assert torch.equal(a, b)


def test_ddpm_sample_reproduces_a_hand_written_loop(sched):
    """Algorithm 2 written out in float64 numpy with the same noise draws as the sampler's generator."""
    n = T
    g = torch.Generator().manual_seed(6)
    x = torch.randn(SHAPE, generator=g).double().numpy()
    b = np.linspace(1e-4, 0.2, T)
    a = 1 - b
    ab = np.cumprod(a)
    abp = np.concatenate([[1.0], ab[:-1]])
    for t in range(n - 1, -1, -1):
        eps = 0.3 * x + 0.01 * t
        mean = (x - b[t] / np.sqrt(1 - ab[t]) * eps) / np.sqrt(a[t])
        if t > 0:
            z = torch.randn(SHAPE, generator=g).double().numpy()
            x = mean + np.sqrt(b[t] * (1 - abp[t]) / (1 - ab[t])) * z
        else:
            x = mean
    got = sample(fake_model, sched, SHAPE, "ddpm", seed=6)
    np.testing.assert_allclose(got.double().numpy(), x, rtol=1e-4, atol=1e-4)


def test_unknown_sampler_and_bad_steps(sched):
    with pytest.raises(ValueError, match="sampler"):
        sample_frames(fake_model, sched, SHAPE, "euler_maruyama")  # "euler" is an ODE sampler now
    with pytest.raises(ValueError):
        list(ddim_sample(fake_model, sched, SHAPE, steps=0))
    with pytest.raises(ValueError):
        list(ddim_sample(fake_model, sched, SHAPE, steps=T + 1))
    with pytest.raises(ValueError):
        list(ddpm_sample(fake_model, sched, SHAPE, steps=T + 1))


def test_sample_frames_ignores_the_other_samplers_options(sched):
    a = sample(fake_model, sched, SHAPE, "ddim", steps=4, eta=0.0, variance="beta", seed=1)
    b = sample(fake_model, sched, SHAPE, "ddim", steps=4, eta=0.0, seed=1)
    assert torch.equal(a, b)
    c = sample(fake_model, sched, SHAPE, "ddpm", steps=4, eta=0.5, seed=1)
    d = sample(fake_model, sched, SHAPE, "ddpm", steps=4, seed=1)
    assert torch.equal(c, d)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_one_step_ddpm_jumps_from_x_T_to_x0_hat(sched, clip_x0):
    """steps=1 is offered by the GUI's spin box and the CLI: x_T → x̂_0 with no noise (respaced β' = 1 − ᾱ_T, ᾱ' = 1)."""
    rec = Recorder()
    frames = list(ddpm_sample(rec, sched, SHAPE, steps=1, seed=2, include_start=True, clip_x0=clip_x0))
    assert [r[0] for r in rec.ts] == [T - 1]
    assert [f.step for f in frames] == [0, 1] and frames[-1].is_final and frames[-1].t_model == T - 1
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).double().numpy()
    ab = np.cumprod(1 - np.linspace(1e-4, 0.2, T))[-1]
    eps = 0.3 * x_T + 0.01 * (T - 1)
    x0 = (x_T - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    if clip_x0:
        x0 = np.clip(x0, -1, 1)
    np.testing.assert_allclose(frames[-1].x.double().numpy(), x0, rtol=1e-4, atol=1e-4)
    assert torch.equal(sample(fake_model, sched, SHAPE, "ddpm", steps=1, seed=2, clip_x0=clip_x0), frames[-1].x)
