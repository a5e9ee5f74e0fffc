"""Issue 10, section 2: the shared colour mapping and pixel histogram (Forward), the sampling run curves and the
Schedule dock following the sampling frames, the comparison images, the x_T warning, the clickable filmstrip and
the player's first/last buttons. Expected numbers are computed here from β and the seeds' formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt

from diffusion_studio import resources
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.diffusion.pixel_stats import (
    bin_edges, marginal_density, normal_pdf, pixel_density, prior_mismatch,
)
from diffusion_studio.core.diffusion.reverse import ddim_step, ddpm_step
from diffusion_studio.core.diffusion.run_stats import RunStats, step_sigma
from diffusion_studio.core.diffusion.samplers import sample_frames, spaced_timesteps
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, preset_config
from diffusion_studio.gui.panels.forward.ui import film_paper_ts
from diffusion_studio.gui.panels.forward.extras import film_index_at
from diffusion_studio.gui.state import SelectedImage

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 60_000


def alpha_bars(schedule: NoiseSchedule) -> np.ndarray:
    """ᾱ from β alone, with ᾱ at index −1 (the clean image) = 1 prepended: ab[i + 1] is index i."""
    return np.concatenate([[1.0], np.cumprod(1.0 - schedule.betas.numpy())])


def make_image(size: int = 32, seed: int = 0) -> SelectedImage:
    rng = np.random.default_rng(seed)
    display = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    x0 = torch.from_numpy(display).permute(2, 0, 1).float() / 127.5 - 1.0
    return SelectedImage("test", x0.contiguous(), display, "test")


def shown(x: torch.Tensor, L: float) -> np.ndarray:
    """The stated colour mapping: v → 255·(v + L)/(2L), clipped, as (H, W, C) uint8."""
    u8 = torch.clamp(x.double() * (127.5 / L) + 127.5, 0, 255).round().to(torch.uint8)
    return u8.permute(1, 2, 0).numpy()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


# ---- core: σ of each step, pixel densities, the prior warning ------------------------------------------------------
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_step_sigma_is_the_noise_the_ddpm_step_adds(variance):
    s = NoiseSchedule.create("linear", 40)
    ab = alpha_bars(s)
    x = torch.zeros(1, 1, 2, 2)
    for t in (39, 20, 1, 0):
        res = ddpm_step(s, x, t, torch.zeros_like(x), variance=variance, noise=torch.ones_like(x))
        want = 0.0 if t == 0 else math.sqrt(float(s.betas[t]) * ((1 - ab[t]) / (1 - ab[t + 1])
                                                                 if variance == "beta_tilde" else 1.0))
        got = step_sigma(s, t, t - 1, "ddpm", variance)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert got == pytest.approx(float((res.x_prev - res.mean).flatten()[0]), rel=1e-5, abs=1e-7)


def test_step_sigma_over_skipped_steps_matches_ddim_and_respacing():
    s = NoiseSchedule.create("cosine", 100)
    ab = alpha_bars(s)
    ts = spaced_timesteps(100, 7)
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        res = ddim_step(s, torch.zeros(1, 1, 2, 2), t, t_prev, torch.zeros(1, 1, 2, 2), eta=0.7,
                        noise=torch.ones(1, 1, 2, 2))
        assert step_sigma(s, t, t_prev, "ddim", eta=0.7) == pytest.approx(float((res.x_prev - res.mean).flatten()[0]),
                                                                                abs=1e-6)
        beta = 1 - ab[t + 1] / ab[t_prev + 1]                                 # the respaced β'
        want = 0.0 if t_prev < 0 else math.sqrt(beta * (1 - ab[t_prev + 1]) / (1 - ab[t + 1]))
        assert step_sigma(s, t, t_prev, "ddpm") == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert step_sigma(s, ts[0], ts[1], "ddim", eta=0.0) == 0.0


def test_run_stats_follow_the_frames():
    s = NoiseSchedule.create("linear", 20)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, 1, 4, 4, generator=g)
    fn = lambda x, t: 0.5 * x + w  # noqa: E731  a fixed, non-trivial ε_θ
    frames = list(sample_frames(fn, s, (2, 1, 4, 4), "ddpm", seed=2, include_start=True))
    rs = RunStats(s, "ddpm", "beta_tilde")
    stats = [rs.update(f) for f in frames]
    assert stats[0] is None and len(rs.history) == 20
    assert [st.paper_t for st in rs.history] == list(range(20, 0, -1))
    assert math.isnan(rs.history[0].x0_change)
    for prev, f, st in zip(frames[1:], frames[2:], rs.history[1:]):
        want = float(np.sqrt(np.mean((f.x0_pred.numpy().astype(np.float64) - prev.x0_pred.numpy()) ** 2)))
        assert st.x0_change == pytest.approx(want, rel=1e-4)
        assert st.eps_std == pytest.approx(float(np.std(f.eps_pred.numpy().astype(np.float64), ddof=1)), rel=1e-4)
    assert rs.history[-1].sigma == 0.0 and rs.history[0].sigma > 0


def test_pixel_density_and_the_marginal_it_tends_to():
    edges = bin_edges(64, -4, 4)
    x0 = make_image(8).x0
    d0 = pixel_density(x0, edges)
    assert float(np.sum(d0 * np.diff(edges))) == pytest.approx(1.0)
    ab = 0.3
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=g)
                         for _ in range(400)])
    centres = 0.5 * (edges[1:] + edges[:-1])
    emp = pixel_density(draws, edges)
    theory = marginal_density(x0, ab, centres)
    assert np.abs(emp - theory).max() < 0.03 and theory.max() > 0.2
    assert normal_pdf(np.array([0.0, 1.0]))[1] == pytest.approx(math.exp(-0.5) / math.sqrt(2 * math.pi))
    # x_T of the seeds' schedule is N(0, 1) to within sampling error
    s = NoiseSchedule.create("linear", 1000)
    eps = torch.randn(3, 64, 64, generator=g)
    x_T = float(s.sqrt_alpha_bars[-1]) * make_image(64).x0 + float(s.sqrt_one_minus_alpha_bars[-1]) * eps
    assert np.abs(pixel_density(x_T, edges) - normal_pdf(centres)).max() < 0.06


def test_a_fixed_sample_of_a_large_image_gives_its_histogram():
    from diffusion_studio.core.diffusion.pixel_stats import MAX_HIST_VALUES, pixel_sample

    edges = bin_edges()
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(2, 256, 256, generator=g), torch.rand(1, 256, 256, generator=g) * 2 - 1])
    sub = pixel_sample(x)
    assert MAX_HIST_VALUES // 2 < sub.size <= MAX_HIST_VALUES
    assert np.array_equal(sub, pixel_sample(x))                       # the same pixels every time
    full, _ = np.histogram(x.numpy().ravel(), bins=edges)
    assert np.abs(pixel_density(sub, edges) - full / x.numel() / np.diff(edges)).max() < 0.03
    small = torch.randn(3, 32, 32, generator=g)
    assert pixel_sample(small).size == small.numel()                  # small images: every pixel


def test_prior_mismatch_names_alpha_bar_T():
    msg = prior_mismatch(NoiseSchedule.create("linear", 2))
    assert msg is not None and "0.98" in msg and "N(0, I)" in msg
    assert prior_mismatch(NoiseSchedule.create("linear", 100)) is not None  # ᾱ_T ≈ 0.36
    assert prior_mismatch(NoiseSchedule.create("linear", 1000)) is None
    assert prior_mismatch(NoiseSchedule.create("cosine", 1000)) is None


def test_film_index_at_splits_frames_and_gaps():
    shape = (64, 8 * 64 + 7 * 2, 3)
    assert [film_index_at(shape, x, 8) for x in (0, 63, 64.9, 66, 129, 130.5, 131.5, 8 * 66 - 3)] == [0, 0, 0, 1, 1, 1, 2, 7]


# ---- Forward: shared colour mapping, histogram, filmstrip clicks, warning ------------------------------------------
@pytest.fixture
def forward(qtbot, settings):
    from diffusion_studio.gui.panels.forward.panel import ForwardPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    state = AppState(device="cpu")
    pool = WorkerPool()
    state.set_image(make_image())
    p = ForwardPanel(state, pool, settings)
    qtbot.addWidget(p)
    p.resize(900, 800)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert pool.shutdown(10000)


@pytest.mark.parametrize("L", [1.0, 3.0])
def test_x0_eps_and_x_t_share_one_stated_mapping(forward, L):
    p = forward
    p.extras.scale_combo.setCurrentIndex(p.extras.scale_combo.findData(L))
    assert p.display_range == L and p.extras.colour_bar.value_range == L
    assert f"{L:g}" in p.extras.colour_bar.toolTip()
    x0 = p.state.image.x0
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(p.seed))
    assert max_diff(p.noise_pane.current, shown(eps, L)) <= 1
    assert max_diff(p.x0_pane.current, shown(x0, L)) <= 1
    ab = alpha_bars(p.state.schedule)
    for paper_t in (300, 1000):
        p.set_paper_t(paper_t)
        a = ab[paper_t]
        assert max_diff(p.xt_pane.current, shown(math.sqrt(a) * x0 + math.sqrt(1 - a) * eps, L)) <= 1
    # at t = T, x_T ≈ ε, and now they look alike: within 2 grey levels everywhere
    assert max_diff(p.xt_pane.current, p.noise_pane.current) <= 2
    if L != 1.0:  # a choice is remembered
        assert float(p.settings.value("forward/display_range")) == L


def test_histogram_moves_with_t_from_x0_to_the_prior(forward):
    p = forward
    h = p.extras.histogram
    edges = bin_edges()
    x0 = p.state.image.x0.double()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(p.seed)).double()
    ab = alpha_bars(p.state.schedule)
    want_x0, _ = np.histogram(x0.numpy().ravel(), bins=edges)
    assert np.allclose(h.x0_density, want_x0 / x0.numel() / np.diff(edges))
    seen = []
    for paper_t in (0, 100, 500, 1000):
        p.set_paper_t(paper_t)
        x = math.sqrt(ab[paper_t]) * x0 + math.sqrt(1 - ab[paper_t]) * eps
        counts, _ = np.histogram(x.numpy().ravel(), bins=edges)
        want = counts / x.numel() / np.diff(edges)
        # a pixel on a bin edge may fall either side in float32 vs float64: a few counts at most
        assert np.abs(h.xt_density - want).max() * np.diff(edges)[0] * x.numel() <= 4
        assert f"t = {paper_t}" in h.plotItem.titleLabel.text
        seen.append(h.xt_density.copy())
    centres = 0.5 * (edges[1:] + edges[:-1])
    dist_to_prior = [np.abs(d - normal_pdf(centres)).sum() for d in seen]
    assert dist_to_prior[0] > dist_to_prior[2] > dist_to_prior[3]  # the data distribution turns into N(0, 1)
    assert np.allclose(seen[0], h.x0_density)


def click_film(p, qtbot, frame: int):
    film = p.filmstrip
    n = len(film_paper_ts(p.state.schedule.T))
    gap = max(2, film.shape[0] // 32)
    w = (film.shape[1] - (n - 1) * gap) / n
    scene = p.film_pane.item.mapToScene(QPointF(frame * (w + gap) + w / 2, film.shape[0] / 2))
    pos = p.film_pane.mapFromScene(scene)
    qtbot.mouseClick(p.film_pane.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(pos.x()), int(pos.y())))


def test_clicking_a_filmstrip_frame_jumps_to_its_t(forward, qtbot):
    p = forward
    ts = film_paper_ts(p.state.schedule.T)
    for frame in (2, 7, 0, 5):
        click_film(p, qtbot, frame)
        assert p.state.paper_t == ts[frame]
        assert p.t_label.text() == f"t = {ts[frame]}"


def test_x_T_warning_when_x_T_is_not_noise(forward):
    p = forward
    w = p.extras.prior_warning
    assert w.isHidden()
    p.state.set_schedule(NoiseSchedule.create("linear", 2))
    assert w.isVisible() and "0.98" in w.text() and "N(0, I)" in w.text()
    p.state.set_schedule(NoiseSchedule.create("linear", 1000))
    assert w.isHidden()


# ---- the window: Schedule dock (warning, comparison images, sampling cursor), Sampling run curves -----------------
def make_checkpoint(path, T=30):
    torch.manual_seed(0)
    cfg = preset_config("tiny", 16, 1)
    model = UNet(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(model.out[-1].weight, std=0.05)
    meta = {"step": 3, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", T).to_dict(),
            "data": {"spec": "test"}}
    return save_checkpoint(path, {"ema": dict(model.state_dict())}, meta)


@pytest.fixture
def no_builtin_models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: root)


def test_schedule_dock_warns_and_compares_images(window):
    sp = window.schedule
    assert sp.prior_warning.isHidden()
    sp.form.set_values("linear", 2, {})
    sp.form.validate()
    assert window.state.schedule.T == 2
    assert sp.prior_warning.isVisible() and "0.98" in sp.prior_warning.text()
    sp.form.set_values("linear", 1000, {})
    sp.form.validate()
    assert sp.prior_warning.isHidden()

    window.state.set_image(make_image(24, seed=3))
    ci = sp.compare_images
    assert ci.isHidden()                       # only while comparing
    sp.compare_form.set_values("cosine", 1000, {})
    sp.compare.setChecked(True)
    sp.compare_form.validate()
    window.state.set_t(299)
    assert ci.isVisible() and ci.shown_t == (300, 300)
    x0 = window.state.image.x0
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for pane, sched in ((ci.solid_pane, window.state.schedule), (ci.dashed_pane, sp.compare_schedule)):
        a = alpha_bars(sched)[300]
        assert max_diff(pane.current, shown(math.sqrt(a) * x0 + math.sqrt(1 - a) * eps, 1.0)) <= 1
    assert "cosine" in sp.compare_schedule.kind and "ᾱ" in ci.dashed_pane.label.text
    assert not np.array_equal(ci.solid_pane.current, ci.dashed_pane.current)
    sp.normalise.setChecked(True)              # same t/T for schedules of different T
    sp.compare_form.set_values("cosine", 500, {})
    sp.compare_form.validate()
    assert ci.shown_t == (300, 150)
    sp.compare.setChecked(False)
    assert ci.isHidden()


def test_sampling_frames_drive_schedule_cursor_and_run_curves(no_builtin_models, window, qtbot, tmp_path):
    sp, sc = window.sampling, window.schedule
    path = make_checkpoint(tmp_path / "tiny.json", T=30)
    window.show_panel(sp)  # first (no shipped model here, so nothing starts by itself), then load
    with qtbot.waitSignal(sp.model_loaded, timeout=WAIT_MS):
        sp.open_checkpoint(path)
    assert not sp.running
    c = sp.controls
    c.select_sampler("ddpm", "beta_tilde")
    c.steps_spin.setValue(30)
    c.n_spin.setValue(2)
    c.every_spin.setValue(3)
    with qtbot.waitSignal(sp.run_finished, timeout=WAIT_MS) as blocker:
        sp.start()
    assert blocker.args[0] == "done"

    rc = sp.tabs.run_curves
    assert sp.job.sampler == "ddpm", sp.job
    assert sp.tabs.tab("Run curves") is rc and sp.tabs.tabText(0) == "Run curves"
    assert rc.t == list(range(30, 0, -1))                       # every step, not only the recorded frames
    sched = NoiseSchedule.create("linear", 30)
    ab = alpha_bars(sched)
    want = [math.sqrt(float(sched.betas[i]) * (1 - ab[i]) / (1 - ab[i + 1])) if i else 0.0 for i in range(29, -1, -1)]
    assert np.allclose(rc.values["sigma"], want, rtol=1e-6, atol=1e-9)
    assert math.isnan(rc.values["x0_change"][0]) and all(v >= 0 for v in rc.values["x0_change"][1:])
    assert all(0.0 < v < 10 for v in rc.values["eps_std"])
    xs, ys = rc.curves["sigma"].getData()
    assert list(xs) == rc.t and np.allclose(ys, want)

    bar = sp.player_bar
    window.state.set_schedule(sched)       # the app's schedule is the model's: the cursor sits at the frame's t
    qtbot.mouseClick(bar.first_button, Qt.MouseButton.LeftButton)
    assert bar.index == 0 and window.state.reverse_t == (30, 30)
    assert sc.sampling_cursor.lines[0].isVisible() and sc.sampling_cursor.lines[0].value() == pytest.approx(30)
    assert "sampling t = 30" in sc.sampling_cursor.lines[0].label.format
    qtbot.mouseClick(bar.last_button, Qt.MouseButton.LeftButton)
    assert bar.index == bar.count - 1 and window.state.reverse_t == (0, 30)
    assert sc.sampling_cursor.lines[0].value() == pytest.approx(0)
    for i in (3, 5):                                            # scrubbing moves it too
        bar.slider.setValue(i)
        t = sp.frames[i].paper_t
        assert window.state.reverse_t == (t, 30)
        assert all(line.value() == pytest.approx(t) for line in sc.sampling_cursor.lines)
        assert rc.cursor.value() == pytest.approx(sp.frames[i].t_model + 1)
    # the app's schedule has T = 1000 and the run T = 30: the cursor sits at the same fraction, and says so
    window.state.set_schedule(NoiseSchedule.create("linear", 1000))
    bar.slider.setValue(1)
    t = sp.frames[1].paper_t
    assert sc.sampling_cursor.lines[0].value() == pytest.approx(t / 30 * 1000)
    assert f"sampling t = {t} / 30" in sc.sampling_cursor.lines[0].label.format

    # one line adds a tab to the fourth quadrant
    from PySide6.QtWidgets import QLabel
    i = sp.tabs.add_tab(QLabel("x"), "Extra", "a test tab")
    assert sp.tabs.tabText(i) == "Extra" and sp.tabs.show_tab("Extra") and sp.tabs.currentIndex() == i


def test_a_long_title_does_not_push_the_image_past_a_narrow_panes_edge(qtbot):
    from diffusion_studio.gui.widgets.imageview import ImagePane

    pane = ImagePane("x")
    qtbot.addWidget(pane)
    pane.resize(130, 300)
    pane.show()
    qtbot.waitExposed(pane)
    pane.show_u8(np.zeros((74, 74), np.uint8))
    pane.set_title("predicted ε ÷ 3 (at t = 869), a title wider than the pane")
    qtbot.wait(50)
    r = pane.view.sceneBoundingRect()
    assert r.left() >= 0 and r.right() <= pane.viewport().width() + 1
    pane.resize(110, 300)                                   # and after a resize
    qtbot.wait(50)
    assert pane.view.sceneBoundingRect().right() <= pane.viewport().width() + 1
