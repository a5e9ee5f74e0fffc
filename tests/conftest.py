"""Shared test set-up: offscreen Qt, settings kept off disk, and a guard that fails tests leaving threads or timers."""
from __future__ import annotations

import gc
import os
import sys
import tempfile
import threading
import weakref

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTHONHASHSEED", "0")
# The CPU calibration cache (core/calibrate.py) of the test session, never the user's own (subprocesses inherit it).
os.environ.setdefault("DIFFUSION_STUDIO_CACHE", tempfile.mkdtemp(prefix="diffusion-studio-test-cache-"))

_started_timers: "weakref.WeakSet" = weakref.WeakSet()
_qt_patched = False


def _patch_qtimer() -> None:
    """Record every QTimer that starts, so a test that leaves one running can be named."""
    global _qt_patched
    if _qt_patched:
        return
    try:
        from PySide6 import QtCore
    except ImportError:
        return
    original = QtCore.QTimer.start

    def start(self, *args):
        try:
            _started_timers.add(self)
        except TypeError:
            pass
        return original(self, *args)

    QtCore.QTimer.start = start
    _qt_patched = True


def pytest_configure(config):
    _patch_qtimer()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models gain nothing from a second, and on a shared, oversubscribed CPU
    OpenMP's spinning can make each step 10-50x slower. Modules opt in with pytest.mark.usefixtures."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """A QSettings in a temporary .ini file, so tests never read or write the user's settings."""
    from PySide6.QtCore import QSettings

    path = tmp_path / "settings.ini"
    monkeypatch.setenv("DIFFUSION_STUDIO_SETTINGS", str(path))
    return QSettings(str(path), QSettings.Format.IniFormat)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A temporary runs folder (DIFFUSION_STUDIO_RUNS), so training tests never write into the user's."""
    d = tmp_path / "runs"
    monkeypatch.setenv("DIFFUSION_STUDIO_RUNS", str(d))
    return d


@pytest.fixture
def make_training_panel(qtbot, settings, runs):
    """Builds standalone Training panels, each with its own state and worker pool: ``make(T=50)``; shut down after."""
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.gui.panels.training.panel import TrainingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    made = []

    def make(T: int = 50):
        state = AppState(device="cpu")
        state.set_schedule(NoiseSchedule.create("linear", T))
        pool = WorkerPool()
        panel = TrainingPanel(state, pool, settings)
        qtbot.addWidget(panel)
        panel.resize(900, 650)
        panel.show()
        made.append((panel, pool))
        return panel

    yield make
    for panel, pool in made:
        panel.shutdown()
        assert pool.shutdown(timeout_ms=20_000)  # (no event processing here: pytest-qt may have queued deletions)


@pytest.fixture
def window(qtbot, settings):
    """The real main window (offscreen), closed at the end of the test the way a user closes it."""
    from diffusion_studio.gui.main_window import MainWindow

    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _active_timers() -> list:
    out = []
    for t in list(_started_timers):
        try:
            if t.isActive():
                out.append(t)
        except RuntimeError:  # deleted on the C++ side
            pass
    return out


@pytest.fixture(autouse=True)
def no_leftover_threads_or_timers(request):
    """Fail any test that leaves a worker thread, a Python thread or a QTimer running (as napari's conftest does)."""
    before = set(threading.enumerate())
    timers_before = set(id(t) for t in _active_timers())
    yield
    if "PySide6.QtCore" not in sys.modules:
        leftover = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        for t in leftover:
            t.join(timeout=5)
        alive = [t.name for t in leftover if t.is_alive()]
        assert not alive, f"test left Python threads running: {alive}"
        return
    from PySide6.QtCore import QCoreApplication

    from diffusion_studio.gui.workers import live_workers

    app = QCoreApplication.instance()
    if app is not None:
        app.processEvents()
    workers = live_workers()
    for w in workers:
        w.abort()
        w.wait(10000)
    assert not workers, f"test left worker threads running: {[w.objectName() for w in workers]}"
    timers = [t for t in _active_timers() if id(t) not in timers_before]
    names = [f"{t.objectName() or 'QTimer'} (parent {type(t.parent()).__name__})" for t in timers]
    for t in timers:
        t.stop()
    assert not timers, f"test left QTimers running: {names}"
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
                and not t.name.startswith(("Dummy", "QThread"))]
    for t in leftover:
        t.join(timeout=5)
    alive = [t.name for t in leftover if t.is_alive()]
    assert not alive, f"test left Python threads running: {alive}"
    if "qtbot" in request.fixturenames:  # the test's Qt wrappers die here, on the GUI thread, not in a later
        gc.collect()                     # test's worker thread (a collection there can deadlock against Qt)


# ---- the digits and their shipped feature network (test_features, test_fid) -------------------------------------
@pytest.fixture(scope="module")
def digits():
    import torch

    from diffusion_studio.data import load_dataset
    ds = load_dataset("builtin:digits", 16)
    return ds, ds.batch(torch.arange(len(ds)))


@pytest.fixture(scope="module")
def digits_net(digits):
    from diffusion_studio.core.metrics.features import load_feature_extractor, train_feature_net

    try:
        return load_feature_extractor("builtin:digits")
    except ValueError:  # the shipped resource is missing in this checkout: a quick one on a subset stands in
        ds, x = digits
        net, _ = train_feature_net(x[:900], ds.labels[:900], epochs=6, seed=0, input_size=16)
        return net
