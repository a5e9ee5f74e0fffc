"""The bad-input zoo (tests/zoo.py) through the CLI and the GUI: every bad file gets one line naming it and saying why,
the good ones are used; folders with no images, only broken images or symlink loops end with a clear answer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.data import to_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SLOW = 120_000  # ms; the CPU is shared


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    folder = tmp_path / "zoo"
    expect = zoo.make_zoo(folder)
    zoo.deny_reads(folder / "unreadable.png", monkeypatch)
    return folder, expect


def cli(capsys, *args) -> tuple[int, list[str], list[str]]:
    """The CLI in this process: (exit code, stdout lines, stderr lines)."""
    from diffusion_studio.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), [line for line in err.splitlines() if line.strip()]


def assert_each_bad_file_named_once(lines: list[str], bad: dict[str, str]) -> None:
    """Per bad file: exactly one line names it, and that line carries its reason's keyword."""
    for name, keyword in bad.items():
        mine = [line for line in lines if f"{name}: " in line]
        assert len(mine) == 1, (name, mine)
        assert keyword in mine[0].split(f"{name}: ", 1)[1], (name, mine[0])


# ---- the CLI ---------------------------------------------------------------------------------------------------------
def test_cli_trains_on_the_good_files_and_names_every_bad_one(capsys, tmp_path, zoo_dir):
    folder, expect = zoo_dir
    good, bad = zoo.good(expect), zoo.bad(expect)
    code, out, err = cli(capsys, "train", "--data", folder, "--size", 16, "--model", "tiny", "--steps", 2,
                         "--batch", 2, "--T", 20, "--out", tmp_path / "run")
    assert code == 0, err
    assert_each_bad_file_named_once(out + err, bad)
    skipped = [line.strip() for line in out if line.strip().startswith("skipped ")]
    assert len(skipped) == len(bad)  # one line each, nothing about the good files or the symlink loop
    assert any(f"{len(good)} images" in line for line in out if line.startswith("data "))
    summary = next(line for line in out if "failed (see list)" in line)
    assert f"loaded {len(good)} images; {len(bad)} failed" in summary and "1 non-image file skipped" in summary
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2 and ckpt.meta["data"]["n"] == len(good)
    print("\nCLI, what the user sees for the zoo:\n" + "\n".join(skipped))


