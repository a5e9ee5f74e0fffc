"""Tests for ode.py: step-for-step agreement with diffusers' schedulers, Euler = DDIM, and accuracy on a Gaussian."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers' schedulers are the oracle of these tests ([test] extra)")

from diffusers import (  # noqa: E402
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from diffusion_studio.core.diffusion.ode import (  # noqa: E402
    SAMPLERS, SPACINGS, OdeGrid, model_evals, ode_grid, sample_ode, sigma_to_t,
)
from diffusion_studio.core.diffusion.samplers import ddim_sample, spaced_timesteps  # noqa: E402
from diffusion_studio.core.diffusion.schedule import NoiseSchedule  # noqa: E402

diffusers_logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)
# diffusers 0.42 calls np.array(tensor, copy=False) on every set_timesteps; nothing to do with us
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]

SHAPE = (2, 3, 6, 6)
STEPS = (1, 2, 5, 10, 25)
MULTISTEP = ("dpm++2m", "unipc")
SCHEDULES = {"linear": NoiseSchedule.create("linear", T=1000), "cosine": NoiseSchedule.create("cosine", T=1000)}
DIFFUSERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
}
KARRAS_OK = {"euler", "heun", "dpm++2m", "unipc"}  # EulerAncestralDiscreteScheduler has no use_karras_sigmas

# Tolerance on x₀ (values O(1)): ATOL + K·floor, where floor is how far diffusers' own x₀ moves when every ε is scaled
# by (1 + 2⁻²¹), i.e. a 4-ulp change of the model output. Where the run is well conditioned (most linear-schedule runs)
# the floor is ~1e-6 and the tolerance ~2e-5; where it is not (a first step from σ_max ≈ 2·10⁴ on the cosine schedule,
# x₀ = (x − √(1−ᾱ)ε)/√ᾱ with 1/√ᾱ = 157 in one step, Heun's corrector over a huge step) fp32 itself cannot decide the
# answer more finely, in diffusers as here, and the tolerance says so. Measured |Δx₀|/tolerance ≤ 0.25 everywhere;
# each of ~20 deliberate bugs tried (a wrong coefficient, order, rounding or grid) fails this file.
ATOL, K_FLOOR, EPS_NUDGE = 1e-5, 2.0, 1.0 + 2.0**-21


class Eps:
    """A fixed ε(x, t), accepting fractional t, counting its calls: the ε of data ~ N(0, 0.25) plus a nonlinear term.

    ε(x, t) = √(1−ᾱ)·x/(0.25ᾱ + 1 − ᾱ) + 0.5·√ᾱ·tanh(0.3x + 0.2·roll(x) + sin(t/100)), ᾱ linearly interpolated at t.
    The first term keeps x₀ of size O(1) (it is close to the true ε of something), the second makes it nonlinear in x
    and t. Computed in float64 so neither side's result depends on one CPU's float32 kernels.
    """

    def __init__(self, schedule: NoiseSchedule, scale: float = 1.0):
        self.ab, self.T, self.scale, self.calls = schedule.alpha_bars, schedule.T, scale, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = torch.as_tensor(t).double().reshape(-1).clamp(0, self.T - 1)  # diffusers: 0-d; ours: (B,)
        i0 = t.floor().long().clamp(max=self.T - 2)
        w = t - i0
        ab = ((1 - w) * self.ab[i0] + w * self.ab[i0 + 1]).view(-1, 1, 1, 1)
        x, tt = x.double(), t.view(-1, 1, 1, 1)
        lin = (1 - ab).sqrt() * x / (0.25 * ab + 1 - ab)
        bend = 0.5 * ab.sqrt() * torch.tanh(0.3 * x + 0.2 * x.roll(1, -1) + torch.sin(tt / 100))
        return ((lin + bend) * self.scale).float()


def make_scheduler(name, schedule, spacing, karras, same_table=True, **config):
    cls, base = DIFFUSERS[name]
    cfg = dict(base, num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(), timestep_spacing=spacing)
    if karras:
        cfg["use_karras_sigmas"] = True
    sched = cls(**cfg, **config)
    if same_table:
        # diffusers takes cumprod of float32 betas: 1 − ᾱ near t = 0 loses ~1e-4 of its value and the cosine ᾱ_T is off
        # by 1.3e-5. Giving it our float64 ᾱ table (every scheduler derives its σs from alphas_cumprod in
        # set_timesteps) compares the algorithms rather than the two cumprods; test_diffusers_own_table covers the rest.
        sched.alphas_cumprod = schedule.alpha_bars.clone()
    return sched


def run_diffusers(name, schedule, spacing, karras, steps, x_T, eps, generator=None, same_table=True, **config):
    """Drive a diffusers scheduler as its pipelines do; returns (x₀, scheduler)."""
    sched = make_scheduler(name, schedule, spacing, karras, same_table, **config)
    sched.set_timesteps(steps)
    # Pipelines leave begin_index unset; then a repeated first timestep (multistep Karras on the cosine schedule
    # rounds several σs to t = 999) makes diffusers start at the second copy and run off the end. Begin at 0.
    sched.set_begin_index(0)
    x = x_T * sched.init_noise_sigma
    extra = {"generator": generator} if name == "euler_a" else {}
    for t in sched.timesteps:
        x = sched.step(eps(sched.scale_model_input(x, t), t), t, x, **extra).prev_sample
    return x, sched


def diffusers_steps(name, sched):
    """(timesteps, sigmas) per step; Heun's lists repeat every point after the first for its corrector."""
    ts, sig = sched.timesteps.double(), sched.sigmas.double()
    if name == "heun":
        return torch.cat([ts[:1], ts[1::2]]), torch.cat([sig[:1], sig[1:-1:2], sig[-1:]])
    return ts, sig


