"""The Schedule panel, driven like a user: its curves are the schedule's tensors, bad values are explained and change
nothing, the t cursor and the app's t move together, a second schedule overlays dashed, CSV/PNG exports are exact."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QLabel, QLineEdit, QSlider, QSpinBox

from diffusion_studio.core.diffusion.schedule import KINDS, NoiseSchedule
from diffusion_studio.gui.panels.schedule.panel import SchedulePanel
from diffusion_studio.gui.state import AppState
from diffusion_studio.gui.workers import WorkerPool

ATTRS = {"beta": "betas", "alpha": "alphas", "alpha_bar": "alpha_bars", "sqrt_alpha_bar": "sqrt_alpha_bars",
         "sqrt_one_minus_alpha_bar": "sqrt_one_minus_alpha_bars", "beta_tilde": "posterior_variance",
         "log_snr": "log_snr"}


def make_panel(qtbot, settings) -> SchedulePanel:
    panel = SchedulePanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(panel)
    panel.resize(400, 760)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


@pytest.fixture
def panel(qtbot, settings):
    return make_panel(qtbot, settings)


def child(panel, cls, name):
    w = panel.findChild(cls, name)
    assert w is not None, f"no {cls.__name__} named {name!r}"
    return w


def type_into(qtbot, widget, text: str) -> None:
    """Select what is there and type over it, then press Enter (as a user edits a field)."""
    edit = widget.lineEdit() if isinstance(widget, QSpinBox) else widget
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(widget, text)
    qtbot.keyClick(widget, Qt.Key.Key_Return)


def choose_kind(qtbot, combo: QComboBox, kind: str) -> None:
    combo.setFocus()
    while combo.currentData() != kind:  # step through the list with the arrow keys, as from the keyboard
        before = combo.currentIndex()
        qtbot.keyClick(combo, Qt.Key.Key_Down if combo.findData(kind) > before else Qt.Key.Key_Up)
        assert combo.currentIndex() != before


def assert_curves_match(curves: dict, schedule: NoiseSchedule, normalised: bool = False) -> None:
    t = np.arange(1, schedule.T + 1, dtype=np.float64)
    for key, attr in ATTRS.items():
        x, y = curves[key].getData()
        np.testing.assert_array_equal(x, t / schedule.T if normalised else t, err_msg=key)
        np.testing.assert_array_equal(y, getattr(schedule, attr).numpy(), err_msg=key)


# ---- the curves are the schedule -------------------------------------------------------------------------------------
def test_each_kind_from_the_combo_becomes_the_apps_schedule_and_its_curves(qtbot, panel):
    state = panel.state
    assert_curves_match(panel.curves, NoiseSchedule.create("linear", 1000))
    combo = child(panel, QComboBox, "kind")
    seen = []
    state.schedule_changed.connect(seen.append)
    for kind in [*[k for k in KINDS if k != "linear"], "linear"]:
        choose_kind(qtbot, combo, kind)
        expected = NoiseSchedule.create(kind, 1000)
        assert seen[-1] is state.schedule and state.schedule == expected and state.schedule.kind == kind
        assert_curves_match(panel.curves, expected)
        # only the fields of this kind are offered
        assert child(panel, QLineEdit, "beta_start").isVisible() == (kind != "cosine")
        assert child(panel, QLineEdit, "s").isVisible() == (kind == "cosine")
        assert not child(panel, QLabel, "errorLabel").isVisible()


def test_typing_T_and_beta_range_applies_them(qtbot, panel):
    type_into(qtbot, child(panel, QSpinBox, "T"), "50")
    assert panel.state.schedule == NoiseSchedule.create("linear", 50)
    type_into(qtbot, child(panel, QLineEdit, "beta_start"), "1e-3")  # scientific notation, as learners type it
    type_into(qtbot, child(panel, QLineEdit, "beta_end"), "0.05")
    expected = NoiseSchedule.create("linear", 50, beta_start=1e-3, beta_end=0.05)
    assert panel.state.schedule == expected
    assert_curves_match(panel.curves, expected)
    assert panel.cursor.bounds()[1] == 50

    # a shorter T pulls t (here at its end) back inside the schedule
    panel.state.set_t(49)
    type_into(qtbot, child(panel, QSpinBox, "T"), "20")
    assert panel.state.t == 19 and all(c.value() == 20 for c in panel.cursors)
    assert "t = 20</b>/20" in child(panel, QLabel, "readout").text()


@pytest.mark.parametrize("field, text, named", [
    ("beta_end", "1.5", ["beta_end"]),
    ("beta_end", "0", ["beta_end"]),
    ("beta_start", "-1e-4", ["beta_start"]),
    ("beta_start", "0.5", ["beta_start", "beta_end"]),   # start > end
    ("beta_end", "abc", ["beta_end"]),
    ("T", "1", ["T"]),
])
def test_invalid_values_are_explained_and_change_nothing(qtbot, panel, field, text, named):
    state = panel.state
    before = state.schedule
    widget = child(panel, QSpinBox if field == "T" else QLineEdit, field)
    error = child(panel, QLabel, "errorLabel")
    with qtbot.assertNotEmitted(state.schedule_changed):
        type_into(qtbot, widget, text)
    assert state.schedule is before
    assert error.isVisible()
    message = error.text()
    assert message and "\n" not in message
    assert message.split()[0] in named, message  # the message opens with the field's name
    for name in named:
        assert name in message
    assert sorted(panel.form.invalid_fields()) == sorted(named)
    assert all(child(panel, QSpinBox if n == "T" else QLineEdit, n).property("invalid") for n in named)
    np.testing.assert_array_equal(panel.curves["beta"].getData()[1], before.betas.numpy())

    fixed = {"beta_end": "0.03", "beta_start": "2e-4", "T": "300"}[field]
    with qtbot.waitSignal(state.schedule_changed, timeout=30_000):
        type_into(qtbot, widget, fixed)
    assert not error.isVisible() and panel.form.invalid_fields() == []
    params = {"beta_start": 1e-4, "beta_end": 0.02}
    T = 300 if field == "T" else 1000
    if field != "T":
        params[field] = float(fixed)
    assert state.schedule == NoiseSchedule.create("linear", T, **params)


def test_a_schedule_set_elsewhere_updates_the_controls_without_echo(qtbot, panel):
    state = panel.state
    type_into(qtbot, child(panel, QLineEdit, "beta_end"), "7")
    assert child(panel, QLabel, "errorLabel").isVisible()
    elsewhere = NoiseSchedule.create("quadratic", 200, beta_start=3e-4, beta_end=0.03)
    seen = []
    state.schedule_changed.connect(seen.append)
    state.set_schedule(elsewhere)
    assert seen == [elsewhere] and state.schedule is elsewhere  # exactly one change: the panel did not re-apply
    assert child(panel, QComboBox, "kind").currentData() == "quadratic"
    assert child(panel, QSpinBox, "T").value() == 200
    assert float(child(panel, QLineEdit, "beta_start").text()) == 3e-4
    assert float(child(panel, QLineEdit, "beta_end").text()) == 0.03
    assert not child(panel, QLabel, "errorLabel").isVisible() and panel.form.invalid_fields() == []
    assert_curves_match(panel.curves, elsewhere)
    # a schedule the editor cannot rebuild (βs from a checkpoint) is still shown
    custom = NoiseSchedule.from_betas(np.linspace(1e-3, 0.05, 40))
    state.set_schedule(custom)
    assert child(panel, QComboBox, "kind").currentText() == "custom"
    assert_curves_match(panel.curves, custom)
    choose_kind(qtbot, child(panel, QComboBox, "kind"), "linear")
    assert state.schedule == NoiseSchedule.create("linear", 40, beta_start=3e-4, beta_end=0.03)
    assert child(panel, QComboBox, "kind").findText("custom") < 0


# ---- the t cursor ----------------------------------------------------------------------------------------------------
def test_cursor_follows_state_t_and_moves_it(qtbot, panel):
    state = panel.state
    assert len(panel.cursors) == 3 and panel.cursor is panel.cursors[0]
    assert all(c.value() == 0 for c in panel.cursors)  # t index −1 = the paper's t = 0, the clean image
    state.set_t(299)
    assert [c.value() for c in panel.cursors] == [300, 300, 300]
    readout = child(panel, QLabel, "readout").text()
    assert "t = 300" in readout and f"ᾱ = {float(state.schedule.alpha_bars[299]):.3g}" in readout

    with qtbot.waitSignal(state.t_changed, timeout=30_000) as blocker:
        panel.cursors[2].setValue(640.4)  # what a drag does to the line
    assert blocker.args == [639] and state.t == 639
    assert [c.value() for c in panel.cursors] == [640, 640, 640]
    panel.cursors[1].setValue(5000)  # clamped to the paper's t = T
    assert state.t == 999 and all(c.value() == 1000 for c in panel.cursors)
    panel.cursors[0].setValue(-3)
    assert state.t == -1 and "clean" in child(panel, QLabel, "readout").text()

    # with x = t/T the cursor sits at t/T (switching leaves t alone) and moving it still sets t
    state.set_t(299)
    child(panel, QCheckBox, "normalise").click()
    assert state.t == 299 and all(c.value() == pytest.approx(0.3) for c in panel.cursors)
    state.set_t(499)
    assert all(c.value() == pytest.approx(0.5) for c in panel.cursors)
    panel.cursors[1].setValue(0.25)
    assert state.t == 249
    assert_curves_match(panel.curves, state.schedule, normalised=True)


def test_dragging_the_cursor_with_the_mouse_sets_t(qtbot, panel):
    state = panel.state
    state.set_t(99)
    plots = panel.plots
    plot = plots.plot_items[1]
    vb = plot.getViewBox()

    def view_point(x: float) -> QPoint:
        y = sum(vb.viewRange()[1]) / 2
        return plots.mapFromScene(vb.mapViewToScene(QPointF(x, y)))

    start, end = view_point(100), view_point(700)
    qtbot.mousePress(plots.viewport(), Qt.MouseButton.LeftButton, pos=start)
    for i in range(1, 11):
        p = start + (end - start) * (i / 10)
        qtbot.mouseMove(plots.viewport(), pos=QPoint(round(p.x()), round(p.y())))
    qtbot.mouseRelease(plots.viewport(), Qt.MouseButton.LeftButton, pos=end)
    # one pixel is a few t wide at this size: the drag lands near t = 700 and every cursor shows state.t
    assert abs(state.paper_t - 700) <= 6, state.paper_t
    assert all(c.value() == state.paper_t for c in panel.cursors)


def test_cursor_moves_the_forward_panels_slider(qtbot, window):
    panel = window.schedule
    slider = window.forward.findChild(QSlider, "tSlider")  # the Forward panel's t slider (the paper's t)
    assert slider is not None
    panel.cursors[0].setValue(420)
    assert window.state.t == 419
    qtbot.waitUntil(lambda: slider.value() == 420, timeout=30_000)
    slider.setValue(77)  # and the other way round
    qtbot.waitUntil(lambda: all(c.value() == 77 for c in panel.cursors), timeout=30_000)


# ---- comparison ------------------------------------------------------------------------------------------------------
def test_compare_overlays_a_dashed_second_schedule(qtbot, panel):
    state = panel.state
    assert not any(c.isVisible() for c in panel.compare_curves.values())
    with qtbot.assertNotEmitted(state.schedule_changed):
        child(panel, QCheckBox, "compare").click()
        choose_kind(qtbot, child(panel, QComboBox, "compare_kind"), "cosine")
    cosine = NoiseSchedule.create("cosine", 1000)
    assert panel.compare_schedule == cosine and state.schedule == NoiseSchedule.create("linear", 1000)
    for key, item in panel.compare_curves.items():
        assert item.isVisible() and item.opts["pen"].style() == Qt.PenStyle.DashLine, key
        assert panel.curves[key].opts["pen"].style() == Qt.PenStyle.SolidLine
    assert_curves_match(panel.compare_curves, cosine)
    assert "dashed" in child(panel, QLabel, "readout").text()

    # a different T compares best against t/T
    type_into(qtbot, child(panel, QSpinBox, "compare_T"), "250")
    child(panel, QCheckBox, "normalise").click()
    assert_curves_match(panel.compare_curves, NoiseSchedule.create("cosine", 250), normalised=True)
    assert_curves_match(panel.curves, state.schedule, normalised=True)
    # an invalid comparison is explained in its own label and leaves the overlay as it was
    type_into(qtbot, child(panel, QLineEdit, "compare_s"), "-1")
    assert child(panel, QLabel, "compare_errorLabel").isVisible()
    assert "s must" in child(panel, QLabel, "compare_errorLabel").text()
    assert not child(panel, QLabel, "errorLabel").isVisible()
    assert panel.compare_schedule == NoiseSchedule.create("cosine", 250)

    child(panel, QCheckBox, "show_alpha_bar").click()  # hiding a curve hides its dashed twin too
    assert not panel.curves["alpha_bar"].isVisible() and not panel.compare_curves["alpha_bar"].isVisible()
    assert panel.compare_curves["beta"].isVisible()
    child(panel, QCheckBox, "compare").click()
    assert not any(c.isVisible() for c in panel.compare_curves.values())


# ---- export ----------------------------------------------------------------------------------------------------------
def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_export_csv_round_trips_every_value_exactly(qtbot, panel, tmp_path):
    type_into(qtbot, child(panel, QLineEdit, "beta_start"), "1e-4")
    choose_kind(qtbot, child(panel, QComboBox, "kind"), "sigmoid")
    schedule = panel.state.schedule
    header, rows = read_csv(panel.export_csv(tmp_path / "curves.csv"))
    names = ["beta", "alpha", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "beta_tilde", "log_snr"]
    assert header == ["t", *names] and len(rows) == schedule.T
    assert [int(r[0]) for r in rows] == list(range(1, schedule.T + 1))
    for j, name in enumerate(names, start=1):
        column = np.array([float(r[j]) for r in rows])
        np.testing.assert_array_equal(column, getattr(schedule, ATTRS[name]).numpy(), err_msg=name)

    # with a comparison shown, its columns follow, prefixed, and end where its T ends
    child(panel, QCheckBox, "compare").click()
    type_into(qtbot, child(panel, QSpinBox, "compare_T"), "600")
    header, rows = read_csv(panel.export_csv(tmp_path / "both.csv"))
    assert header == ["t", *names, "compare_t", *[f"compare_{n}" for n in names]]
    assert len(rows) == 1000
    cmp = NoiseSchedule.create("cosine", 600)
    for j, name in enumerate(names, start=len(names) + 2):
        column = np.array([float(r[j]) for r in rows[:600]])
        np.testing.assert_array_equal(column, getattr(cmp, ATTRS[name]).numpy(), err_msg=name)
    assert all(r[len(names) + 1] == "" for r in rows[600:])


def test_export_png_writes_the_plots(qtbot, panel, tmp_path):
    from PIL import Image

    child(panel, QCheckBox, "compare").click()
    path = panel.export_png(tmp_path / "plot.png")
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    h, w, _ = img.shape
    assert w >= 600 and h >= 400, (w, h)
    assert img.std() > 10
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    # the curves' colours are in it (ᾱ's cyan, log SNR's gold)
    for colour in ((0x29, 0xC4, 0xFF), (0xFF, 0xD2, 0x3F)):
        assert (np.abs(img - colour).sum(axis=2) < 30).sum() > 100, colour


def test_export_dialogs_save_where_the_user_chose(qtbot, panel, tmp_path, monkeypatch):
    chosen = iter([str(tmp_path / "a.csv"), str(tmp_path / "a.png"), ""])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (next(chosen), "")))
    panel.export_csv_dialog()
    panel.export_png_dialog()
    panel.export_csv_dialog()  # cancelled: nothing happens
    assert (tmp_path / "a.csv").stat().st_size > 10_000 and (tmp_path / "a.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".png")) == ["a.csv", "a.png"]


# ---- settings --------------------------------------------------------------------------------------------------------
def test_last_schedule_is_remembered_and_restored_only_if_valid(qtbot, settings, tmp_path):
    first = make_panel(qtbot, settings)
    choose_kind(qtbot, child(first, QComboBox, "kind"), "quadratic")
    type_into(qtbot, child(first, QSpinBox, "T"), "321")
    type_into(qtbot, child(first, QLineEdit, "beta_end"), "0.04")
    child(first, QCheckBox, "show_log_snr").click()
    first.save_settings()
    settings.sync()

    second = make_panel(qtbot, QSettings(settings.fileName(), QSettings.Format.IniFormat))
    assert second.state.schedule == NoiseSchedule.create("quadratic", 321, beta_end=0.04)
    assert child(second, QComboBox, "kind").currentData() == "quadratic"
    assert child(second, QSpinBox, "T").value() == 321
    assert not child(second, QCheckBox, "show_log_snr").isChecked() and not second.curves["log_snr"].isVisible()

    bad = QSettings(str(tmp_path / "bad.ini"), QSettings.Format.IniFormat)
    bad.setValue("schedule/last", '{"kind": "linear", "T": 1000, "params": {"beta_start": 0.5, "beta_end": 0.1}}')
    third = make_panel(qtbot, bad)
    assert third.state.schedule == NoiseSchedule.create("linear", 1000)
    assert not child(third, QLabel, "errorLabel").isVisible()
