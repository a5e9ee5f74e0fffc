"""The user study's rough edges around runs, repeated through the real widgets: a text run continued after the
window was closed and reopened keeps every choice it was made with; a latent run says "latent" in its folder, its
summary and the form; a fresh run after a Continue starts from the form's own choices; the loss plot names the
objective; a text run's preview names its captions; File ▸ Open Checkpoint and Continue… name the file the user chose;
builtin:mnist is offered and captioned like the digits."""
from __future__ import annotations

import gc
import re

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtWidgets import QFileDialog

from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.nets import text
from diffusion_studio.core.train.recipe import RECIPE
from diffusion_studio.data.captions import digit_caption
from test_text_core import StubEncoder  # registers the stub encoder (the real one is slow to load on this CPU)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SLOW = 120_000


def configure(panel, spec="builtin:digits", steps=4, batch=8, preview=0, size=8, objective=None):
    f = panel.form
    f.set_dataset_spec(spec)
    if f.size_spin.isEnabled():
        f.size_spin.setValue(size)
    f.preset_combo.setCurrentIndex(f.preset_combo.findData("tiny"))
    f.batch_spin.setValue(batch)
    f.lr_edit.setText("1e-3")
    f.steps_spin.setValue(steps)
    f.device_combo.setCurrentIndex(f.device_combo.findData("cpu"))
    f.preview_spin.setValue(preview)
    f.save_every_spin.setValue(0)
    if objective:
        f.objective_combo.setCurrentIndex(f.objective_combo.findData(objective))


def run_to_end(qtbot, panel):
    with qtbot.waitSignal(panel.run_finished, timeout=SLOW) as blocker:
        assert panel.start() is not False
    return blocker.args[0]


def plain_title(plot) -> str:
    return plot.getPlotItem().titleLabel.text


def fresh_form_state(form) -> tuple:
    return (form.length.unit(), form.minutes_spin.value(), form.caption_row.check.isChecked(),
            form.space_row.currentData(), form.preset_combo.currentData(), form.out_edit.text(),
            form.caption_row.check.isEnabled(), form.space_row.isEnabled(), form.objective_combo.isEnabled())


