"""The Forward process panel, driven like a user: slider, keys, seed, chain mode, playback, export.

Expected pixels are computed here from the schedule's β alone (ᾱ_t = ∏(1 − β_s)) and from ε drawn with the seed,
then compared with what the x_t pane shows.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import Qt, QTimer

from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.gui.panels.forward.panel import ForwardPanel
from diffusion_studio.gui.state import AppState, SelectedImage
from diffusion_studio.gui.workers import WorkerPool


def make_image(size: int = 32, seed: int = 0) -> SelectedImage:
    rng = np.random.default_rng(seed)
    display = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    x0 = torch.from_numpy(display).permute(2, 0, 1).float() / 127.5 - 1.0
    return SelectedImage("test", x0.contiguous(), display, "test")


@pytest.fixture
def panel(qtbot, settings):
    state = AppState(device="cpu")
    pool = WorkerPool()
    state.set_image(make_image())
    p = ForwardPanel(state, pool, settings)
    qtbot.addWidget(p)
    p.resize(900, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert pool.shutdown(10000)


def alpha_bar(schedule: NoiseSchedule, paper_t: int) -> float:
    """ᾱ at the paper's t, from the β's (ᾱ_0 = 1)."""
    return float(torch.prod(1.0 - schedule.betas[:paper_t])) if paper_t > 0 else 1.0


def eps_for(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def expected_u8(x0: torch.Tensor, eps: torch.Tensor, ab: float) -> np.ndarray:
    x = math.sqrt(ab) * x0.double() + math.sqrt(1.0 - ab) * eps.double()
    u8 = torch.clamp(127.5 * x + 127.5, 0, 255).round().to(torch.uint8)
    return u8.permute(1, 2, 0).numpy()


def number(label) -> float:
    text = label.text().rsplit("=", 1)[1].strip()
    return math.inf if text == "∞" else float(text)


def check(panel: ForwardPanel, paper_t: int) -> None:
    """The x_t pane, the controls and the readouts all agree with the formula at paper_t."""
    state = panel.state
    assert state.t == paper_t - 1
    assert panel.slider.value() == paper_t and panel.t_spin.value() == paper_t
    assert panel.t_label.text() == f"t = {paper_t}"
    ab = alpha_bar(state.schedule, paper_t)
    x0 = state.image.x0
    want = expected_u8(x0, eps_for(panel.seed, x0.shape), ab)
    got = panel.xt_pane.current
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, f"x_t pixels differ at t = {paper_t}"
    assert number(panel.sqrt_ab_label) == pytest.approx(math.sqrt(ab), abs=6e-5)
    assert number(panel.sqrt_1mab_label) == pytest.approx(math.sqrt(1 - ab), abs=6e-5)
    snr = number(panel.snr_label)
    if paper_t == 0:
        assert snr == math.inf
    else:
        assert snr == pytest.approx(ab / (1 - ab), rel=1e-3)


def test_slider_and_keys_show_the_closed_form(panel, qtbot):
    T = panel.state.schedule.T
    assert panel.slider.minimum() == 0 and panel.slider.maximum() == T
    for p in (0, 1, 2, 250, 777, T):
        panel.slider.setValue(p)
        check(panel, p)
    panel.slider.setValue(0)
    assert np.array_equal(panel.xt_pane.current, panel.state.image.display)  # t = 0 is x_0 itself
    assert panel.sqrt_ab_label.text().endswith("= 1.0000") and panel.sqrt_1mab_label.text().endswith("= 0.0000")

    panel.slider.setFocus()
    qtbot.keyClick(panel.slider, Qt.Key.Key_Right)
    check(panel, 1)
    qtbot.keyClick(panel.slider, Qt.Key.Key_PageUp)
    check(panel, 1 + T // 10)
    qtbot.keyClick(panel, Qt.Key.Key_Right)        # the panel itself answers the same keys
    check(panel, 2 + T // 10)
    qtbot.keyClick(panel, Qt.Key.Key_PageDown)
    check(panel, 2)
    qtbot.keyClick(panel, Qt.Key.Key_Left)
    check(panel, 1)
    qtbot.keyClick(panel, Qt.Key.Key_End)
    check(panel, T)
    qtbot.keyClick(panel, Qt.Key.Key_Right)        # stays at T
    check(panel, T)
    qtbot.keyClick(panel, Qt.Key.Key_Home)
    check(panel, 0)
    panel.t_spin.setValue(321)                     # typing a t
    check(panel, 321)


def test_noise_pane_shows_eps_of_the_seed(panel):
    # ε is drawn on the colour mapping x_t uses ([−1, 1] → black…white by default), not as ε/3 (issue 10)
    eps = eps_for(panel.seed, panel.state.image.x0.shape)
    want = torch.clamp(eps * 127.5 + 127.5, 0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(panel.noise_pane.current.astype(int) - want.astype(int)).max() <= 1
    assert np.array_equal(panel.x0_pane.current, panel.state.image.display)


def test_schedule_change_rescales_slider_and_pixels(panel):
    state = panel.state
    panel.slider.setValue(800)
    state.set_schedule(NoiseSchedule.create("cosine", 500))
    assert panel.slider.maximum() == 500 and panel.t_spin.maximum() == 500
    check(panel, 500)                              # t was beyond the new T: clamped to T
    for p in (0, 1, 125, 250, 499):
        panel.slider.setValue(p)
        check(panel, p)
    state.set_schedule(NoiseSchedule.create("linear", 1000, beta_end=0.01))
    assert panel.slider.maximum() == 1000
    panel.slider.setValue(1000)
    check(panel, 1000)


def test_state_t_from_elsewhere_moves_the_slider(panel):
    for k in (41, -1, 998, 499):                   # what the Schedule panel's cursor sets (schedule indices)
        panel.state.set_t(k)
        assert panel.slider.value() == k + 1
        check(panel, k + 1)


def test_seed_and_new_noise(panel, qtbot):
    panel.slider.setValue(400)
    panel.seed_spin.setValue(7)
    check(panel, 400)
    a = panel.xt_pane.current.copy()
    panel.seed_spin.setValue(8)
    check(panel, 400)
    assert not np.array_equal(panel.xt_pane.current, a)
    panel.seed_spin.setValue(7)
    assert np.array_equal(panel.xt_pane.current, a)          # same seed, same pixels
    qtbot.mouseClick(panel.new_noise_button, Qt.MouseButton.LeftButton)
    assert panel.seed != 7
    check(panel, 400)
    assert (panel.xt_pane.current != a).mean() > 0.5          # new noise, different pixels


def test_chain_mode_matches_closed_form_statistics(panel, qtbot):
    state = panel.state
    state.set_image(make_image(128, seed=3))
    panel.slider.setValue(300)
    closed = panel.xt_pane.current.copy()
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    try:
        with qtbot.waitSignal(panel.chain_ready, timeout=90_000):
            qtbot.mouseClick(panel.chain_check, Qt.MouseButton.LeftButton, pos=panel.chain_check.rect().center())
            assert panel.chain_check.isChecked()
            assert panel.chain_building and panel.chain_row.isVisible()   # built in a worker, not right here
            ticks_at_start = len(ticks)
    finally:
        timer.stop()
    assert len(ticks) - ticks_at_start >= 2, "the GUI thread's timer did not tick while the chain was built"
    assert panel.using_chain and not panel.chain_building
    qtbot.waitUntil(lambda: not panel.pool.running, timeout=30_000)

    x0 = state.image.x0.double()
    n = x0.numel()
    for p in (10, 100, 300, 700, state.schedule.T):
        panel.slider.setValue(p)
        ab = alpha_bar(state.schedule, p)
        x = panel.x_t()
        assert x is not None and x.shape == x0.shape
        shown = torch.clamp(127.5 * x.double() + 127.5, 0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.abs(panel.xt_pane.current.astype(int) - shown.astype(int)).max() <= 1
        # x_t − √ᾱ x_0 must be N(0, (1−ᾱ) I) like the closed form's noise term: mean within 5 standard errors
        # (σ/√n), standard deviation within 5 standard errors of a sample s.d. (≈ σ/√(2n)) plus float32 slack.
        resid = x.double() - math.sqrt(ab) * x0
        sigma = math.sqrt(1 - ab)
        assert abs(float(resid.mean())) < 5 * sigma / math.sqrt(n), p
        assert float(resid.std()) / sigma == pytest.approx(1.0, abs=5 / math.sqrt(2 * n) + 1e-3), p
    # different draws from the closed form, yet the same look: equal pixel statistics at t = 300
    panel.slider.setValue(300)
    chain = panel.xt_pane.current.copy()
    assert not np.array_equal(chain, closed)
    assert abs(chain.mean() - closed.mean()) < 2.0 and abs(chain.std() / closed.std() - 1) < 0.03
    panel.slider.setValue(700)
    panel.slider.setValue(300)
    assert np.array_equal(panel.xt_pane.current, chain)       # revisiting t gives the same image
    assert "chain" in panel.film_pane.label.text
    panel.chain_check.setChecked(False)
    check(panel, 300)                                         # back to the closed form


def test_new_image_while_chain_builds_starts_over(panel, qtbot):
    panel.state.set_image(make_image(128, seed=1))
    panel.chain_check.setChecked(True)
    assert panel.chain_building
    image = make_image(48, seed=2)
    with qtbot.waitSignal(panel.chain_ready, timeout=60_000):
        panel.state.set_image(image)
    assert panel.using_chain and panel.x_t().shape == (3, 48, 48)
    qtbot.waitUntil(lambda: not panel.pool.running, timeout=30_000)


def test_play_advances_and_pause_stops(panel, qtbot):
    T = panel.state.schedule.T
    panel.speed_spin.setValue(20)
    panel.slider.setValue(0)
    qtbot.mouseClick(panel.play_button, Qt.MouseButton.LeftButton)
    assert panel.playing and panel.play_button.text() == "Pause"
    qtbot.waitUntil(lambda: panel.paper_t > 100, timeout=30_000)
    qtbot.mouseClick(panel.play_button, Qt.MouseButton.LeftButton)
    assert not panel.playing and not panel.play_timer.isActive()
    stopped_at = panel.paper_t
    check(panel, stopped_at)
    qtbot.wait(150)
    assert panel.paper_t == stopped_at

    panel.slider.setValue(T - 50)
    panel.play()
    qtbot.waitUntil(lambda: not panel.playing, timeout=30_000)   # stops by itself at T
    assert panel.paper_t == T and not panel.play_button.isChecked()
    check(panel, T)
    qtbot.keyClick(panel, Qt.Key.Key_Space)                     # playing from T starts again at 0
    assert panel.playing
    panel.hide()                                                 # a hidden panel does not keep animating
    assert not panel.play_timer.isActive()


def test_filmstrip_and_export(panel, tmp_path):
    state = panel.state
    T = state.schedule.T
    film = panel.filmstrip
    h = state.image.display.shape[0]
    assert film.shape[0] == h
    path = panel.export_filmstrip(tmp_path / "film.png")
    saved = np.asarray(Image.open(path))
    assert np.array_equal(saved[:h], film)  # the frames as shown, with each frame's t in a strip underneath
    assert saved.shape[0] > h and saved[h:].max() > 128
    gap = (film.shape[1] - 8 * h) // 7
    assert film.shape[1] == 8 * h + 7 * gap
    frames = [film[:, k * (h + gap): k * (h + gap) + h] for k in range(8)]
    assert np.array_equal(frames[0], state.image.display)
    eps = eps_for(panel.seed, state.image.x0.shape)
    for k, p in ((3, round(3 * T / 7)), (7, T)):
        want = expected_u8(state.image.x0, eps, alpha_bar(state.schedule, p))
        assert np.abs(frames[k].astype(int) - want.astype(int)).max() <= 1
    assert panel.export_filmstrip(tmp_path / "no such dir" / "x" / "f.png") is not None  # folders are made
    bad = tmp_path / "a_file"
    bad.write_text("x")
    assert panel.export_filmstrip(bad / "f.png") is None                                  # reason shown
    assert panel.error_label.isVisibleTo(panel) and "f.png" in panel.error_label.text()


def test_no_image_is_not_a_crash(panel, qtbot, tmp_path):
    panel.state.set_image(None)
    assert panel.hint_label.isVisibleTo(panel)
    assert panel.xt_pane.current is None and panel.x_t() is None
    panel.slider.setValue(10)
    qtbot.keyClick(panel, Qt.Key.Key_End)
    assert panel.paper_t == panel.state.schedule.T
    assert panel.export_filmstrip(tmp_path / "unused.png") is None
    assert not (tmp_path / "unused.png").exists()
    panel.state.set_image(make_image())
    check(panel, panel.state.schedule.T)


def test_in_the_window(window, qtbot):
    """At start-up the Images panel has chosen a sample photo, so the Forward panel is never empty."""
    fwd, state = window.forward, window.state
    assert state.image is not None
    assert np.array_equal(fwd.x0_pane.current, state.image.display)
    state.set_t(state.schedule.T // 3 - 1)
    check(fwd, state.schedule.T // 3)
    assert re.search(r"t = \d+", fwd.xt_pane.label.text)
