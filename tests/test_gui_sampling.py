"""The Sampling panel: checkpoints in, frames recorded off the GUI thread, the player, exports, errors."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import Qt

from diffusion_studio import resources
from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.runtime.calibrate import for_sampling
from diffusion_studio.core.diffusion.samplers import sample, sample_frames
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.nets.unet import UNet, preset_config
from diffusion_studio.data.convert import make_grid, to_uint8
from diffusion_studio.jobs import frames as frames_mod
from diffusion_studio.jobs import sampling as sampling_frames
from diffusion_studio.core.io.models import LoadedModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 50
SIZE = 16
WAIT_MS = 60_000


def make_checkpoint(path, seed=0, num_classes=None, class_names=None, T=T):
    """An untrained tiny UNet whose zero-initialised output layer is randomised, so ε_θ is not identically 0."""
    torch.manual_seed(seed)
    cfg = preset_config("tiny", SIZE, 1, num_classes=num_classes)
    model = UNet(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(model.out[-1].weight, std=0.05)
    meta = {"step": 7, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", T).to_dict(),
            "data": {"spec": "test", **({"class_names": class_names} if class_names else {})}}
    return save_checkpoint(path, {"ema": dict(model.state_dict())}, meta)


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.json")


@pytest.fixture(autouse=True)
def no_builtin_models(tmp_path, monkeypatch):
    """Keep the tests independent of whether the shipped digits model is installed."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: root)
    return root


@pytest.fixture
def panel(qtbot, settings):
    """The Sampling panel on its own (the window's other panels are not needed here), closed like the window does."""
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=10_000)


def load(panel, qtbot, path):
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(path)
    return panel.loaded


def configure(panel, sampler="ddim", variance="beta_tilde", steps=5, n=4, seed=0, every=1, eta=0.0, clip=False):
    c = panel.controls
    c.clip_check.setChecked(clip)
    c.select_sampler(sampler, variance)
    c.steps_spin.setValue(steps)
    c.n_spin.setValue(n)
    c.seed_spin.setValue(seed)
    c.every_spin.setValue(every)
    c.eta_spin.setValue(eta)


def run(panel, qtbot):
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def grid(x):
    return to_uint8(make_grid(x))


# The panel samples with precision "auto", measured for the model and batch (bf16 autocast where the CPU has bf16
# instructions and it is faster, fp32 elsewhere): the independent reference runs the core sampler with the same
# arithmetic. Resolved when a reference is built, after the panel's run — not at import: collection imports every test
# module first, and another module's calibrate.forget() in between would let the panel measure (and choose) afresh.
def panel_precision(ckpt, n: int) -> str:
    return for_sampling(ckpt.model_config, n, "auto", "cpu").precision


def independent_model(path, n: int = 4):
    ckpt = load_checkpoint(path)
    return ckpt, model_fn(ckpt.build_model("cpu"), "cpu", panel_precision(ckpt, n))


def close(a, b):
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_ddim_frames_match_the_sampler_run_independently(panel, qtbot, ckpt_path):
    loaded = load(panel, qtbot, ckpt_path)
    summary = panel.chooser.summary.text()
    assert "tiny" in summary and "T=50" in summary and "step 7" in summary and "16×16×1" in summary
    assert "own" in panel.chooser.summary.toolTip() and "schedule" in panel.chooser.summary.toolTip()
    assert loaded.schedule.T == T and panel.controls.steps_spin.maximum() == T
    configure(panel, "ddim", steps=5, n=4, seed=11)
    assert run(panel, qtbot) == "done"

    frames = panel.frames
    assert len(frames) == 1 + 5 and panel.player_bar.count == 6
    # linspace(0, 49, 5) rounded: indices 49, 37, 24, 12, 0 → the paper's t one more; the start is T, the end 0.
    assert [f.paper_t for f in frames] == [T, 38, 25, 13, 1, 0]
    assert frames[-1].is_final and not frames[0].is_final and frames[0].x0 is None

    ckpt, fn = independent_model(ckpt_path)
    expected = list(sample_frames(fn, ckpt.schedule, (4, 1, SIZE, SIZE), "ddim", steps=5, seed=11, every=1,
                                  include_start=True))
    final = sample(fn, ckpt.schedule, (4, 1, SIZE, SIZE), "ddim", steps=5, seed=11)
    assert close(frames[-1].x, grid(final))
    for got, want in zip(frames, expected):
        assert close(got.x, grid(want.x))
        if want.x0_pred is not None:
            assert close(got.x0, grid(want.x0_pred))
            assert close(got.eps, grid(want.eps_pred / 3))  # ε is shown as ε/3
    # The live view ends on the final frame: the sample and t = 0.
    assert panel.player_bar.index == 5
    assert np.array_equal(panel.x_pane.current, frames[-1].x)
    assert np.array_equal(panel.x0_pane.current, frames[-1].x0)
    assert panel.t_label.text().startswith("t = 0 / 50")
    assert panel.progress.value() == 5 and "5 / 5" in panel.progress.format()
    assert panel.sample_button.isEnabled() and not panel.stop_button.isEnabled()