def vp_start(x_T, sched, grid):
    """Our x_T for diffusers' start x̃ = x_T·init_noise_sigma (ours is x̃ = x_T·√(1 + σ_0²), see test_start_scaling)."""
    return x_T * (float(sched.init_noise_sigma) / math.sqrt(1.0 + float(grid.sigmas[0]) ** 2))


def final(frames) -> torch.Tensor:
    *_, last = frames
    assert last.is_final
    return last.x


def run_ours(name, schedule, steps, x_T, eps, spacing="linspace", karras=False, **kw):
    return final(sample_ode(name, eps, schedule, SHAPE, steps=steps, timestep_spacing=spacing, karras=karras,
                            x_T=x_T, every=10**9, **kw))


def seeded(seed):
    """A generator seeded like sample_ode's, and the x_T it draws first."""
    gen = torch.Generator().manual_seed(seed)
    return gen, torch.randn(SHAPE, generator=gen)


def compare(name, schedule, spacing, karras, steps, seed, same_table=True, config=None, ours_kw=None, scale=1.0):
    """Run both sides from the same start; return (|Δx₀|_max, tolerance, our grid, diffusers' scheduler, calls)."""
    config, ours_kw = config or {}, ours_kw or {}
    gen_d, x_T = seeded(seed)
    state = gen_d.get_state()
    eps_d, eps_o, eps_n = Eps(schedule, scale), Eps(schedule, scale), Eps(schedule, scale * EPS_NUDGE)
    x_d, sched = run_diffusers(name, schedule, spacing, karras, steps, x_T, eps_d, gen_d, same_table, **config)
    gen_n = torch.Generator().set_state(state)
    x_n, _ = run_diffusers(name, schedule, spacing, karras, steps, x_T, eps_n, gen_n, same_table, **config)
    grid = ode_grid(name, schedule, steps, timestep_spacing=spacing, karras=karras)
    x_o_T = x_T if name in MULTISTEP else vp_start(x_T, sched, grid)
    gen_o = torch.Generator().set_state(state)  # continues after x_T exactly as diffusers' generator does
    x_o = run_ours(name, schedule, steps, x_o_T, eps_o, spacing, karras, generator=gen_o, **ours_kw)
    tol = ATOL + K_FLOOR * (x_n - x_d).abs().max().item()
    return (x_o - x_d).abs().max().item(), tol, grid, sched, (eps_o.calls, eps_d.calls)


def combos():
    for name in SAMPLERS:
        for karras in (False, True):
            if karras and name not in KARRAS_OK:
                continue
            for spacing in SPACINGS:
                yield name, spacing, karras


