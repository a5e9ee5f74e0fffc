"""The main window as a whole: title, menus and shortcuts, status bar, About, remembered layout, panels following the
shared schedule, and a quick clean close."""
from __future__ import annotations

import time
from pathlib import Path

import pyqtgraph as pg
import PySide6
import torch
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QComboBox, QFileDialog, QMessageBox, QSlider, QSpinBox

from diffusion_studio.core.diffusion.schedule import NoiseSchedule

MENUS = {
    "File": ["Open Images…", "Open Folder…", "Open Checkpoint…", "Save Checkpoint…", "Export", "Quit"],
    "View": ["Forward process", "Training", "Sampling", "Images", "Schedule", "Reset Layout"],
    "Run": ["Start/Resume Training", "Pause Training", "Stop Training", "Sample", "Stop Sampling"],
    "Help": ["About Diffusion Studio", "Tour"],
}
EXPORTS = ["Schedule Curves as CSV…", "Schedule Plot as PNG…", "Forward Filmstrip as PNG…", "Samples Grid as PNG…",
           "Sampling Animation as GIF…"]


def plain(text: str) -> str:
    return text.replace("&", "")


def menus(window) -> dict:
    out = {}
    for action in window.menuBar().actions():
        out[plain(action.text())] = action.menu()
    return out


def action_named(menu, text: str):
    for action in menu.actions():
        if plain(action.text()) == text:
            return action
    raise AssertionError(f"no action {text!r} in {[plain(a.text()) for a in menu.actions()]}")


def test_title_menus_and_their_actions(window):
    assert window.windowTitle() == "Diffusion Studio"
    found = menus(window)
    assert list(found) == list(MENUS)
    for name, expected in MENUS.items():
        texts = [plain(a.text()) for a in found[name].actions() if not a.isSeparator()]
        assert texts == expected, name
    export = action_named(found["File"], "Export").menu()
    assert [plain(a.text()) for a in export.actions()] == EXPORTS
    assert action_named(found["View"], "Schedule").isChecked() and window.schedule_dock.isVisible()


def test_ctrl_digit_switches_tabs(qtbot, window):
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=30_000)
    for key, panel in ((Qt.Key.Key_3, window.sampling), (Qt.Key.Key_2, window.training),
                       (Qt.Key.Key_1, window.forward)):
        qtbot.keyClick(window, key, Qt.KeyboardModifier.ControlModifier)
        assert window.tabs.currentWidget() is panel


def test_status_bar_and_about_name_the_device_and_versions(qtbot, window):
    assert "CPU" in window.device_label.text() and window.device_label.isVisible()
    action_named(menus(window)["Help"], "About Diffusion Studio").trigger()
    box = window.findChild(QMessageBox, "aboutBox")
    assert box is not None and box.isVisible() and not box.isModal()
    text = box.text()
    for needle in (torch.__version__, PySide6.__version__, pg.__version__, "CPU"):
        assert needle in text, needle
    box.close()


def test_export_menu_reaches_the_schedule_panel(qtbot, window, tmp_path, monkeypatch):
    target = tmp_path / "curves.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    export = action_named(menus(window)["File"], "Export").menu()
    action_named(export, "Schedule Curves as CSV…").trigger()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("t,beta,") and len(lines) == 1 + window.state.schedule.T


def test_layout_tab_and_schedule_are_remembered(qtbot, settings, tmp_path):
    from diffusion_studio.gui.main_window import MainWindow

    default = QSettings("DiffusionStudio", "DiffusionStudio").fileName()
    default_before = Path(default).stat().st_mtime_ns if Path(default).exists() else None
    assert Path(settings.fileName()).parent == tmp_path

    first = MainWindow(settings, device="cpu")
    qtbot.addWidget(first)
    first.show()
    qtbot.waitExposed(first)
    first.tabs.setCurrentIndex(2)
    kind = first.schedule.findChild(QComboBox, "kind")
    kind.setCurrentIndex(kind.findData("cosine"))
    assert first.state.schedule == NoiseSchedule.create("cosine", 1000)
    first.schedule_dock.setFloating(True)
    first.close()

    settings_file = Path(settings.fileName())
    assert settings_file.exists() and "cosine" in settings_file.read_text(encoding="utf-8")
    second = MainWindow(QSettings(str(settings_file), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(second)
    second.show()
    qtbot.waitExposed(second)
    try:
        assert second.tabs.currentIndex() == 2
        assert second.state.schedule == NoiseSchedule.create("cosine", 1000)
        assert second.schedule.findChild(QComboBox, "kind").currentData() == "cosine"
        assert second.schedule_dock.isFloating()
    finally:
        second.close()
    # nothing was written to the user's own settings
    assert (Path(default).stat().st_mtime_ns if Path(default).exists() else None) == default_before


def test_changing_the_schedule_in_its_panel_moves_every_panel(qtbot, window):
    spin = window.schedule.findChild(QSpinBox, "T")
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin, "250")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert window.state.schedule == NoiseSchedule.create("linear", 250)
    slider = window.forward.findChild(QSlider, "tSlider")  # the Forward panel's t slider (the paper's t)
    assert slider is not None
    qtbot.waitUntil(lambda: slider.maximum() == 250, timeout=30_000)


def test_closing_an_idle_window_is_quick(qtbot, settings):
    from diffusion_studio.gui.main_window import MainWindow

    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    start = time.perf_counter()
    assert win.close()
    assert time.perf_counter() - start < 3.0
    assert not win.isVisible() and win.pool.running == []
    # the autouse guard then checks that no worker thread, Python thread or QTimer was left behind
