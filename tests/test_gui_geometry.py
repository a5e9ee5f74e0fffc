"""The 2-D tab (issue 22): its views fill and follow t, the field drawn is −ε̂/√(1−ᾱ_t) of the model (the network's
and the ideal denoiser's) at the grid points, training runs in a worker with a live loss and field, the SDE and ODE
particles start from one x_T, points can be drawn, erased and saved."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_studio.core.diffusion.ideal import IdealDenoiser
from diffusion_studio.data.points_csv import load_points_csv
from diffusion_studio.jobs.geometry import lab

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 180_000


@pytest.fixture
def tab(qtbot, settings):
    from diffusion_studio.gui.panels.geometry.panel import GeometryPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    p = GeometryPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1100, 760)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=20_000)


def _choose(tab, key):
    tab.source_combo.setCurrentIndex(tab.source_combo.findData(key))


def test_the_views_fill_and_follow_t(tab):
    _choose(tab, "toy:8gaussians")
    assert len(tab.set) == tab.n_spin.value() and tab.dataset.class_names and "8 classes" in tab.data_label.text()
    tab.state.set_t(-1)
    assert tab.cloud.points_item.data.size == 0  # t = 0: the data itself, nothing noised
    tab.state.set_t(499)
    noised = np.column_stack(tab.cloud.points_item.getData())
    assert noised.shape == (len(tab.set), 2)
    want = tab.dataset.standardiser.inverse(lab.noised(tab.dataset.points, tab.state.schedule, 500).double().numpy())
    assert np.allclose(noised, want, atol=1e-4)
    heights = tab.marg_x.hist.getData()[1]
    assert abs(heights.sum() * 0.2 - 1.0) < 0.05  # a density over 40 bins of width 0.2
    assert "t = 500" in tab.t_label.text() and tab.t_slider.value() == 500
    tab.state.set_t(999)
    xs = np.column_stack(tab.cloud.points_item.getData())
    assert not np.allclose(xs, noised)


def test_the_ideal_field_drawn_is_minus_eps_over_sigma(tab):
    _choose(tab, "toy:moons")
    tab.state.set_t(199)
    tab.field_combo.setCurrentIndex(tab.field_combo.findData("ideal"))
    at_std, at_data = tab._grid()
    den = IdealDenoiser(tab.dataset.points, tab.state.schedule)
    t = torch.full((len(at_std),), 199)
    eps = den(at_std.double(), t)
    score = -eps / tab.state.schedule.sqrt_one_minus_alpha_bars[199]
    # drawn: segments from each grid point along the score (in data units), all scaled by one factor
    xs, ys = tab.field_plot.arrows["ideal"].getData()
    seg = np.column_stack([xs, ys])
    tails, heads = seg[0::2], seg[1::2]
    assert np.allclose(tails, at_data, atol=1e-5)
    drawn = (heads - tails) / tab.dataset.standardiser.std
    expected = score.numpy()
    k = np.linalg.norm(drawn) / np.linalg.norm(expected)
    assert np.allclose(drawn, k * expected, atol=1e-4 * np.abs(drawn).max())
    assert np.allclose(lab.field(lambda x, tt: den(x, tt), tab.state.schedule, 200, at_std).numpy(), expected,
                       atol=1e-4)


def test_training_shows_the_loss_and_the_field_then_sde_and_ode_paths_from_one_x_T(tab, qtbot):
    _choose(tab, "toy:8gaussians")
    tab.steps_spin.setValue(150)
    tab.particles_spin.setValue(300)
    tab.ode_steps.setValue(10)
    worker = tab.start_training()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    qtbot.waitUntil(lambda: tab.worker is None and tab.model is not None, timeout=20_000)
    steps, losses = tab.loss_plot.curve.getData()
    assert len(steps) >= 10 and steps[-1] == 150 and np.isfinite(losses).all()
    assert "Trained 150 steps" in tab.train_label.text()
    # the learned field drawn is −ε̂/√(1−ᾱ_t) of the trained network
    tab.field_combo.setCurrentIndex(tab.field_combo.findData("learned"))
    at_std, _ = tab._grid()
    t = tab.state.t + 1 if tab.state.t >= 0 else 1
    want = lab.field(lab.network_eps(tab.model, tab.schedule), tab.schedule, max(t, 1), at_std).numpy()
    xs, ys = tab.field_plot.arrows["learned"].getData()
    seg = np.column_stack([xs, ys])
    drawn = (seg[1::2] - seg[0::2]) / tab.dataset.standardiser.std
    k = np.linalg.norm(drawn) / np.linalg.norm(want)
    assert np.allclose(drawn, k * want, atol=1e-4 * np.abs(drawn).max())
    worker = tab.start_paths()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    qtbot.waitUntil(lambda: tab.path_worker is None and "energy distance" in tab.quality_label.text(), timeout=20_000)
    sde, ode = tab.runs["sde"], tab.runs["ode"]
    assert sde.shape[1:] == ode.shape[1:] == (300, 2) and len(ode) == 11
    assert np.allclose(sde[0], ode[0])  # one x_T for both
    assert not np.allclose(sde[-1], ode[-1])
    assert "DDPM" in tab.quality_label.text() and "modes" in tab.quality_label.text()


def test_points_drawn_erased_and_saved(tab, tmp_path):
    tab.clear_points()
    assert len(tab.set) == 0 and tab.dataset is None
    tab.brush_spin.setValue(0.5)
    for x in np.linspace(-2, 2, 20):
        tab.paint(float(x), 0.0)
    n = len(tab.set)
    assert n == 120 and np.abs(tab.set.points[:, 1]).max() <= 0.5 + 1e-6 and tab.dataset is not None
    tab.erase_check.setChecked(True)
    tab.paint(-2.0, 0.0)
    assert len(tab.set) < n and not (np.linalg.norm(tab.set.points - [-2, 0], axis=1) <= 0.5).any()
    tab.save_points(tmp_path / "drawn.csv")
    back, problems = load_points_csv(tmp_path / "drawn.csv")
    assert problems == [] and np.array_equal(back.points, tab.set.points)