# ---- exactness against diffusers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("name,spacing,karras", list(combos()))
def test_matches_diffusers(kind, name, spacing, karras):
    schedule = SCHEDULES[kind]
    for steps in STEPS:
        if steps == 1 and spacing == "linspace" and name not in MULTISTEP:
            continue  # deliberate difference, see test_one_linspace_step_starts_at_T
        diff, tol, grid, sched, (ours, theirs) = compare(name, schedule, spacing, karras, steps, seed=steps)
        what = f"{name} {kind} {spacing} karras={karras} N={steps}"
        ts, sig = diffusers_steps(name, sched)
        if karras and name not in MULTISTEP:  # fractional t from log-σ interpolation, float32 in diffusers
            torch.testing.assert_close(grid.timesteps, ts, rtol=0, atol=1e-3, msg=what)
        else:
            assert torch.equal(grid.timesteps, ts), what
        torch.testing.assert_close(grid.sigmas, sig, rtol=1e-6, atol=0, msg=what)
        assert ours == theirs == model_evals(name, steps), what
        assert diff <= tol, f"{what}: |Δx₀| = {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name,spacing,karras", [c for c in combos() if c[1] != "leading"])
def test_diffusers_own_table(name, spacing, karras):
    """Linear schedule with diffusers' own float32 ᾱ: same answers, grids within its float32 σ(t) rounding."""
    for steps in (5, 25):
        diff, tol, grid, sched, _ = compare(name, SCHEDULES["linear"], spacing, karras, steps, seed=7, same_table=False)
        ts, _ = diffusers_steps(name, sched)
        torch.testing.assert_close(grid.timesteps, ts, rtol=0, atol=2e-2 if karras else 0.0)
        assert diff <= tol + 1e-4, f"{name} {spacing} karras={karras} N={steps}: {diff:.3g}"


@pytest.mark.parametrize("name,config", [
    ("heun", {"clip_sample": True, "clip_sample_range": 1.0}),
    ("dpm++2m", {"thresholding": True, "sample_max_value": 1.0}),
    ("unipc", {"thresholding": True, "sample_max_value": 1.0}),
])
def test_clip_x0_matches_diffusers(name, config):
    """clip_x0 = Heun's clip_sample, = DPM/UniPC thresholding with sample_max_value 1 (its quantile clamps to 1). The
    ε is scaled by 1.02 so that x̂₀ ≈ 157·(x − 1.02·x) leaves [−1, 1] and the clamp matters."""
    schedule = SCHEDULES["linear"]
    for steps in (2, 10):
        diff, tol, *_ = compare(name, schedule, "linspace", False, steps, seed=3, config=config,
                                ours_kw={"clip_x0": True}, scale=1.02)
        assert diff <= tol, f"{name} N={steps}: {diff:.3g} > {tol:.3g}"
        _, x_T = seeded(3)
        plain = run_ours(name, schedule, steps, x_T, Eps(schedule, 1.02))
        clipped = run_ours(name, schedule, steps, x_T, Eps(schedule, 1.02), clip_x0=True)
        assert (plain - clipped).abs().max() > 1e-2  # the clamp was active, so the comparison means something


# ---- deliberate differences from diffusers ---------------------------------------------------------------------------
def test_start_scaling():
    """We start from x̃ = x_T/√ᾱ_{t_0} = x_T·√(1 + σ_0²) (VP, like ddim_sample): diffusers' 'leading'
    init_noise_sigma. For 'linspace'/'trailing' diffusers uses σ_0 (relative difference ≈ 1/(2σ_0²): 2e-5, linear)."""
    schedule = SCHEDULES["linear"]
    for name in ("euler", "heun", "euler_a"):
        for spacing in SPACINGS:
            grid = ode_grid(name, schedule, 10, timestep_spacing=spacing)
            sched = make_scheduler(name, schedule, spacing, False)
            sched.set_timesteps(10)
            s0 = float(grid.sigmas[0])
            want = math.sqrt(1 + s0**2) if spacing == "leading" else s0
            assert float(sched.init_noise_sigma) == pytest.approx(want, rel=1e-6)
    for name in MULTISTEP:
        assert make_scheduler(name, schedule, "linspace", False).init_noise_sigma == 1.0


def test_same_x_T_leading_without_conversion():
    """With 'leading' the very same x_T (same seed) goes into both sides."""
    schedule = SCHEDULES["linear"]
    for name in ("euler", "heun", "euler_a"):
        gen_d, x_T = seeded(5)
        x_d, _ = run_diffusers(name, schedule, "leading", False, 10, x_T, Eps(schedule), gen_d)
        x_o = final(sample_ode(name, Eps(schedule), schedule, SHAPE, steps=10, timestep_spacing="leading", seed=5))
        torch.testing.assert_close(x_o, x_d, rtol=0, atol=1e-4)