def test_ddpm_variances_record_every_step_or_every_nth(panel, qtbot, ckpt_path):
    load(panel, qtbot, ckpt_path)
    configure(panel, "ddpm", "beta_tilde", steps=T, n=4, seed=3, every=1)
    assert run(panel, qtbot) == "done"
    tilde = panel.frames
    assert len(tilde) == T + 1
    assert [f.paper_t for f in tilde] == list(range(T, -1, -1))

    configure(panel, "ddpm", "beta", steps=T, n=4, seed=3, every=7)
    assert panel.job is not None and run(panel, qtbot) == "done"
    beta = panel.frames
    assert panel.job.variance == "beta" and panel.job.sampler == "ddpm"
    assert len(beta) == math.ceil(T / 7) + 1 == frames_mod.expected_frames(T, 7)
    assert [f.step for f in beta] == [0, 7, 14, 21, 28, 35, 42, 49, 50] and beta[-1].is_final
    assert not np.array_equal(beta[-1].x, tilde[-1].x)  # σ² = β adds more noise than β̃

    ckpt, fn = independent_model(ckpt_path)
    want = sample(fn, ckpt.schedule, (4, 1, SIZE, SIZE), "ddpm", variance="beta", seed=3)
    assert close(beta[-1].x, grid(want))


def test_same_seed_same_grid_other_seed_differs(panel, qtbot, ckpt_path):
    load(panel, qtbot, ckpt_path)
    finals = []
    for seed in (5, 5, 6):
        configure(panel, "ddim", steps=4, n=4, seed=seed, eta=1.0)
        assert run(panel, qtbot) == "done"
        finals.append(panel.frames[-1].x)
    assert np.array_equal(finals[0], finals[1])
    assert not np.array_equal(finals[0], finals[2])


def test_stop_mid_run_acts_after_the_current_step_and_keeps_frames_playable(panel, qtbot, ckpt_path, monkeypatch):
    real = sampling_frames.model_fn
    calls = []

    def slow_model_fn(*args, **kw):
        fn = real(*args, **kw)

        def slow(x, t):
            calls.append(threading.get_ident())
            time.sleep(0.05)
            return fn(x, t)

        return slow

    monkeypatch.setattr(sampling_frames, "model_fn", slow_model_fn)
    load(panel, qtbot, ckpt_path)
    configure(panel, "ddpm", "beta_tilde", steps=T, n=2, every=10)
    qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    assert panel.running and panel.stop_button.isEnabled() and not panel.sample_button.isEnabled()
    qtbot.waitUntil(lambda: len(panel.frames) >= 3, timeout=WAIT_MS)  # x_T, step 10, step 20
    t0 = time.perf_counter()
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
        at_click = len(calls)
    assert blocker.args == ["stopped"]
    assert time.perf_counter() - t0 < 5.0
    # Stop is checked after every step, not only after recorded ones (every = 10 here).
    assert len(calls) - at_click <= 2, (at_click, len(calls))
    n = len(panel.frames)
    assert 3 <= n < frames_mod.expected_frames(T, 10) and not panel.frames[-1].is_final
    assert [f.step for f in panel.frames] == list(range(0, 10 * n, 10))
    assert "stopped" in panel.progress.format() and panel.progress.value() == len(calls)
    assert threading.get_ident() not in calls  # ε_θ never ran on the GUI thread
    assert not panel.running and panel.sample_button.isEnabled()
    # Still playable: step back and forth, scrub.
    qtbot.mouseClick(panel.player_bar.back_button, Qt.MouseButton.LeftButton)
    assert panel.player_bar.index == n - 2
    assert np.array_equal(panel.x_pane.current, panel.frames[n - 2].x)
    panel.player_bar.slider.setValue(0)
    assert np.array_equal(panel.x_pane.current, panel.frames[0].x)


