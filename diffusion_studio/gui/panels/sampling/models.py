"""The model chooser of the Sampling and Likelihood tabs: "Just trained", the shipped built-in models, the runs in
the runs folder (newest first, read from their small manifests only) and checkpoint files.

Files and built-ins load in a GeneratorWorker; a load that fails changes nothing already loaded (the combo goes back
to the model in use). Loaded models are kept, so switching back and forth does not reload.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QVBoxLayout, QWidget

from .... import resources
from ...state import AppState
from ....core.io.models import LoadedModel
from ...workers import GeneratorWorker, WorkerPool
from ....core.io.models import short_name
from ....jobs.sampling import load_factory
from ....jobs.session import checkpoint_file_problem, recent_runs
from ....jobs.training import runs_dir

TRAINED, OPEN = "trained", "open"
RUN_PREFIX = "Run: "
DEFAULT_BUILTIN = "mnist"  # the first look: real 28-px handwriting, one of each digit (issue 25)


def builtin_models() -> dict[str, Path]:
    """Shipped models present on disk: name → manifest path."""
    return {name: resources.builtin_model_path(name) for name in resources.list_builtin_models()}


class ModelChooser(QWidget):
    """A combo of models to sample from, the selected model's summary, and the loading worker.

    ``model_selected(LoadedModel)`` when a model becomes the one in use; ``load_failed(message)`` when a load fails
    (one line); ``loading(text)`` while a load runs ("" when it ends)."""

    model_selected = Signal(object)
    load_failed = Signal(str)
    loading = Signal(str)

    def __init__(self, state: AppState, pool: WorkerPool, parent: QWidget | None = None):
        super().__init__(parent)
        self.state, self.pool = state, pool
        self.loaded: LoadedModel | None = None
        self.current_key: str | None = None
        self._cache: dict[str, LoadedModel] = {}
        self._worker: GeneratorWorker | None = None
        self._pending: str | None = None
        self.last_dir = ""
        self.user_picked = False  # the user chose a model (combo or file): the first look then samples that one
        self._restored: str | None = None  # the model chosen before a restart, loaded when the tab is first shown
        self.builtins = builtin_models()

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(8)
        self.combo.setObjectName("checkpointCombo")
        self.combo.setToolTip("The trained ε_θ to sample from: the model just trained in the Training tab, a model "
                              "shipped with the app, or a checkpoint file (safetensors + JSON)")
        lay.addWidget(self.combo)
        self.summary = QLabel("No model loaded")
        self.summary.setObjectName("modelSummary")
        self.summary.setWordWrap(True)
        self.summary.setToolTip("Sampling runs with the MODEL's own noise schedule, stored in its checkpoint — the one "
                                "it was trained with — not the schedule shown in the Schedule panel")
        lay.addWidget(self.summary)
        for name in self.builtins:
            self.combo.addItem(f"Built-in: {name}", f"builtin:{name}")
        self.combo.addItem("Open file…", OPEN)
        self.run_keys: list[str] = []
        self.refresh_runs()
        self.combo.setCurrentIndex(-1)
        self.combo.activated.connect(self._on_activated)
        state.model_changed.connect(self._on_state_model)
        if state.model is not None:
            self._on_state_model(state.model)

    # ---- what the panel calls -------------------------------------------------------------------------------------
    @property
    def is_loading(self) -> bool:
        return self._pending is not None

    def select_default(self) -> bool:
        """Use the built-in digits model (or another built-in) if nothing is in use; True if one is loading/in use."""
        if self.loaded is not None or self.is_loading:
            return True
        restored, self._restored = self._restored, None
        if restored is not None:
            self.select(restored)
            if self.is_loading or self.loaded is not None:
                return True
        if self.state.model is not None:
            self._adopt(TRAINED, self.state.model)
            return True
        if not self.builtins:
            return False
        name = DEFAULT_BUILTIN if DEFAULT_BUILTIN in self.builtins else next(iter(self.builtins))
        self.select(f"builtin:{name}")
        return True

    def select_first_look(self) -> bool:
        """The model the Sampling tab first animates: the user's pick, else the shipped one (not a just-trained,
        still noisy model); True when one is loading or in use."""
        if self.user_picked or not self.builtins:
            return self.select_default()
        name = DEFAULT_BUILTIN if DEFAULT_BUILTIN in self.builtins else next(iter(self.builtins))
        if self.current_key != f"builtin:{name}" and self._pending != f"builtin:{name}":
            self.select(f"builtin:{name}")
        return True

    def remembered(self) -> str:
        """The model to choose again after a restart: a built-in or a file the user picked ("" for none, or for a
        model just trained, which is a run of the runs folder by then)."""
        key = self._restored or (self._pending or self.current_key if self.user_picked else None)
        return key if key and key.startswith(("builtin:", "file:")) else ""

    def restore_pick(self, key: str) -> None:
        """Make ``key`` (what ``remembered`` gave before the restart) the user's pick again, if it still exists; the
        Sampling tab loads it when first shown."""
        key = str(key or "")
        if key.startswith("builtin:"):
            ok = key.split(":", 1)[1] in self.builtins
        elif key.startswith("file:"):
            ok = Path(key.split(":", 1)[1]).exists()
        else:
            ok = False
        if ok:
            self._restored, self.user_picked = key, True

    def select(self, key: str) -> None:
        """Make the model named by a combo key the one in use (loading it if needed)."""
        if key == TRAINED:
            if self.state.model is not None:
                self._adopt(TRAINED, self.state.model)
        elif key in self._cache:
            self._adopt(key, self._cache[key])
        elif key.startswith("builtin:"):
            name = key.split(":", 1)[1]
            if name in self.builtins:
                self._load(key, self.builtins[name], f"builtin:{name}")
        elif key.startswith("file:"):
            path = key.split(":", 1)[1]
            self._load(key, path, short_name(path))
        self._show_current()

    def open_checkpoint(self, path: str | Path) -> GeneratorWorker | None:
        """Load a checkpoint file (manifest .json, its folder, or a .safetensors) in the background. A file that is
        no checkpoint (notes.txt) is refused at once, by its own name; None then."""
        p = Path(path).expanduser()
        self.last_dir = str(p.parent)
        self.user_picked = True
        problem = checkpoint_file_problem(p)
        if problem:
            self.state.message.emit(problem)
            self.load_failed.emit(problem)
            self._show_current()
            return None
        return self._load(f"file:{p.resolve()}", p, short_name(p))

    def refresh_runs(self, folder: str | Path | None = None) -> None:
        """List the runs of the runs folder (the Training tab's: $DIFFUSION_STUDIO_RUNS or ~/DiffusionStudio/runs),
        newest first, between the built-ins and the opened files; reads only their manifests (a few KB each)."""
        for key in self.run_keys:
            i = self.combo.findData(key)
            if i >= 0 and key not in self._cache and key != self.current_key and key != self._pending:
                self.combo.removeItem(i)
        self.run_keys = []
        at = len(self.builtins) + (self.combo.findData(TRAINED) >= 0)
        trained = getattr(getattr(self.state.model, "checkpoint", None), "path", None)
        trained = f"file:{Path(trained).resolve()}" if trained else None
        for run in recent_runs(runs_dir() if folder is None else folder):
            key = f"file:{run.path.resolve()}"
            if key == trained and key not in self._cache and key != self.current_key:
                continue  # listed once, as "Just trained"
            self.run_keys.append(key)
            i = self.combo.findData(key)
            if i >= 0:
                self.combo.setItemText(i, RUN_PREFIX + run.label)
                continue
            self.combo.insertItem(at, RUN_PREFIX + run.label, key)
            self.combo.setItemData(at, str(run.path), 3)  # 3 = Qt.ToolTipRole
            at += 1
        self._show_current()

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open checkpoint", self.last_dir,
                                              "Checkpoints or diffusers model_index.json (*.json *.safetensors);;"
                                              "All files (*)")
        if path:
            self.open_checkpoint(path)

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.abort()

    # ---- internals ------------------------------------------------------------------------------------------------
    def _on_activated(self, index: int) -> None:
        key = self.combo.itemData(index)
        self.user_picked = self.user_picked or key != OPEN
        if key == OPEN:
            self._show_current()
            self.open_dialog()
        elif key is not None and key != self.current_key:
            self.select(key)

    def _show_current(self) -> None:
        """Point the combo at the model in use (or at the one loading)."""
        key = self._pending or self.current_key
        i = self.combo.findData(key) if key else -1
        self.combo.blockSignals(True)
        self.combo.setCurrentIndex(i)
        self.combo.blockSignals(False)

    def _on_state_model(self, model: LoadedModel | None) -> None:
        i = self.combo.findData(TRAINED)
        if model is None:
            if i >= 0:
                self.combo.removeItem(i)
            if self.current_key == TRAINED:
                self.loaded, self.current_key = None, None
                self.summary.setText("No model loaded")
                self.select_default()
            self._show_current()
            return
        text = f"Just trained: {model.name}"
        if i < 0:
            self.combo.insertItem(0, text, TRAINED)
        else:
            self.combo.setItemText(i, text)
        self.refresh_runs()  # the run just saved is in the runs folder now
        self._adopt(TRAINED, model)

    def _adopt(self, key: str, model: LoadedModel) -> None:
        self.loaded, self.current_key = model, key
        if key != TRAINED:
            self._cache[key] = model
            if self.combo.findData(key) < 0:
                self.combo.insertItem(self.combo.findData(OPEN), f"File: {model.name}", key)
        self.summary.setText(model.summary())
        self._show_current()
        self.model_selected.emit(model)

    def _load(self, key: str, path, name: str) -> GeneratorWorker:
        if self._worker is not None:
            self._worker.abort()  # its result, if it still arrives, is ignored: only the newest request counts
        self._pending = key
        worker = GeneratorWorker(load_factory(path, name, self.state.device), name="sampling-load")
        worker.key = key
        self._worker = worker
        # Bound slots of this GUI-thread widget, so the worker's signals are queued to the GUI thread.
        worker.returned.connect(self._loaded)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._load_finished)
        self.loading.emit(f"Loading {name}…")
        self.state.set_busy("sampling-load", f"Loading {name}")
        self.pool.start(worker)
        self._show_current()
        return worker

    def _loaded(self, model: LoadedModel) -> None:
        worker = self.sender()
        if worker is not self._worker:
            return
        self._pending = None
        self.state.message.emit(f"Loaded {model.name}")
        self._adopt(worker.key, model)

    def _failed(self, message: str) -> None:
        if self.sender() is not self._worker:
            return
        self._pending = None
        self._show_current()
        self.state.message.emit(message)
        self.load_failed.emit(message)

    def _load_finished(self) -> None:
        worker = self.sender()
        worker.wait(2000)  # `finished` fires just before the thread exits
        if worker is self._worker:
            self._worker = None
            if self._pending is not None:  # aborted before it loaded anything
                self._pending = None
                self._show_current()
            self.state.set_busy("sampling-load", None)
            self.loading.emit("")