def test_one_linspace_step_starts_at_T():
    """diffusers' σ-schedulers put N = 1 'linspace' at np.linspace(0, T−1, 1) = [0] (a step from σ_min, x₀ ≈ x_T);
    ours start at T − 1 like every other grid (and like DDIM with one step)."""
    schedule = SCHEDULES["linear"]
    for name in ("euler", "heun", "euler_a"):
        sched = make_scheduler(name, schedule, "linspace", False)
        sched.set_timesteps(1)
        assert sched.timesteps.tolist() == [0.0]
        assert ode_grid(name, schedule, 1).timesteps.tolist() == [999.0]


def test_grids_match_diffusers_for_many_steps():
    """Timestep grids for N = 1..40 and a few larger N (48: arange rounding 937.4999…; 61: overshoot), every
    sampler, spacing and Karras setting."""
    schedule = SCHEDULES["linear"]
    for name, spacing, karras in combos():
        for steps in [*range(1, 41), 48, 61, 97, 250, 999]:
            if steps == 1 and spacing == "linspace" and name not in MULTISTEP:
                continue  # see test_one_linspace_step_starts_at_T
            if steps > 250 and (karras or (name in MULTISTEP and spacing != "trailing")):
                continue  # N + 1 rounded points, or Karras t rounded, no longer distinct at this N
            if karras and spacing == "trailing" and name not in MULTISTEP and steps == 61:
                continue  # 61 overshoots: diffusers' extra t = −1 point also moves its Karras σ_min to σ(0)
            sched = make_scheduler(name, schedule, spacing, karras)
            sched.set_timesteps(steps)
            ts, sig = diffusers_steps(name, sched)
            grid = ode_grid(name, schedule, steps, timestep_spacing=spacing, karras=karras)
            n = grid.n_steps
            assert n == steps
            if karras and name not in MULTISTEP:
                torch.testing.assert_close(grid.timesteps, ts[:n], rtol=0, atol=1e-3)
            else:
                assert torch.equal(grid.timesteps, ts[:n]), (name, spacing, karras, steps)
            torch.testing.assert_close(grid.sigmas[:n], sig[:n], rtol=1e-6, atol=0)


def test_trailing_overshoot():
    """np.arange(T, 0, −T/N) has N + 1 entries for some N (61 of them for T = 1000): diffusers then adds a step at
    t = −1. Ours keep exactly N steps, the first N of diffusers'."""
    schedule = SCHEDULES["linear"]
    for name in ("euler", "dpm++2m"):
        sched = make_scheduler(name, schedule, "trailing", False)
        sched.set_timesteps(61)
        grid = ode_grid(name, schedule, 61, timestep_spacing="trailing")
        assert len(sched.timesteps) == 62 and sched.timesteps[-1] == -1
        assert grid.n_steps == 61 and torch.equal(grid.timesteps, sched.timesteps[:61].double())


# ---- Euler is DDIM (η = 0), Euler ancestral is DDIM (η = 1) ------------------------------------------------------
def _ddim_frames(schedule, steps, eta=0.0, seed=11):
    return list(ddim_sample(Eps(schedule), schedule, SHAPE, steps=steps, eta=eta, seed=seed))


