"""Generator workers: run a generator in a QThread, emit each yielded item, cancel/pause at yields, join on close.

Modelled on superqt's GeneratorWorker: the generator (training, sampling, folder loading) is the same one the CLI
loops over; the worker only moves it off the GUI thread. Quitting is a flag checked between items; ``close()``
on the generator then runs its ``finally`` blocks, which is where a training run saves its checkpoint.
"""
from __future__ import annotations

import gc
import logging
import threading
import traceback
import weakref
from typing import Any, Callable, Generator

from PySide6.QtCore import QObject, QThread, Signal

log = logging.getLogger(__name__)

_LIVE: "weakref.WeakSet[GeneratorWorker]" = weakref.WeakSet()


def one_line(exc: BaseException) -> str:
    """An exception as the one-line message the GUI shows."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    known = ("DataError", "CheckpointError", "TrainingError", "TrainingDiverged", "TrainingOutOfMemory", "ValueError")
    return text if exc.__class__.__name__ in known else f"{exc.__class__.__name__}: {text}"


class GeneratorWorker(QThread):
    """Runs ``factory()`` (which returns a generator) in its own thread.

    Signals: ``yielded(item)`` per item, ``returned(value)`` when the generator finishes, ``errored(message)``
    with a one-line message on an exception, ``aborted()`` when stopped by ``abort()``. Exactly one of
    returned/errored/aborted is emitted, then QThread's own ``finished``.
    """

    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(str)
    aborted = Signal()

    def __init__(self, factory: Callable[[], Generator[Any, None, Any]], name: str = "worker",
                 parent: QObject | None = None):
        super().__init__(parent)
        self.setObjectName(name)
        self._factory = factory
        self._abort = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self.error: BaseException | None = None
        _LIVE.add(self)

    # ---- control, from the GUI thread ------------------------------------------------------------------------
    def abort(self) -> None:
        self._abort.set()
        self._resume.set()

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    @property
    def is_paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def abort_requested(self) -> bool:
        return self._abort.is_set()

    # ---- the thread --------------------------------------------------------------------------------------------
    def run(self) -> None:  # noqa: D401 - Qt's name
        gen = None
        try:
            gen = self._factory()
            while True:
                self._resume.wait()
                if self._abort.is_set():
                    gen.close()
                    self.aborted.emit()
                    return
                try:
                    item = next(gen)
                except StopIteration as stop:
                    self.returned.emit(stop.value)
                    return
                self.yielded.emit(item)
        except BaseException as exc:  # a worker must never take the app down
            self.error = exc
            log.error("%s failed:\n%s", self.objectName(), traceback.format_exc())
            if gen is not None:
                try:
                    gen.close()
                except BaseException:
                    log.exception("closing %s's generator failed", self.objectName())
            self.errored.emit(one_line(exc))


class WorkerPool(QObject):
    """Keeps the window's workers, so closing the window can stop and join every one of them."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._workers: list[GeneratorWorker] = []

    def start(self, worker: GeneratorWorker) -> GeneratorWorker:
        # Collect garbage here, on the GUI thread: left for later, a collection that the worker's own allocations
        # trigger would destroy closed windows' Qt wrappers in the worker thread, which can deadlock against the GUI
        # thread (seen in a test run: the worker stuck in copy.deepcopy while the GUI thread waited for it).
        gc.collect()
        self._workers.append(worker)
        worker.finished.connect(self._on_finished)  # a bound slot of a GUI-thread object: queued to this thread
        worker.start()
        return worker

    def _on_finished(self) -> None:
        worker = self.sender()
        if worker in self._workers:
            self._workers.remove(worker)
        worker.deleteLater()

    @property
    def running(self) -> list[GeneratorWorker]:
        return [w for w in self._workers if w.isRunning()]

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Abort every worker and wait for each; True if all ended in time."""
        for w in list(self._workers):
            w.abort()
        ok = True
        for w in list(self._workers):
            ok = w.wait(timeout_ms) and ok
        return ok


def live_workers() -> list[GeneratorWorker]:
    """Workers whose threads still run (the test suite fails a test that leaves one behind)."""
    out = []
    for w in list(_LIVE):
        try:
            if w.isRunning():
                out.append(w)
        except RuntimeError:  # the C++ side is gone: not running
            pass
    return out
