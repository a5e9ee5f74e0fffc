"""Issue 10's Training-tab bugs and expectations, driven as the newcomer met them: a small folder with the default
batch, "Use as training data", a failed start, previews (step 0, a new run), Pause/Resume labels, the status line,
the loss axis, the loss history on Continue, run folder names, closing mid-training and continuing after."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSettings, Qt

from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.runlog import read_loss_history

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SLOW = 120_000


@pytest.fixture
def make_panel(make_training_panel):
    """Standalone Training panels (tiny runs, T = 20)."""
    return lambda: make_training_panel(T=20)


def seven_images(folder: Path, n: int = 7) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def configure(panel, spec="builtin:digits", steps=4, batch=8, preview=0, size=8):
    f = panel.form
    f.set_dataset_spec(spec)
    f.size_spin.setValue(size)
    f.preset_combo.setCurrentIndex(f.preset_combo.findData("tiny"))
    f.batch_spin.setValue(batch)
    f.lr_edit.setText("1e-3")
    f.steps_spin.setValue(steps)
    f.device_combo.setCurrentIndex(f.device_combo.findData("cpu"))
    f.preview_spin.setValue(preview)
    f.save_every_spin.setValue(0)


def run_to_end(qtbot, panel):
    with qtbot.waitSignal(panel.run_finished, timeout=SLOW) as blocker:
        assert panel.start() is not False
    return blocker.args[0]


def previews_shown(panel) -> list[int]:
    steps = []
    original = panel.view.show_preview

    def spy(preview, step):
        steps.append(step)
        return original(preview, step)

    panel.view.show_preview = spy
    return steps


# ---- bug 11 (GUI) and bug 4 ----------------------------------------------------------------------------------------
def test_small_folder_with_the_default_batch_trains_on_the_whole_folder_and_says_so(qtbot, make_panel, tmp_path):
    folder = seven_images(tmp_path / "seven")
    panel = make_panel()
    configure(panel, spec=str(folder), steps=2, batch=0)  # 0: the batch the user did not choose ("auto (64)")
    assert panel.form.batch_spin.text().startswith("auto")
    outcome = run_to_end(qtbot, panel)
    assert outcome.reason == "finished", outcome.message
    assert load_checkpoint(outcome.checkpoint).meta["train"]["batch_size"] == 7
    assert "Batch 7: the whole dataset (7 images)" in panel.info_label.text()


def test_a_failed_start_leaves_the_panel_clean(qtbot, make_panel, tmp_path, runs):
    panel = make_panel()
    configure(panel, steps=2, preview=2)
    assert run_to_end(qtbot, panel).reason == "finished"
    assert panel.view.preview.current is not None  # the first run's preview is on screen

    folder = seven_images(tmp_path / "seven")
    configure(panel, spec=str(folder), steps=2000, batch=64)  # asked for explicitly: refused
    outcome = run_to_end(qtbot, panel)
    assert outcome.reason == "error"
    assert "batch_size: 64 is larger than the dataset (7 images)" in panel.error_label.text()
    text = panel.view.progress.text()
    assert "starting" not in text and "2,000" not in text and text == "not started"
    assert "Loading" not in panel.info_label.text()
    assert panel.view.preview.current is None and len(panel.view.history) == 0
    assert panel.form.out_edit.text() == ""  # not the run folder that was made for it and removed again


# ---- bug 5 and the step-0 preview -------------------------------------------------------------------------------
def test_a_new_run_shows_no_old_preview_and_starts_with_a_step_0_preview(qtbot, make_panel):
    panel = make_panel()
    configure(panel, steps=4, preview=4)
    shown = previews_shown(panel)
    assert run_to_end(qtbot, panel).reason == "finished"
    assert shown == [0, 4]  # noise at step 0, then the trainer's own preview
    assert panel.view.preview.current is not None
    with qtbot.waitSignal(panel.run_finished, timeout=SLOW):
        assert panel.start()
        assert panel.view.preview.current is None  # the last run's grid is gone the moment Start is pressed


# ---- bug 7 and bug 9 ---------------------------------------------------------------------------------------------
def test_paused_reads_resume_once_and_header_and_status_agree(qtbot, make_panel):
    panel = make_panel()
    configure(panel, steps=100_000)
    events = []
    panel.event_received.connect(events.append)
    assert panel.start()
    qtbot.waitUntil(lambda: len(events) >= 2, timeout=SLOW)
    panel.pause()
    qtbot.wait(1500)  # the step under way when Pause came arrives
    labels = [panel.start_button.text(), panel.pause_button.text()]
    assert labels.count("Resume") == 1 and panel.pause_button.text() == "Resume"
    assert not panel.start_button.isEnabled()
    step = events[-1].step
    assert f"step {step:,}" in panel.view.progress.text() and panel.view.progress.text().startswith("paused")
    assert panel.state._busy["training"].endswith(f"step {step}")
    with qtbot.waitSignal(panel.run_finished, timeout=SLOW):
        panel.stop()
    text = panel.view.progress.text()
    assert "ETA" not in text and text.startswith(f"step {panel.last_event.step:,} / 100,000") \
        and text.endswith("stopped"), text


def test_the_status_line_goes_with_the_fix_and_the_loss_axis_has_no_si_scale(qtbot, window):
    panel = window.training
    window.show_panel(panel)
    panel.form.lr_edit.setText("abc")
    assert panel.start() is False
    bar = window.statusBar()
    assert bar.currentMessage().startswith("Training: Learning rate")
    panel.form.lr_edit.selectAll()
    qtbot.keyClicks(panel.form.lr_edit, "2e-4")  # the user fixes the field
    assert not panel.error_label.isVisible() and bar.currentMessage() == ""
    # a continued run's losses of 0.06..0.12 are labelled as such, not as 60..120 "(x0.001)"
    plot = panel.view.loss_plot
    for i, loss in enumerate(np.linspace(0.12, 0.06, 50), 1):
        panel.view.history.append(i, float(loss))
    plot.show_history(panel.view.history)
    axis = plot.getPlotItem().getAxis("left")
    axis.updateAutoSIPrefix()
    assert axis.autoSIPrefixScale == 1.0 and "x0.001" not in axis.labelString()


# ---- bug 3 ---------------------------------------------------------------------------------------------------------
def test_use_as_training_data_selects_it_in_the_training_tab(qtbot, window, tmp_path):
    folder = seven_images(tmp_path / "seven")
    assert window.training.form.spec() == "builtin:digits"
    with qtbot.waitSignal(window.images.load_finished, timeout=SLOW):
        window.images.add_paths([str(folder)])
    qtbot.mouseClick(window.images.use_button, Qt.MouseButton.LeftButton)
    assert window.training.form.spec() == str(folder)
    assert "seven" in window.training.form.dataset_combo.currentText()
    # again, after the user picked digits in the Training tab meanwhile
    window.training.form.set_dataset_spec("builtin:digits")
    qtbot.mouseClick(window.images.use_button, Qt.MouseButton.LeftButton)
    assert window.training.form.spec() == str(folder)


# ---- Continue: loss history; run folder names -------------------------------------------------------------------
def test_continue_restores_the_loss_history_and_run_folders_name_data_and_model(qtbot, make_panel, runs):
    panel = make_panel()
    configure(panel, steps=5)
    events = []
    panel.event_received.connect(events.append)
    outcome = run_to_end(qtbot, panel)
    folder = outcome.checkpoint.parent
    assert re.fullmatch(r"\d{8}-\d{6}-digits-tiny-8px", folder.name), folder.name
    steps, losses = read_loss_history(folder / "metrics.jsonl", 5)
    np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(losses, [e.loss for e in events], rtol=1e-12)

    fresh = make_panel()
    with qtbot.waitSignal(fresh.checkpoint_loaded, timeout=SLOW):
        assert fresh.load_checkpoint(outcome.checkpoint)
    xs, ys = fresh.view.loss_plot.raw_curve.getData()
    np.testing.assert_array_equal(xs, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(ys, [e.loss for e in events], rtol=1e-12)
    fresh.form.steps_spin.setValue(7)
    assert run_to_end(qtbot, fresh).reason == "finished"
    xs, _ = fresh.view.loss_plot.raw_curve.getData()
    np.testing.assert_array_equal(xs, np.arange(1, 8))
    steps, _ = read_loss_history(folder / "metrics.jsonl", 100)
    np.testing.assert_array_equal(steps, np.arange(1, 8))


def test_loss_history_reader_takes_the_clis_lines_and_skips_junk(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 10, "loss": 0.5, "lr": 1e-4}, "not json", {"step": 20, "loss": 0.4}, [1, 2],
             {"step": 30, "loss": "x"}, {"step": 15, "loss": 0.45}, {"step": 40, "loss": 0.3}]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    steps, losses = read_loss_history(path, 30)
    np.testing.assert_array_equal(steps, [10, 15])  # a restarted log's later lines win; past the checkpoint: cut
    np.testing.assert_allclose(losses, [0.5, 0.45])


# ---- closing mid-training; continuing on the next start -----------------------------------------------------------
def test_closing_mid_training_asks_then_the_next_start_offers_to_continue(qtbot, settings, runs):
    from diffusion_studio.gui.main_window import MainWindow

    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    win.state.set_schedule(NoiseSchedule.create("linear", 20))
    panel = win.training
    configure(panel, steps=100_000)
    events = []
    panel.event_received.connect(events.append)
    assert panel.start()
    qtbot.waitUntil(lambda: len(events) >= 2, timeout=SLOW)
    assert win.close() is False  # asked first
    box = panel.extras.close_box
    assert box.isVisible() and panel.running and win.isVisible()
    qtbot.mouseClick(panel.extras.keep_button, Qt.MouseButton.LeftButton)
    qtbot.wait(300)
    assert panel.running and win.isVisible()
    assert win.close() is False
    qtbot.mouseClick(panel.extras.save_quit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=SLOW)
    assert not win.pool.running
    saved = load_checkpoint(panel.handle.saved_path)
    # The closed window's Python wrappers are collected now, while no worker runs: collected later, mid-run, shiboken
    # destroys its menus in the GUI thread while the training thread holds a Qt mutex and waits for the GIL — a
    # deadlock seen once in CI.
    import gc

    gc.collect()
    qtbot.wait(50)

    again = MainWindow(QSettings(settings.fileName(), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(again)
    again.show()
    extras = again.training.extras
    assert extras.offer.isVisible() and f"step {saved.step:,} of 100,000" in extras.offer_label.text()
    later = []
    again.training.event_received.connect(later.append)
    qtbot.mouseClick(extras.offer_continue, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(later) >= 1, timeout=SLOW)
    assert later[0].step == saved.step + 1
    with qtbot.waitSignal(again.training.run_finished, timeout=SLOW):
        again.training.stop()
    again.close()