@pytest.mark.parametrize("steps", [1, 2, 4, 10, 28])
def test_euler_linspace_is_ddim_when_grid_is_whole(steps):
    """ddim_sample steps through spaced_timesteps (linspace rounded, both ends) and jumps to ᾱ = 1. Euler's 'linspace'
    grid is np.linspace(0, T−1, N), unrounded: the two are the same grid, hence the same sampler step for step,
    exactly when (T − 1)/(N − 1) is whole (T = 1000: N ∈ {1, 2, 4, 10, 28, 38, 112, …})."""
    schedule = SCHEDULES["linear"]
    assert ode_grid("euler", schedule, steps).timesteps.tolist() == spaced_timesteps(schedule.T, steps)
    ours = list(sample_ode("euler", Eps(schedule), schedule, SHAPE, steps=steps, seed=11))
    ddim = _ddim_frames(schedule, steps)
    assert [(f.step, f.t, f.t_model) for f in ours] == [(f.step, f.t, f.t_model) for f in ddim]
    for a, b in zip(ours, ddim):
        for u, v in ((a.x, b.x), (a.x0_pred, b.x0_pred), (a.eps_pred, b.eps_pred)):
            torch.testing.assert_close(u, v, rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps", [5, 25, 50])
def test_euler_on_ddim_grid_is_ddim(steps):
    """Otherwise (e.g. N = 25: t = 999 − 41.625k) the grids differ; on ddim's own grid Euler is DDIM again."""
    schedule = SCHEDULES["linear"]
    assert not ode_grid("euler", schedule, steps).integral  # fractional t: not ddim's rounded grid
    grid = OdeGrid.from_timesteps(schedule, spaced_timesteps(schedule.T, steps))
    x_o = final(sample_ode("euler", Eps(schedule), schedule, SHAPE, grid=grid, seed=11))
    x_d = _ddim_frames(schedule, steps)[-1].x
    torch.testing.assert_close(x_o, x_d, rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps", [2, 10, 28])
def test_euler_ancestral_is_ddim_eta_one(steps):
    """σ_up·√ᾱ' is DDIM's σ_t at η = 1 and the noise comes from the same seeded generator after x_T."""
    schedule = SCHEDULES["linear"]
    x_o = final(sample_ode("euler_a", Eps(schedule), schedule, SHAPE, steps=steps, seed=11))
    torch.testing.assert_close(x_o, _ddim_frames(schedule, steps, eta=1.0)[-1].x, rtol=0, atol=1e-4)


# ---- accuracy on a Gaussian, where the ODE is solved in closed form -----------------------------------------------
def _gaussian_case(m=0.3, s=0.5):
    """x₀ ~ N(m, s²): ε*(x_t, t) = σ(x̃ − m)/(s² + σ²), x̃ = x_t/√ᾱ, σ(t) by log-linear interpolation (exact at
    whole t, and the inverse of sigma_to_t); the ODE keeps (x̃ − m)/√(s² + σ²) constant."""
    schedule = SCHEDULES["linear"]
    log_sig = torch.log(torch.sqrt((1 - schedule.alpha_bars) / schedule.alpha_bars))

    def eps_star(x, t):
        t = t.double().reshape(-1, 1, 1, 1)
        i0 = t.floor().long().clamp(0, schedule.T - 2)
        sig = torch.exp(log_sig[i0] + (t - i0) * (log_sig[i0 + 1] - log_sig[i0]))
        x_tilde = x.double() * torch.sqrt(1 + sig**2)
        return (sig * (x_tilde - m) / (s * s + sig**2)).float()

    def exact(x_T, sigma_0):
        x_tilde = x_T.double() * math.sqrt(1 + sigma_0**2)
        return m + (x_tilde - m) * s / math.sqrt(s * s + sigma_0**2)

    return schedule, eps_star, exact


def test_dpmpp_2m_beats_euler_on_gaussian():
    """10 steps on the same σ grid, uniform in λ = −log σ (Lu et al.'s spacing) from σ(T−1) to σ(0), then σ = 0:
    DPM-Solver++(2M) lands far closer to the exact ODE solution than Euler (measured: 0.05 vs 0.39)."""
    schedule, eps_star, exact = _gaussian_case()
    table = torch.sqrt((1 - schedule.alpha_bars) / schedule.alpha_bars).numpy()
    sig = np.exp(np.linspace(np.log(table[-1]), np.log(table[0]), 10))
    grid = OdeGrid(torch.from_numpy(sigma_to_t(sig, schedule)), torch.from_numpy(np.append(sig, 0.0)))
    shape = (4, 3, 8, 8)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1))  # what sample_ode draws for seed=1
    truth = exact(x_T, float(grid.sigmas[0]))
    err = {}
    for name in ("euler", "dpm++2m", "unipc"):
        x0 = final(sample_ode(name, eps_star, schedule, shape, grid=grid, seed=1))
        err[name] = (x0.double() - truth).abs().max().item()
    assert err["dpm++2m"] < err["euler"] / 4, err
    assert err["unipc"] < err["euler"] / 3, err
    # and on diffusers' own Karras grids (DPM's t rounded to whole steps, as diffusers does) it still wins
    karras = {n: final(sample_ode(n, eps_star, schedule, shape, steps=10, karras=True, seed=1))
              for n in ("euler", "dpm++2m")}
    k_err = {n: (x.double() - exact(x_T, float(ode_grid(n, schedule, 10, karras=True).sigmas[0]))).abs().max().item()
             for n, x in karras.items()}
    assert k_err["dpm++2m"] < k_err["euler"] / 2, k_err