def test_player_play_pause_step_scrub_and_skip_when_late(panel, qtbot, ckpt_path):
    load(panel, qtbot, ckpt_path)
    configure(panel, "ddim", steps=20, n=2, every=1)
    assert run(panel, qtbot) == "done"
    bar, frames = panel.player_bar, panel.frames
    assert bar.count == 21

    bar.slider.setValue(7)  # the scrubber shows frame 7's three grids and its t
    f = frames[7]
    assert np.array_equal(panel.x_pane.current, f.x)
    assert np.array_equal(panel.x0_pane.current, f.x0)
    assert np.array_equal(panel.eps_pane.current, f.eps)
    assert panel.t_label.text().startswith(f"t = {f.paper_t} / 50")
    assert bar.frame_label.text() == "frame 8 / 21"

    qtbot.mouseClick(bar.forward_button, Qt.MouseButton.LeftButton)
    assert bar.index == 8 and np.array_equal(panel.x_pane.current, frames[8].x)
    qtbot.mouseClick(bar.back_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(bar.back_button, Qt.MouseButton.LeftButton)
    assert bar.index == 6

    bar.fps_spin.setValue(20)
    qtbot.mouseClick(bar.play_button, Qt.MouseButton.LeftButton)
    assert bar.player.playing and bar.play_button.text().endswith("Pause")
    qtbot.waitUntil(lambda: bar.index >= 8, timeout=30_000)
    qtbot.mouseClick(bar.play_button, Qt.MouseButton.LeftButton)
    assert not bar.player.playing and not bar.player.timer.isActive()
    paused_at = bar.index
    qtbot.wait(200)
    assert bar.index == paused_at
    assert np.array_equal(panel.x_pane.current, frames[paused_at].x)

    # Far faster than the display ticks: playback keeps time by skipping frames, then stops at the last one.
    bar.slider.setValue(0)
    bar.fps_spin.setValue(500)
    t0 = time.perf_counter()
    bar.play()
    qtbot.waitUntil(lambda: not bar.player.playing, timeout=30_000)
    elapsed = time.perf_counter() - t0
    assert bar.index == 20 and panel.t_label.text().startswith("t = 0 / 50")
    assert elapsed < 10.0, elapsed  # generous: this catches a player that never stops, not a slow CPU
    assert 1 <= bar.player.shown < 20  # frames were skipped rather than shown late
    assert not bar.player.timer.isActive()


def test_loop_plays_again_from_the_start(panel, qtbot, ckpt_path):
    load(panel, qtbot, ckpt_path)
    configure(panel, "ddim", steps=3, n=1, every=1)
    assert run(panel, qtbot) == "done"
    bar = panel.player_bar
    bar.loop_check.setChecked(True)
    bar.fps_spin.setValue(60)
    seen = []
    bar.frame_selected.connect(seen.append)
    bar.play()  # at the last frame: play restarts from 0, and with Loop it wraps around again
    qtbot.waitUntil(lambda: seen.count(0) >= 2, timeout=30_000)
    assert bar.player.playing
    bar.pause()
    assert not bar.player.timer.isActive()


def test_export_png_and_gif(panel, qtbot, ckpt_path, tmp_path):
    assert panel.export_grid(tmp_path / "none.png") is False
    assert panel.error_label.isVisible() and "Nothing to export" in panel.error_label.text()
    assert not (tmp_path / "none.png").exists()

    load(panel, qtbot, ckpt_path)
    configure(panel, "ddim", steps=5, n=4, every=1)
    assert run(panel, qtbot) == "done"
    assert panel.export_grid(tmp_path / "grid.png")
    png = np.asarray(Image.open(tmp_path / "grid.png"))
    x = panel.frames[-1].x
    k = png.shape[0] // x.shape[0]  # the grid is enlarged by a whole nearest-neighbour factor to be readable
    assert k >= 1 and png.shape[:2] == (k * x.shape[0], k * x.shape[1])
    assert np.array_equal(png[::k, ::k], x) and np.array_equal(png[k - 1::k, k - 1::k], x)

    assert panel.export_gif(tmp_path / "anim.gif", fps=10)
    gif = Image.open(tmp_path / "anim.gif")
    h, w = panel.frames[0].x.shape
    scale = frames_mod.gif_scale(w)
    from diffusion_studio.gui.widgets.export_labels import STRIP
    assert scale > 1 and gif.size == (w * scale, h * scale + STRIP)  # upscaled by nearest neighbour, t under it
    assert gif.n_frames == len(panel.frames) == 6
    gif.seek(gif.n_frames - 1)
    last = np.asarray(gif.convert("L"))[: h * scale : scale, ::scale]
    assert close(last, panel.frames[-1].x)

    assert panel.export_gif(tmp_path / "side.gif", with_x0=True)
    side = Image.open(tmp_path / "side.gif")
    assert side.size[0] > 2 * w * frames_mod.gif_scale(2 * w + 4) and side.n_frames == 6


def test_bad_checkpoints_change_nothing(panel, qtbot, ckpt_path, tmp_path):
    loaded = load(panel, qtbot, ckpt_path)
    key = panel.chooser.current_key
    evil = tmp_path / "model.pt"
    evil.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for bad, words in ((evil, "refused"), (broken, "not valid JSON")):
        with qtbot.waitSignal(panel.chooser.load_failed, timeout=WAIT_MS):
            panel.open_checkpoint(bad)
        qtbot.waitUntil(lambda: not panel.chooser.is_loading, timeout=WAIT_MS)
        assert panel.error_label.isVisible() and words in panel.error_label.text()
        assert bad.name in panel.error_label.text()
        assert panel.loaded is loaded and panel.chooser.current_key == key
        assert panel.chooser.combo.currentData() == key
        assert "Press ▶ Sample" in panel.hint_label.text()
    configure(panel, "ddim", steps=2, n=1)
    assert run(panel, qtbot) == "done" and panel.frames[-1].is_final
    assert not panel.error_label.isVisible()


def test_just_trained_model_is_selected(panel, qtbot, ckpt_path):
    load(panel, qtbot, ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    trained = LoadedModel(name="my run", checkpoint=ckpt, model=ckpt.build_model("cpu"), device=torch.device("cpu"))
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.state.set_model(trained)
    combo = panel.chooser.combo
    assert combo.currentData() == "trained" and combo.currentText() == "Just trained: my run"
    assert panel.loaded is trained and "my run" in panel.chooser.summary.text()
    configure(panel, "ddim", steps=2, n=1)
    assert run(panel, qtbot) == "done"
    # The file loaded before is still offered and comes back without reloading.
    file_index = next(i for i in range(combo.count()) if str(combo.itemData(i)).startswith("file:"))
    panel.chooser.select(combo.itemData(file_index))
    assert panel.loaded is not trained and panel.loaded.path == ckpt_path
    panel.state.set_model(None)
    assert combo.findData("trained") < 0 and panel.loaded is not None


def test_builtin_digits_is_the_default_and_sample_waits_for_it(qtbot, settings, no_builtin_models):
    from diffusion_studio.gui.main_window import MainWindow

    make_checkpoint(no_builtin_models / "digits" / "checkpoint.json", seed=1)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    try:
        panel = win.sampling
        assert panel.loaded is None  # nothing loads until the tab is first shown
        with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
            win.tabs.setCurrentWidget(panel)
        assert panel.loaded.name == "builtin:digits"
        assert panel.chooser.combo.currentText() == "Built-in: digits"
    finally:
        win.close()


def test_sample_before_the_builtin_loaded_starts_after_loading(qtbot, settings, no_builtin_models):
    from diffusion_studio.gui.main_window import MainWindow

    make_checkpoint(no_builtin_models / "digits" / "checkpoint.json", seed=1)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    try:
        panel = win.sampling
        panel.controls.steps_spin.setValue(2)
        panel.controls.n_spin.setValue(1)
        run_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Run")
        sample_action = next(a for a in run_menu.actions() if a.text() == "&Sample")
        with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
            sample_action.trigger()  # Run ▸ Sample with nothing loaded: loads the built-in model, then samples
        assert blocker.args == ["done"] and panel.frames[-1].is_final
    finally:
        win.close()


def test_without_models_a_hint_says_what_to_do(panel, qtbot):
    assert panel.loaded is None
    assert "Train a model" in panel.hint_label.text() and panel.hint_label.isVisible()
    panel.start()
    assert panel.error_label.isVisible() and "open a checkpoint" in panel.error_label.text()
    assert not panel.running


def test_class_conditional_controls_and_labels(panel, qtbot, tmp_path):
    path = make_checkpoint(tmp_path / "cond.json", num_classes=3, class_names=["zero", "one", "two"])
    load(panel, qtbot, path)
    c = panel.controls
    assert c.class_combo.isVisible() and c.guidance_spin.isVisible()
    items = [c.class_combo.itemText(i) for i in range(c.class_combo.count())]
    assert items == ["one of each class", "0: zero", "1: one", "2: two", "unconditional (null class)"]
    c.class_combo.setCurrentIndex(2)
    configure(panel, "ddim", steps=2, n=2, seed=4, clip=True)
    c.guidance_spin.setValue(3.0)
    assert run(panel, qtbot) == "done"
    job = panel.job
    assert job.label == 1 and job.guidance == 3.0 and job.clip_x0
    ckpt = load_checkpoint(path)
    fn = model_fn(ckpt.build_model("cpu"), "cpu", panel_precision(ckpt, 2), condition=torch.tensor([1, 1]),
                  guidance=3.0)
    want = sample(fn, ckpt.schedule, (2, 1, SIZE, SIZE), "ddim", steps=2, seed=4, clip_x0=True)
    assert close(panel.frames[-1].x, grid(want))
    assert sampling_frames.job_labels(job.__class__(label=-1, n_images=5), 3).tolist() == [0, 1, 2, 0, 1]


def test_settings_are_remembered(panel, settings):
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel

    panel.controls.select_sampler("ddpm", "beta")
    panel.controls.seed_spin.setValue(42)
    panel.controls.n_spin.setValue(9)
    panel.player_bar.fps_spin.setValue(33)
    panel.save_settings()
    other = SamplingPanel(panel.state, panel.pool, settings)
    try:
        assert other.controls.sampler == ("ddpm", "beta")
        assert other.controls.seed_spin.value() == 42 and other.controls.n_spin.value() == 9
        assert other.player_bar.fps_spin.value() == 33
    finally:
        other.shutdown()
        other.deleteLater()


def test_panes_take_the_column_count_that_makes_them_largest(qtbot):
    from PySide6.QtWidgets import QWidget

    from diffusion_studio.gui.panels.sampling.player import PaneGrid

    grid = PaneGrid([QWidget(), QWidget(), QWidget()])
    qtbot.addWidget(grid)
    assert grid.best_columns(1000, 600) == 3   # wide: side by side
    assert grid.best_columns(440, 620) == 2    # docks open, tall centre: 2 × 2 (220 px beats 3 rows of 147)
    assert grid.best_columns(300, 900) == 1    # very narrow: one column
    grid.resize(440, 620)
    grid.show()
    qtbot.waitUntil(lambda: grid.columns == 2)
