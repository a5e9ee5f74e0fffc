"""The Images panel, driven like a user: open files and folders (good and broken), drop them, pick built-ins."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from diffusion_studio.jobs import images as images_loading
from diffusion_studio.gui.panels.images.panel import ImagesPanel
from diffusion_studio.gui.state import AppState
from diffusion_studio.gui.workers import WorkerPool


@pytest.fixture
def panel(qtbot, settings):
    state = AppState(device="cpu")
    pool = WorkerPool()
    p = ImagesPanel(state, pool, settings)
    qtbot.addWidget(p)
    p.resize(320, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert pool.shutdown(10000)


def rgb(path, w=80, h=64, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def wait_loaded(panel, qtbot, timeout=30_000):
    qtbot.waitUntil(lambda: not panel.loading, timeout=timeout)
    qtbot.waitUntil(lambda: not panel.pool.running, timeout=timeout)


def click_item(qtbot, panel, row):
    view = panel.thumbnails
    item = view.item(row)
    view.scrollToItem(item)
    rect = view.visualItemRect(item)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def problem_lines(panel):
    return [panel.problems.item(i).text() for i in range(panel.problems.count())]


def test_starts_with_a_sample_photo(panel):
    assert panel.thumbnails.count() >= 4
    assert panel.state.image is not None
    assert panel.state.image.name == panel.thumbnails.item(0).text()
    assert panel.state.image.x0.shape == (3, 256, 256) and panel.working_size == 256
    assert panel.state.image.display.dtype == np.uint8 and panel.state.image.display.shape == (256, 256, 3)


def test_good_and_broken_files(panel, qtbot, tmp_path):
    panel.size_combo.setCurrentIndex(panel.size_combo.findData(64))
    good = [rgb(tmp_path / f"good{i}.png", seed=i) for i in range(3)]
    (tmp_path / "notes.png").write_text("this is a text file with a .png name\n")
    data = (tmp_path / "good0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    paths = [str(p) for p in good] + [str(tmp_path / "notes.png"), str(tmp_path / "cut.png")]
    panel.add_paths(paths)
    wait_loaded(panel, qtbot)
    assert panel.thumbnails.count() == 3
    assert [panel.thumbnails.item(i).text() for i in range(3)] == ["good0.png", "good1.png", "good2.png"]
    lines = problem_lines(panel)
    assert len(lines) == 2 and panel.problems.isVisibleTo(panel)
    notes = next(line for line in lines if line.startswith("notes.png: "))
    cut = next(line for line in lines if line.startswith("cut.png: "))
    assert "not an image" in notes
    assert "truncated" in cut or "corrupt" in cut
    assert "3 images" in panel.status_label.text() and "2 could not be read" in panel.status_label.text()
    assert not panel.use_button.isEnabled()          # loose files are no training set (open their folder)

    # Selecting a thumbnail makes x_0 the centre-cropped square of that file (80×64 → columns 8..71).
    click_item(qtbot, panel, 2)
    img = panel.state.image
    assert img.name == "good2.png" and img.source == str(good[2])
    pixels = np.asarray(Image.open(good[2]).convert("RGB"))[:, 8:72]
    assert np.array_equal(img.display, pixels)
    want = pixels.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(img.x0.permute(1, 2, 0).numpy(), want, atol=1e-6)

    panel.size_combo.setCurrentIndex(panel.size_combo.findData(128))   # the working size follows at once
    assert panel.state.image.x0.shape == (3, 128, 128) and panel.state.image.name == "good2.png"

    # A file that vanished since its thumbnail was made: a problem line, x_0 stays, no crash.
    good[1].unlink()
    before = panel.state.image
    click_item(qtbot, panel, 1)
    assert panel.state.image is before
    assert problem_lines(panel)[-1] == "good1.png: file not found"
    assert panel.error_label.isVisibleTo(panel)

    panel.load_builtin_sample("rings")              # and the panel still works
    assert panel.state.image.name == "rings"


def test_folder_loads_in_a_worker_with_progress(panel, qtbot, tmp_path):
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for i in range(300):
        Image.new("RGB", (8, 8), (i % 256, 40, 200)).save(folder / ("sub" if i % 3 == 0 else "") / f"p{i:03d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "readme.txt").write_text("not an image, skipped")
    batches, ticks = [], []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(panel.loading))
    timer.start()
    try:
        with qtbot.waitSignal(panel.load_finished, timeout=60_000) as finished:
            panel.add_paths([str(folder)])
            assert panel.loading and panel.progress_row.isVisibleTo(panel)
            panel._worker.yielded.connect(lambda b: batches.append(b.done))
    finally:
        timer.stop()
    wait_loaded(panel, qtbot)
    assert finished.args[0].loaded == 300 and finished.args[0].failed == 1
    assert panel.thumbnails.count() == 300
    lines = problem_lines(panel)
    assert len(lines) == 1 and lines[0].startswith("broken.png: truncated or corrupt image data")
    assert panel.progress.maximum() == 301 and panel.progress.value() == 301
    assert panel.progress.text() == "loaded 301 / 301"
    assert batches and batches == sorted(batches)
    assert any(ticks), "the GUI thread's timer never ran while the folder loaded"
    assert not panel.progress_row.isVisibleTo(panel)
    assert panel.settings.value("images/last_folder") == str(folder)
    qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
    assert panel.state.dataset_spec == str(folder)
    assert str(folder) in panel.dataset_label.text()


def test_folder_load_can_be_cancelled(panel, qtbot, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(500):
        Image.new("L", (4, 4), i % 256).save(folder / f"{i:03d}.png")
    gate, reached = threading.Event(), threading.Event()
    seen = []
    real = images_loading.to_array

    def gated(img, size, channels):       # holds the worker at the 100th file until the test has pressed Cancel
        seen.append(1)
        if len(seen) == 100:
            reached.set()
            gate.wait(20)
        return real(img, size, channels)

    monkeypatch.setattr(images_loading, "to_array", gated)
    panel.add_paths([str(folder)])
    try:
        qtbot.waitUntil(reached.is_set, timeout=30_000)
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        assert not panel.cancel_button.isEnabled()
    finally:
        gate.set()
    wait_loaded(panel, qtbot)
    assert 0 < panel.thumbnails.count() < 500
    assert panel.progress.maximum() == 500
    assert "cancelled" in panel.status_label.text()
    assert panel.cancel_button.isEnabled()


def drag(target, md: QMimeData) -> tuple[bool, bool]:
    """A drag entering a widget then dropping, as the window system delivers it; (enter, drop) accepted."""
    pos = QPoint(20, 20)
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, md, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        return False, False
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, md, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    return True, drop.isAccepted()


def urls(*paths) -> QMimeData:
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return md


def test_drag_and_drop(panel, qtbot, tmp_path):
    files = [rgb(tmp_path / f"d{i}.png", seed=i) for i in range(2)]
    assert drag(panel, urls(*files)) == (True, True)
    wait_loaded(panel, qtbot)
    assert [panel.thumbnails.item(i).text() for i in range(panel.thumbnails.count())] == ["d0.png", "d1.png"]
    assert panel.state.image.name == "d0.png"       # the first image of what was dropped becomes x_0

    folder = tmp_path / "dropped"
    folder.mkdir()
    for i in range(3):
        rgb(folder / f"f{i}.png", seed=10 + i)
    assert drag(panel.thumbnails.viewport(), urls(folder)) == (True, True)   # dropped onto the thumbnails
    wait_loaded(panel, qtbot)
    assert panel.thumbnails.count() == 3 and panel.state.image.name == "f0.png"
    qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
    assert panel.state.dataset_spec == str(folder)

    text_only = QMimeData()
    text_only.setText("hello")
    assert drag(panel, text_only) == (False, False)
    assert panel.thumbnails.count() == 3


@pytest.mark.parametrize("name, channels", [("digits", 1), ("shapes", 3)])
def test_builtin_datasets(panel, qtbot, name, channels):
    combo = panel.builtin_combo
    combo.setCurrentIndex(combo.findData(name))
    combo.activated.emit(combo.findData(name))          # what choosing it with the mouse emits
    wait_loaded(panel, qtbot)
    assert panel.thumbnails.count() == 64
    click_item(qtbot, panel, 5)
    img = panel.state.image
    assert img.source == f"builtin:{name}#5"
    assert img.x0.shape == (channels, 256, 256) and img.display.shape == (256, 256, channels)
    assert float(img.x0.min()) >= -1 and float(img.x0.max()) <= 1
    qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
    assert panel.state.dataset_spec == f"builtin:{name}"


def test_sample_photos_and_training_choice(panel, qtbot):
    panel.load_builtin("photos")
    names = [panel.thumbnails.item(i).text() for i in range(panel.thumbnails.count())]
    assert {"landscape", "gradient", "checkerboard", "rings"} <= set(names)
    panel.load_builtin_sample("checkerboard")
    assert panel.state.image.name == "checkerboard" and panel.thumbnails.currentItem().text() == "checkerboard"
    panel.load_builtin_sample("no such photo")
    assert panel.state.image.name == "checkerboard" and "no such photo" in panel.error_label.text()
    qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
    assert panel.state.dataset_spec == "builtin:photos"


def test_working_size_is_remembered(qtbot, settings):
    state, pool = AppState(device="cpu"), WorkerPool()
    first = ImagesPanel(state, pool, settings)
    qtbot.addWidget(first)
    first.size_combo.setCurrentIndex(first.size_combo.findData(128))
    first.save_settings()
    assert state.image.x0.shape == (3, 128, 128)
    again = ImagesPanel(AppState(device="cpu"), pool, settings)
    qtbot.addWidget(again)
    assert again.working_size == 128 and again.state.image.x0.shape == (3, 128, 128)