# ---- frames, options, errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLERS)
def test_frames(name):
    schedule = SCHEDULES["linear"]
    eps = Eps(schedule)
    frames = list(sample_ode(name, eps, schedule, SHAPE, steps=5, seed=2, include_start=True))
    grid = ode_grid(name, schedule, 5)
    ts = grid.t_values()
    assert [f.step for f in frames] == list(range(6)) and all(f.n_steps == 5 for f in frames)
    assert [f.t for f in frames] == ts + [-1] and [f.t_model for f in frames] == [None] + ts
    assert frames[-1].is_final and frames[0].x0_pred is None
    assert torch.equal(frames[0].x, seeded(2)[1])
    assert eps.calls == model_evals(name, 5)
    if name != "euler_a":  # every deterministic step is a DDIM step with the x̂₀ and ε it reports
        for f, ab in zip(frames[1:], grid.alpha_bars[1:].tolist()):
            rebuilt = math.sqrt(ab) * f.x0_pred + math.sqrt(1 - ab) * f.eps_pred
            torch.testing.assert_close(f.x, rebuilt, rtol=1e-5, atol=1e-4)
    every = list(sample_ode(name, Eps(schedule), schedule, SHAPE, steps=5, seed=2, every=2))
    assert [f.step for f in every] == [2, 4, 5]
    torch.testing.assert_close(every[-1].x, frames[-1].x, rtol=0, atol=0)


def test_same_start_for_all_samplers():
    schedule = SCHEDULES["linear"]
    starts = [next(iter(sample_ode(n, Eps(schedule), schedule, SHAPE, steps=3, seed=4, include_start=True))).x
              for n in SAMPLERS]
    ddim_start = next(iter(ddim_sample(Eps(schedule), schedule, SHAPE, steps=3, seed=4, include_start=True))).x
    for x in starts:
        assert torch.equal(x, ddim_start)


def test_model_gets_long_or_float_t():
    schedule = SCHEDULES["linear"]
    seen = []

    def model(x, t):
        seen.append(t.dtype)
        return torch.zeros_like(x)

    final(sample_ode("euler", model, schedule, SHAPE, steps=10))  # 999, 888, …, 0: whole
    final(sample_ode("euler", model, schedule, SHAPE, steps=25))  # 999 − 41.625k: fractional
    final(sample_ode("heun", model, schedule, SHAPE, steps=4, karras=True))
    final(sample_ode("dpm++2m", model, schedule, SHAPE, steps=4, karras=True))  # rounded like diffusers
    assert seen == [torch.long] * 10 + [torch.float32] * 25 + [torch.float32] * 7 + [torch.long] * 4


def test_euler_ancestral_noise_options():
    schedule = SCHEDULES["linear"]
    gen, x_T = seeded(9)
    noises = [torch.randn(SHAPE, generator=gen) for _ in range(9)]  # the 10th step has σ_up = 0
    by_seed = final(sample_ode("euler_a", Eps(schedule), schedule, SHAPE, steps=10, seed=9))
    by_list = final(sample_ode("euler_a", Eps(schedule), schedule, SHAPE, steps=10, x_T=x_T, noises=noises))
    gen2, _ = seeded(9)
    by_gen = final(sample_ode("euler_a", Eps(schedule), schedule, SHAPE, steps=10, x_T=x_T, generator=gen2))
    assert torch.equal(by_seed, by_list) and torch.equal(by_seed, by_gen)
    other = final(sample_ode("euler_a", Eps(schedule), schedule, SHAPE, steps=10, x_T=x_T, noises=noises[::-1]))
    assert (other - by_seed).abs().max() > 1e-2
    with pytest.raises(ValueError):
        sample_ode("euler_a", Eps(schedule), schedule, SHAPE, steps=10, noises=noises[:5])