def test_cli_folder_with_no_images_is_one_line(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    code, out, err = cli(capsys, "train", "--data", empty, "--size", 16, "--out", tmp_path / "run")
    assert code == 1 and out == [] and len(err) == 1
    assert err[0].startswith("diffusion-studio: empty: no images found") and "1 other files ignored" in err[0]
    assert not (tmp_path / "run").exists()


def test_cli_folder_of_only_broken_files_is_one_line_naming_the_count(capsys, tmp_path):
    names = zoo.broken_only(tmp_path / "broken")
    code, out, err = cli(capsys, "train", "--data", tmp_path / "broken", "--size", 16, "--out", tmp_path / "run")
    assert code == 1 and len(err) == 1, err
    assert f"no loadable images ({len(names)} files failed, first: " in err[0]
    assert any(n in err[0] for n in names)
    assert not (tmp_path / "run").exists()


def test_cli_symlink_loop_trains_and_ends(capsys, tmp_path):
    n = zoo.loop_folder(tmp_path / "loopy")
    code, out, err = cli(capsys, "train", "--data", tmp_path / "loopy", "--size", 16, "--model", "tiny",
                         "--steps", 1, "--batch", 2, "--T", 20, "--out", tmp_path / "run")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run").meta["data"]["n"] == n  # each real image once, however many links
    assert not any("skipped" in line for line in out)


# ---- the GUI ---------------------------------------------------------------------------------------------------------
def problem_lines(panel) -> list[str]:
    return [panel.problems.item(i).text() for i in range(panel.problems.count())]


def test_images_panel_lists_each_problem_shows_the_good_files_and_stays_usable(qtbot, window, zoo_dir):
    folder, expect = zoo_dir
    good, bad = zoo.good(expect), zoo.bad(expect)
    images = window.images
    with qtbot.waitSignal(images.load_finished, timeout=SLOW) as finished:
        images.add_paths([str(folder)])
    qtbot.waitUntil(lambda: not images.loading and not window.pool.running, timeout=SLOW)
    result = finished.args[0]
    assert (result.loaded, result.failed) == (len(good), len(bad))

    lines = problem_lines(images)
    assert len(lines) == len(bad) and all("\n" not in line for line in lines)
    assert_each_bad_file_named_once(lines, bad)
    assert images.problems.isVisibleTo(images) and images.problems_label.text() == f"Problems ({len(bad)})"
    names = [images.thumbnails.item(i).text() for i in range(images.thumbnails.count())]
    assert sorted(names) == good
    assert f"{len(bad)} could not be read" in images.status_label.text()
    print("\nGUI Problems list for the zoo:\n" + "\n".join(lines))

    # The EXIF-rotated photo comes out upright: x_0 is the centre square of the upright picture.
    images.thumbnails.setCurrentRow(names.index("exif-rotated.jpg"))
    shown = window.state.image
    assert shown.name == "exif-rotated.jpg"
    size = images.working_size
    upright = to_array(Image.fromarray(zoo.upright_quadrants()), size, 3).astype(int)
    sideways = to_array(Image.fromarray(np.rot90(zoo.upright_quadrants())), size, 3).astype(int)
    err_upright = np.abs(shown.display.astype(int) - upright).mean()
    assert err_upright < 12 < np.abs(shown.display.astype(int) - sideways).mean(), err_upright
    assert np.array_equal(window.forward.x0_pane.current, shown.display)

    # Still usable: pick another picture and the Forward panel follows.
    images.thumbnails.setCurrentRow(names.index("wide-4000x10.png"))
    assert window.state.image.name == "wide-4000x10.png"
    assert np.array_equal(window.forward.x0_pane.current, window.state.image.display)
    assert window.forward.xt_pane.current.shape[:2] == (size, size)


@pytest.fixture
def images_panel(qtbot, settings):
    from diffusion_studio.gui.panels.images.panel import ImagesPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    p = ImagesPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(10_000)


def test_images_panel_says_why_a_folder_gave_no_images(qtbot, images_panel, tmp_path):
    """Before: "empty: 0 images" and nothing else, and the empty folder was still offered as training data."""
    panel = images_panel
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    broken = zoo.broken_only(tmp_path / "broken")
    for folder, words in ((empty, "empty: no images found (looked for .png"),
                          (tmp_path / "broken", f"broken: no loadable images ({len(broken)} files failed")):
        x0 = panel.state.image
        with qtbot.waitSignal(panel.load_finished, timeout=SLOW):
            panel.add_paths([str(folder)])
        qtbot.waitUntil(lambda: not panel.loading and not panel.pool.running, timeout=SLOW)
        assert panel.error_label.isVisibleTo(panel) and panel.error_label.text().startswith(words), \
            panel.error_label.text()
        assert "\n" not in panel.error_label.text()
        assert not panel.use_button.isEnabled()  # nothing to train on
        assert panel.thumbnails.count() == 0 and panel.state.image is x0  # the x_0 in use stays
    assert [line.split(": ")[0] for line in problem_lines(panel)] == broken
    panel.load_builtin_sample()  # and the panel goes on
    assert panel.use_button.isEnabled() and not panel.error_label.isVisibleTo(panel)


def test_training_panel_trains_on_the_good_zoo_files(qtbot, window, zoo_dir):
    folder, expect = zoo_dir
    good = zoo.good(expect)
    window.state.set_schedule(NoiseSchedule.create("linear", 20))
    panel = window.training
    f = panel.form
    f.set_dataset_spec(str(folder))
    f.size_spin.setValue(16)
    f.preset_combo.setCurrentIndex(f.preset_combo.findData("tiny"))
    f.device_combo.setCurrentIndex(f.device_combo.findData("cpu"))
    f.steps_spin.setValue(2)
    f.lr_edit.setText("1e-3")
    f.preview_spin.setValue(0)
    f.save_every_spin.setValue(0)
    f.out_edit.clear()
    qtbot.keyClicks(f.out_edit, str(folder.parent / "gui-run"))  # typed: the run goes exactly there

    f.batch_spin.setValue(len(good) + 1)  # one more than the good files: refused once the folder is read
    with qtbot.waitSignal(panel.run_finished, timeout=SLOW) as done:
        assert panel.start()
    outcome = done.args[0]
    assert outcome.reason == "error" and outcome.checkpoint is None and panel.last_event is None
    assert panel.error_label.isVisibleTo(panel)
    assert f"batch_size: {len(good) + 1} is larger than the dataset ({len(good)} images)" in panel.error_label.text()

    f.batch_spin.setValue(2)
    started = []
    panel.run_started.connect(started.append)
    with qtbot.waitSignal(panel.run_finished, timeout=SLOW) as done:
        assert panel.start()
    outcome = done.args[0]
    assert outcome.reason == "finished" and outcome.step == 2, outcome
    assert started[0].n_images == len(good)
    ckpt = load_checkpoint(outcome.checkpoint)
    assert ckpt.step == 2 and ckpt.meta["data"]["n"] == len(good)
    assert Path(outcome.checkpoint) == folder.parent / "gui-run" / "checkpoint.json"
    assert not panel.error_label.isVisibleTo(panel)


# ---- invalid numbers: refused before anything starts ----------------------------------------------------------------
# (tests/test_cli.py already covers --steps -3, --T 1, --batch 0, --size 30, --beta-end 1.5, --lr 0, start > end and
# sample --n 0; tests/test_gui_training.py lr 5 / 'fast' / size 30 / steps ≤ 0; tests/test_gui_schedule.py β_end 1.5
# and 0, β_start < 0, start > end, text, T = 1. These are the remaining edges.)
@pytest.mark.parametrize("extra, flag", [
    (["--beta-end", "1.0"], "--beta-end"),
    (["--beta-end", "1"], "--beta-end"),
    (["--beta-start", "0"], "--beta-start"),
    (["--lr", "2"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--ema-decay", "1"], "--ema-decay"),
    (["--steps", "0"], "--steps"),
    (["--T", "0"], "--T"),
    (["--size", "0"], "--size"),
    (["--batch", "1798"], "--batch"),  # builtin:digits holds 1,797 images
])
def test_cli_train_refuses_invalid_numbers_before_writing_anything(capsys, tmp_path, extra, flag):
    code, _out, err = cli(capsys, "train", "--data", "builtin:digits", "--size", 16, "--out", tmp_path / "run", *extra)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"diffusion-studio: error: argument {flag}: "), err[0]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from diffusion_studio.core.io.checkpoint import save_checkpoint
    from diffusion_studio.core.nets.unet import UNet, preset_config

    cfg = preset_config("tiny", 8, 1)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.json", {"ema": UNet(cfg).state_dict()},
                           {"step": 1, "model": cfg.to_dict(),
                            "schedule": NoiseSchedule.create("linear", 20).to_dict()})


@pytest.mark.parametrize("extra, flag", [
    (["--n", "-1"], "--n"),
    (["--steps", "0"], "--steps"),
    (["--steps", "21"], "--steps"),          # more than the model's T = 20
    (["--eta", "-1"], "--eta"),
    (["--batch", "0"], "--batch"),
    (["--label", "1", "--guidance", "-2"], "--guidance"),
])
def test_cli_sample_refuses_invalid_numbers_before_writing_anything(capsys, tmp_path, tiny_model, extra, flag):
    code, _out, err = cli(capsys, "sample", "--model", tiny_model, "--out", tmp_path / "out", *extra)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"diffusion-studio: error: argument {flag}: "), err[0]
    assert not (tmp_path / "out").exists()