# ---- 1: a text run, closed mid-training and continued after reopening -------------------------------------------
def test_a_text_run_continued_after_reopening_keeps_every_choice(qtbot, settings, runs, monkeypatch):
    from diffusion_studio.gui.main_window import MainWindow

    monkeypatch.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    win.state.set_schedule(NoiseSchedule.create("linear", 20))
    panel = win.training
    win.show_panel(panel)
    configure(panel, steps=100_000, preview=2, objective="v,min_snr")
    check = panel.form.caption_row.check
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=QPoint(8, check.height() // 2))  # "Condition on captions"
    assert panel.form.caption_row.check.isChecked()
    events = []
    panel.event_received.connect(events.append)
    assert panel.start()
    qtbot.waitUntil(lambda: len(events) >= 2, timeout=SLOW)
    assert win.close() is False
    qtbot.mouseClick(panel.extras.save_quit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=SLOW)
    saved = load_checkpoint(panel.handle.saved_path)
    assert saved.meta["train"]["text"] is True and saved.path.parent.name.endswith("-digits-tiny-8px-text")
    gc.collect()
    qtbot.wait(50)

    again = MainWindow(QSettings(settings.fileName(), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(again)
    again.show()
    p2, f = again.training, again.training.form
    assert again.tabs.currentWidget() is p2 and p2.extras.offer.isVisible()
    assert not f.caption_row.check.isChecked()  # the reopened form holds the app's defaults …
    again.state.set_schedule(NoiseSchedule.create("cosine", 40))  # … and the Schedule dock has moved on since
    assert p2.view.bucket_plot.edges[-1] == 40  # (before a run, "Loss by t" spans the schedule Start would use)
    later = []
    p2.event_received.connect(later.append)
    previews = []
    original = p2.view.show_preview
    p2.view.show_preview = lambda images, step: (previews.append(step), original(images, step))
    qtbot.mouseClick(p2.extras.offer_continue, Qt.MouseButton.LeftButton)  # "Continue it"
    qtbot.waitUntil(lambda: len(later) >= 1, timeout=SLOW)
    assert later[0].step == saved.step + 1 and not p2.error_label.isVisible()
    # … and "Continue it" restored every choice the run was made with, locked while it is continued.
    assert f.caption_row.check.isChecked() and not f.caption_row.check.isEnabled()
    assert "has no captions" not in f.caption_row.captions_label.text()
    assert f.space_row.currentData() == "pixels" and not f.space_row.isEnabled()
    assert (f.preset_combo.currentData(), f.size_spin.value(), f.objective_combo.currentData()) == \
        ("tiny", 8, "v,min_snr")
    assert not f.objective_combo.isEnabled() and not f.size_spin.isEnabled()
    assert f.schedule_label.text() == f"{saved.schedule.describe()} (the checkpoint's own)"
    assert saved.schedule.T == 20 and p2.view.bucket_plot.edges[-1] == 20  # "Loss by t" spans the run's own t
    # The summary, the loss plot and the preview say what this run is.
    assert "conditioned on captions" in p2.info_label.text()
    title = plain_title(p2.view.loss_plot)
    assert "Min-SNR-5-weighted ‖v − v_θ(x_t, t)‖²" in title and "\\" not in title and "$" not in title
    caps = p2.view.preview_captions
    assert caps.isVisible() and caps.text().startswith("Captions, row by row:")
    shown = re.findall(r"“([^”]*)”", caps.text())
    digit_captions = {digit_caption(k, form) for k in range(10) for form in range(4)}
    assert len(shown) == 16 and set(shown) <= digit_captions and len(set(shown)) >= 8
    qtbot.waitUntil(lambda: len(previews) >= 1, timeout=SLOW)
    assert "(captions below)" in p2.view.preview.label.text
    with qtbot.waitSignal(p2.run_finished, timeout=SLOW):
        qtbot.mouseClick(p2.stop_button, Qt.MouseButton.LeftButton)
    # Done with the continued run: the form is the fresh-run form again, unlocked.
    assert not f.caption_row.check.isChecked() and f.caption_row.check.isEnabled() and f.objective_combo.isEnabled()
    # The Sampling list offers the run once, as "Just trained" (not a second time from the runs folder).
    combo = again.sampling.chooser.combo
    keys = [combo.itemData(i) for i in range(combo.count())]
    assert "trained" in keys and f"file:{saved.path.resolve()}" not in keys
    again.close()


# ---- a latent run: its folder, summary and form say so ----------------------------------------------------------
def test_a_latent_run_says_latent_and_continue_restores_its_autoencoder_and_size(qtbot, make_training_panel,
                                                                                 tmp_path):
    folder = tmp_path / "squares"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    panel = make_training_panel(T=20)
    f = panel.form
    configure(panel, spec=str(folder), steps=2, batch=4)
    i = f.space_row.findData("builtin:shapes-ae")
    assert i >= 0, "the shipped autoencoder is missing"
    f.space_row.setCurrentIndex(i)
    assert f.size_spin.value() == 32 and not f.size_spin.isEnabled()
    started, summaries = [], []
    panel.run_started.connect(lambda item: (started.append(item), summaries.append(panel.info_label.text())))
    outcome = run_to_end(qtbot, panel)
    assert outcome.reason == "finished", panel.error_label.text()
    assert re.fullmatch(r"\d{8}-\d{6}-squares-tiny-32px-latent", outcome.checkpoint.parent.name)
    assert started[0].space.startswith("latent 4×8×8") and "builtin:shapes-ae" in started[0].space
    assert "latent UNet on squares" in summaries[0] and "diffusion on latent 4×8×8" in summaries[0]

    fresh = make_training_panel(T=20)
    g = fresh.form
    assert g.space_row.currentData() == "pixels"
    with qtbot.waitSignal(fresh.checkpoint_loaded, timeout=SLOW):
        assert fresh.load_checkpoint(outcome.checkpoint)
    assert g.space_row.currentData() == "builtin:shapes-ae" and not g.space_row.isEnabled()
    assert g.size_spin.value() == 32 and g.channels_label.text().startswith("3")  # the images', not the latents'
    assert g.spec() == str(folder) and g.preset_combo.currentData() == "tiny"
    g.steps_spin.setValue(4)
    resumed, summaries = [], []
    fresh.event_received.connect(resumed.append)
    fresh.run_started.connect(lambda _item: summaries.append(fresh.info_label.text()))
    assert run_to_end(qtbot, fresh).reason == "finished", fresh.error_label.text()
    assert [e.step for e in resumed] == [3, 4]
    assert summaries[0].startswith("Continuing a") and "latent UNet" in summaries[0]
    assert load_checkpoint(outcome.checkpoint).meta["latent"]["source"] == "builtin:shapes-ae"


# ---- a fresh run after a Continue ------------------------------------------------------------------------------
def test_a_new_run_after_a_continue_starts_from_the_defaults(qtbot, make_training_panel):
    first = make_training_panel(T=20)
    configure(first, steps=5, objective="eps,uniform")
    outcome = run_to_end(qtbot, first)

    panel = make_training_panel(T=20)
    f = panel.form
    defaults = fresh_form_state(f)
    assert defaults[:2] == ("minutes", float(RECIPE["minutes"]))
    with qtbot.waitSignal(panel.checkpoint_loaded, timeout=SLOW):
        assert panel.load_checkpoint(outcome.checkpoint)
    assert (f.length.unit(), f.steps_spin.value(), f.objective_combo.currentData()) == ("steps", 1005, "eps,uniform")
    assert "‖ε − ε_θ(x_t, t)‖² (L_simple)" in plain_title(panel.view.loss_plot)
    qtbot.mouseClick(f.resume_clear, Qt.MouseButton.LeftButton)  # "Start fresh instead"
    assert fresh_form_state(f) == defaults and panel.resume_checkpoint is None
    assert "Min-SNR-5-weighted ‖ε − ε_θ(x_t, t)‖²" in plain_title(panel.view.loss_plot)

    with qtbot.waitSignal(panel.checkpoint_loaded, timeout=SLOW):
        assert panel.load_checkpoint(outcome.checkpoint)
    f.steps_spin.setValue(6)
    assert run_to_end(qtbot, panel).reason == "finished"
    assert fresh_form_state(f) == defaults  # the continued run's "1,005 steps" and objective are gone
    req = panel.build_request()
    assert req.resume is None and req.config.steps is None and req.config.minutes == float(RECIPE["minutes"])
    assert (req.prediction, req.config.loss_weighting) == ("eps", "min_snr")
    panel.save_settings()
    assert panel.settings.value("training/length_unit") == "minutes"


def test_the_loss_plot_names_the_objective_the_form_chooses(qtbot, make_training_panel):
    panel = make_training_panel()
    title = plain_title(panel.view.loss_plot)
    assert "Min-SNR-5-weighted ‖ε − ε_θ(x_t, t)‖²" in title  # the recipe's default, not the seeds' plain MSE
    assert "<sub>" not in title and "\\" not in title
    assert "Min-SNR-5" in panel.view.loss_plot.toolTip()
    combo = panel.form.objective_combo
    combo.setCurrentIndex(combo.findData("x0,min_snr"))
    assert "‖x₀ − x̂₀(x_t, t)‖²" in plain_title(panel.view.loss_plot)
    assert "unweighted" in plain_title(panel.view.bucket_plot)


# ---- 6: a file that is no checkpoint ----------------------------------------------------------------------------
def test_open_checkpoint_and_continue_name_the_file_the_user_chose(qtbot, window, tmp_path, monkeypatch):
    from diffusion_studio.core.io.checkpoint import save_checkpoint
    from diffusion_studio.core.nets.unet import UNet, preset_config
    from test_gui_window import action_named, menus

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes on the run\n")
    cfg = preset_config("tiny", 8, 1)  # a real checkpoint named notes.json beside it must not be what opens
    save_checkpoint(tmp_path / "notes.json", {"ema": UNet(cfg).state_dict()},
                    {"model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 20).to_dict(), "step": 3})
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(notes), "")))
    sampling = window.sampling
    loaded_before = sampling.loaded
    action_named(menus(window)["File"], "Open Checkpoint…").trigger()
    assert not sampling.error_label.isHidden()  # (shown in the Sampling tab; the status bar says it at once)
    message = sampling.error_label.text()
    assert "notes.txt: not a checkpoint" in message and "notes.json" not in message
    assert "notes.txt" in window.statusBar().currentMessage()
    assert sampling.loaded is loaded_before

    training = window.training
    window.show_panel(training)
    qtbot.mouseClick(training.load_button, Qt.MouseButton.LeftButton)  # "Continue…"
    qtbot.waitUntil(lambda: training.error_label.isVisible() and training._loader is None, timeout=SLOW)
    assert "Continue: notes.txt: not a checkpoint" in training.error_label.text()
    assert training.resume_checkpoint is None
    qtbot.waitUntil(lambda: not window.pool.running, timeout=SLOW)


# ---- builtin:mnist in the Training tab ------------------------------------------------------------------------------
def test_builtin_mnist_is_offered_and_captioned_like_the_digits(qtbot, make_training_panel, monkeypatch):
    from diffusion_studio.data import BUILTIN_DATASETS
    from diffusion_studio.jobs.training import fid_extractor_for

    monkeypatch.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    panel = make_training_panel(T=20)
    f = panel.form
    offered = [f.dataset_combo.itemData(i) for i in range(f.dataset_combo.count())]
    assert "builtin:mnist" in offered and all(f"builtin:{n}" in offered for n in BUILTIN_DATASETS)
    f.dataset_combo.setCurrentIndex(f.dataset_combo.findData("builtin:mnist"))
    assert f.spec() == "builtin:mnist" and f.size_spin.value() == 28 and f.channels_label.text().startswith("1")
    check = f.caption_row.check
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=QPoint(8, check.height() // 2))
    assert check.isChecked()
    shown = f.caption_row.captions_label.text()
    assert "has no captions" not in shown and "seven" in shown
    assert fid_extractor_for("builtin:mnist") in (None, "builtin:mnist")
    configure(panel, spec="builtin:mnist", steps=2, batch=4, size=8)
    started = []
    panel.run_started.connect(lambda item: started.append(panel.info_label.text()))
    outcome = run_to_end(qtbot, panel)
    assert outcome.reason == "finished", panel.error_label.text()
    assert "conditioned on captions" in started[0] and "mnist" in started[0]
    assert outcome.checkpoint.parent.name.endswith("-mnist-tiny-8px-text")
    shown = re.findall(r"“([^”]*)”", panel.view.preview_captions.text())
    assert shown and set(shown) <= {digit_caption(k, form) for k in range(10) for form in range(4)}