def test_grid_properties():
    schedule = SCHEDULES["linear"]
    for name in SAMPLERS:
        for spacing in SPACINGS:
            for karras in (False, True):
                g = ode_grid(name, schedule, 25, timestep_spacing=spacing, karras=karras)
                assert g.n_steps == 25 and g.sigmas[-1] == 0 and bool((g.sigmas[1:] < g.sigmas[:-1]).all())
                assert g.alpha_bars[-1] == 1
    assert ode_grid("dpm++2m", schedule, 10).timesteps.tolist() == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    assert ode_grid("dpm++2m", schedule, 10, timestep_spacing="leading").timesteps.tolist()[:2] == [900, 810]
    assert ode_grid("euler", schedule, 10, timestep_spacing="leading").timesteps.tolist()[:2] == [900, 800]
    assert ode_grid("unipc", schedule, 10, timestep_spacing="trailing").timesteps.tolist()[-1] == 99
    assert [model_evals(n, 10) for n in SAMPLERS] == [10, 19, 10, 10, 10]


def test_errors_are_raised_at_call_time():
    schedule = SCHEDULES["linear"]
    eps = Eps(schedule)
    with pytest.raises(ValueError, match="unknown ODE sampler"):
        sample_ode("ddim", eps, schedule, SHAPE, steps=5)
    with pytest.raises(ValueError, match="timestep_spacing"):
        sample_ode("euler", eps, schedule, SHAPE, steps=5, timestep_spacing="uniform")
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            sample_ode("euler", eps, schedule, SHAPE, steps=bad)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ode_grid("dpm++2m", schedule, 1000)  # N + 1 rounded linspace points in 0..999 must repeat
    with pytest.raises(ValueError):
        OdeGrid(torch.tensor([10.0, 20.0]), torch.tensor([1.0, 2.0, 0.0]))
    assert eps.calls == 0


# ---- DDIM against diffusers' DDIMScheduler ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("spacing,steps", [("leading", n) for n in (1, 2, 7, 10, 50)] +
                         [("trailing", n) for n in (1, 2, 10, 50, 250)])
def test_ddim_matches_diffusers(kind, spacing, steps):
    """Our DDIM steps from grid point to grid point and ends with the jump to ᾱ = 1; diffusers' DDIMScheduler
    (set_alpha_to_one) steps t → t − ⌊T/N⌋: the same steps for 'leading', and for 'trailing' when N divides T."""
    from diffusers import DDIMScheduler

    schedule = SCHEDULES[kind]
    sched = DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(),
                          timestep_spacing=spacing, set_alpha_to_one=True, clip_sample=False)
    sched.alphas_cumprod = schedule.alpha_bars.clone()  # our float64 table, as above
    sched.set_timesteps(steps)
    assert [int(t) for t in sched.timesteps] == spaced_timesteps(schedule.T, steps, spacing)
    _, x_T = seeded(steps)
    eps_d, eps_o, eps_n = Eps(schedule), Eps(schedule), Eps(schedule, EPS_NUDGE)

    def theirs(eps):
        x = x_T.clone()
        for t in sched.timesteps:
            x = sched.step(eps(x, t), t, x, eta=0.0).prev_sample
        return x

    x_d, x_n = theirs(eps_d), theirs(eps_n)
    x_o = final(ddim_sample(eps_o, schedule, SHAPE, steps=steps, timestep_spacing=spacing, x_T=x_T, every=10**9))
    tol = ATOL + K_FLOOR * (x_n - x_d).abs().max().item()
    assert eps_o.calls == eps_d.calls == steps
    assert (x_o - x_d).abs().max().item() <= tol


def test_spacings_start_and_end_where_diffusers_says():
    """The first and last timestep of each spacing (diffusers issues 2585, 9261, 10003 were off-by-ones here)."""
    T = 1000
    assert spaced_timesteps(T, 50)[0] == 999 and spaced_timesteps(T, 50)[-1] == 0
    assert spaced_timesteps(T, 50, "leading")[0] == 980 and spaced_timesteps(T, 50, "leading")[-1] == 0
    assert spaced_timesteps(T, 50, "trailing")[0] == 999 and spaced_timesteps(T, 50, "trailing")[-1] == 19
    assert len(spaced_timesteps(T, 61, "trailing")) == 61  # numpy's arange gives 62 values there
    with pytest.raises(ValueError, match="timestep_spacing"):
        spaced_timesteps(T, 5, "middle")