def test_training_panel_refuses_every_bad_learning_rate_and_starts_nothing(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_STUDIO_RUNS", str(tmp_path / "runs"))
    panel = window.training
    panel.form.set_dataset_spec("builtin:digits")
    before = (window.state.model, window.state.schedule)
    for text in ("0", "-1e-3", "1", "1.0", "", "inf", "nan"):
        panel.form.lr_edit.setText(text)
        assert panel.start() is False, text
        label = panel.error_label
        assert label.isVisibleTo(panel) and label.text().startswith("Learning rate (lr): "), (text, label.text())
        assert "\n" not in label.text()
        assert panel.worker is None and not panel.pool.running and not panel.running
    assert (window.state.model, window.state.schedule) == before
    assert not (tmp_path / "runs").exists()


def type_into(qtbot, widget, text: str) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QSpinBox

    edit = widget.lineEdit() if isinstance(widget, QSpinBox) else widget
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(widget, text)
    qtbot.keyClick(widget, Qt.Key.Key_Return)


def test_schedule_panel_refuses_beta_of_one_and_zero(qtbot, window):
    from PySide6.QtWidgets import QLabel, QLineEdit

    panel = window.schedule
    state = window.state
    before = state.schedule
    error = panel.findChild(QLabel, "errorLabel")
    for field, text in (("beta_end", "1"), ("beta_start", "0"), ("beta_start", "1")):
        edit = panel.findChild(QLineEdit, field)
        with qtbot.assertNotEmitted(state.schedule_changed):
            type_into(qtbot, edit, text)
        assert state.schedule is before
        assert error.isVisible() and error.text().startswith(field) and "(0, 1)" in error.text(), error.text()
        assert field in panel.form.invalid_fields()
        type_into(qtbot, edit, {"beta_start": "0.0001", "beta_end": "0.02"}[field])  # back to the valid value
        assert not error.isVisible() and state.schedule == before
    assert not window.pool.running and window.training.worker is None
