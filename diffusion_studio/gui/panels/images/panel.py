"""The Images panel: open files, folders or built-in data; thumbnails; the selected image becomes x_0."""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QLabel, QListView,
                               QListWidget, QListWidgetItem, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from ....data import BUILTIN_DATASETS, IMAGE_EXTENSIONS, DataError, from_uint8
from ...widgets.dialogs import last_folder, remember
from ...widgets.imageview import pixmap_from_u8
from ...state import SelectedImage
from ...workers import GeneratorWorker
from ..base import Panel
from .labels import BUILTIN_PLACEHOLDER, opened_text, training_text
from ....jobs.images import THUMB, Entry, LoadBatch, crop_note, load_builtin_preview, load_paths, sample_photo_entries

SIZES = (64, 128, 256, 512)
DEFAULT_SIZE = 256
_BUILTIN_ITEMS = (("photos", "Sample photos"), ("digits", "Digits (8×8, scikit-learn)"),
                  ("mnist", "MNIST (28×28)"), ("shapes", "Shapes"))


class ImagesPanel(Panel):
    """Thumbnails of what was opened last; clicking one sets ``state.image`` (x_0) at the working size."""

    title = "Images"
    settings_group = "images"
    load_finished = Signal(object)   # LoadResult, or None when the load failed or was cancelled
    training_data_chosen = Signal(str)  # "Use as training data": the Training tab selects this spec

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self._entries: list[Entry] = []
        self._worker: GeneratorWorker | None = None
        self._collection_spec: str | None = None     # what "Use as training data" hands to the Training panel
        self._collection_name = ""
        self._training_choice: str | None = None      # the Training tab's own Data choice, when the window tells
        self._loaded = self._failed = 0
        self._status_before_drag = ""
        self._build_ui()
        self.setAcceptDrops(True)
        size = self.setting("size", DEFAULT_SIZE, int)
        self.size_combo.setCurrentIndex(SIZES.index(size) if size in SIZES else SIZES.index(DEFAULT_SIZE))
        self.size_combo.currentIndexChanged.connect(self._on_size_changed)
        self.state.dataset_changed.connect(self._show_dataset)
        self._show_dataset(self.state.dataset_spec)
        # Start with something to look at: a sample photo is x_0 until the user opens their own images.
        self.load_builtin_sample()

    # ---- layout ---------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        row = QHBoxLayout()
        self.open_files_button = QPushButton("Open Images…")
        self.open_files_button.setObjectName("openFilesButton")
        self.open_files_button.setToolTip("Open one or more image files; each becomes a thumbnail you can pick as x₀.")
        self.open_files_button.clicked.connect(self.open_files_dialog)
        self.open_folder_button = QPushButton("Open Folder…")
        self.open_folder_button.setObjectName("openFolderButton")
        self.open_folder_button.setToolTip("Load every image under a folder (in the background; you can cancel). "
                                           "The folder can then be used as training data.")
        self.open_folder_button.clicked.connect(self.open_folder_dialog)
        row.addWidget(self.open_files_button)
        row.addWidget(self.open_folder_button)
        lay.addLayout(row)

        row = QHBoxLayout()
        self.builtin_combo = QComboBox()
        self.builtin_combo.setObjectName("builtinCombo")
        self.builtin_combo.addItem(BUILTIN_PLACEHOLDER, None)
        for key, text in _BUILTIN_ITEMS:
            self.builtin_combo.addItem(text, key)
            self.builtin_combo.setItemData(self.builtin_combo.count() - 1, BUILTIN_DATASETS.get(key, ""),
                                           Qt.ItemDataRole.ToolTipRole)
        self.builtin_combo.setToolTip("Images that ship with the app: sample photos, or the first images of a "
                                      "small built-in dataset you can train on without downloading anything.")
        self.builtin_combo.activated.connect(self._on_builtin_activated)
        # its width follows the dock, not its longest item, so the dock can be narrow on a small screen
        self.builtin_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.builtin_combo.setMinimumContentsLength(10)
        self.size_combo = QComboBox()
        self.size_combo.setObjectName("sizeCombo")
        for s in SIZES:
            self.size_combo.addItem(f"{s} px", s)
        self.size_combo.setToolTip("Working resolution of x₀: the image is centre-cropped to a square and resized "
                                   "to this size before noise is added.")
        row.addWidget(self.builtin_combo, 1)
        self.size_combo.setAccessibleName("Size")  # its items say "… px"; a "Size:" label cut the combo beside it
        row.addWidget(self.size_combo)
        lay.addLayout(row)

        self.thumbnails = QListWidget()
        self.thumbnails.setObjectName("thumbnails")
        self.thumbnails.setViewMode(QListView.ViewMode.IconMode)
        self.thumbnails.setIconSize(QSize(THUMB, THUMB))
        self.thumbnails.setGridSize(QSize(THUMB + 18, THUMB + 26))
        self.thumbnails.setMovement(QListView.Movement.Static)
        self.thumbnails.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbnails.setUniformItemSizes(True)
        self.thumbnails.setLayoutMode(QListView.LayoutMode.Batched)   # thousands of items lay out in slices
        self.thumbnails.setBatchSize(200)
        self.thumbnails.setDragDropMode(QAbstractItemView.DragDropMode.NoDragDrop)  # drops go to the panel
        self.thumbnails.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.thumbnails.setToolTip("Click a thumbnail to make it x₀, the clean image the forward process noises. "
                                   "Drop image files or folders here to open them.")
        self.thumbnails.currentItemChanged.connect(self._on_current_changed)
        lay.addWidget(self.thumbnails, 3)
        self.crop_label = QLabel("")
        self.crop_label.setObjectName("cropLabel")
        self.crop_label.setWordWrap(True)
        self.crop_label.setToolTip("x₀ is square: a non-square image is cut to its centre square, then resized.")
        lay.addWidget(self.crop_label)

        self.progress_row = QWidget()
        prow = QHBoxLayout(self.progress_row)
        prow.setContentsMargins(0, 0, 0, 0)
        self.progress = QProgressBar()
        self.progress.setObjectName("progressBar")
        self.progress.setFormat("loaded %v / %m")
        self.progress.setToolTip("Images are read in the background; thumbnails appear as they load.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip("Stop loading; the images loaded so far stay.")
        self.cancel_button.clicked.connect(self.cancel_loading)
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel_button)
        self.progress_row.hide()
        lay.addWidget(self.progress_row)

        self.status_label = QLabel("")
        self.status_label.setObjectName("statusLabel")
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)
        self.error_label = QLabel("")
        self.error_label.setObjectName("errorLabel")
        self.error_label.setStyleSheet("color: #c0392b;")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        lay.addWidget(self.error_label)

        self.use_button = QPushButton("Use as training data")
        self.use_button.setObjectName("useTrainingButton")
        self.use_button.setToolTip("Train the noise-prediction network on these images (the folder or built-in "
                                   "dataset you opened), as in Algorithm 1 of Ho et al.")
        self.use_button.clicked.connect(self.use_as_training_data)
        lay.addWidget(self.use_button)
        self.dataset_label = QLabel("")
        self.dataset_label.setObjectName("datasetLabel")
        self.dataset_label.setWordWrap(True)
        self.dataset_label.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.dataset_label)

        self.problems_label = QLabel("Problems")
        self.problems_label.setStyleSheet("font-weight: bold;")
        self.problems = QListWidget()
        self.problems.setObjectName("problems")
        self.problems.setToolTip("Files that could not be read, with the reason. The rest loaded normally.")
        self.problems.setMaximumHeight(110)
        self.problems.setWordWrap(True)
        self.problems.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay.addWidget(self.problems_label)
        lay.addWidget(self.problems, 1)
        self.problems_label.hide()
        self.problems.hide()

    # ---- opening --------------------------------------------------------------------------------------------------
    @property
    def working_size(self) -> int:
        return int(self.size_combo.currentData())

    def open_files_dialog(self) -> None:
        pattern = " ".join(f"*{e}" for e in IMAGE_EXTENSIONS)
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", last_folder(self.settings),
                                                f"Images ({pattern});;All files (*)")
        if files:
            remember(self.settings, files[0])
            self.add_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", last_folder(self.settings))
        if folder:
            remember(self.settings, str(Path(folder).parent))
            self.add_paths([folder])

    def add_paths(self, paths: list[str]) -> None:
        """Open files and/or folders (what the dialogs and drag-and-drop call): loads them in the background."""
        paths = [os.fspath(p) for p in paths if p]
        if not paths:
            return
        folders = [p for p in paths if Path(p).is_dir()]
        if len(paths) == 1 and folders:
            spec, name = folders[0], Path(folders[0]).name or folders[0]
            self.set_setting("last_folder", folders[0])
        elif len(paths) == 1:
            spec, name = paths[0], Path(paths[0]).name
        else:
            spec, name = None, f"{len(paths)} items"
        self._start(lambda cancel: load_paths(paths, cancel), name, spec)

    def load_builtin(self, name: str) -> None:
        """Show a built-in collection: "photos" (instant), or the first images of "digits", "mnist" or "shapes"."""
        self.builtin_combo.setCurrentIndex(max(0, self.builtin_combo.findData(name)))
        if name == "photos":
            self._cancel_worker()
            self._reset("sample photos", "builtin:photos")
            self._add_thumbs(sample_photo_entries())
            self._finish_status(None)
            return
        if name not in BUILTIN_DATASETS:
            self._set_error(f"unknown built-in dataset {name!r}")
            return
        self._start(lambda _cancel: load_builtin_preview(name), f"builtin:{name}", f"builtin:{name}")

    def load_builtin_sample(self, name: str | None = None) -> None:
        """Show the sample photos and select one (the first when name is None) as x_0."""
        if self._collection_spec != "builtin:photos" or not self._entries:
            self.load_builtin("photos")
        row = 0
        if name is not None:
            names = [e.name for e in self._entries]
            if name not in names:
                self._set_error(f"no built-in sample photo called {name!r} (there are: {', '.join(names)})")
                return
            row = names.index(name)
        self.thumbnails.setCurrentRow(row)

    # ---- the background load --------------------------------------------------------------------------------------
    def _start(self, make_generator, name: str, spec: str | None) -> None:
        """Run ``make_generator(cancel)`` in a worker; ``cancel()`` turns true when the user cancels."""
        self._cancel_worker()
        self._reset(name, spec)
        # The factory runs in the worker thread, after ``worker`` below exists.
        worker = GeneratorWorker(lambda: make_generator(lambda: worker.abort_requested), name=f"images: {name}")
        self._worker = worker
        worker.yielded.connect(self._on_batch)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_worker_finished)
        self.progress.setRange(0, 0)  # busy until the first batch tells the total
        self.progress_row.show()
        self.status_label.setText(f"Loading {name}…")
        self.state.set_busy(f"images{id(self)}", f"loading {name}")
        self.pool.start(worker)

    def _cancel_worker(self) -> None:
        if self._worker is not None:
            self._worker.abort()
            self._worker = None
            self.progress_row.hide()
            self.state.set_busy(f"images{id(self)}", None)

    def cancel_loading(self) -> None:
        """Stop the load in progress; what loaded so far stays."""
        if self._worker is not None:
            self._worker.abort()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling…")

    @property
    def loading(self) -> bool:
        return self._worker is not None

    def _current(self) -> bool:
        return self.sender() is self._worker and self._worker is not None

    def _on_batch(self, batch: LoadBatch) -> None:
        if not self._current():
            return
        if batch.total:
            self.progress.setRange(0, batch.total)
            self.progress.setValue(batch.done)
        self._add_thumbs(batch.thumbs)
        for err in batch.errors:
            self._add_problem(err)
        self.status_label.setText(f"Loading {self._collection_name}: {self._loaded} loaded"
                                  + (f", {self._failed} failed" if self._failed else "")
                                  + (f" — {batch.current}" if batch.current else ""))

    def _on_returned(self, result) -> None:
        if self._current():
            self._finish_status(result)

    def _on_errored(self, message: str) -> None:
        if self._current():
            self._set_error(message)
            self._finish_status(None)

    def _on_aborted(self) -> None:
        if self._current():
            self._finish_status(None, cancelled=True)

    def _on_worker_finished(self) -> None:
        if self.sender() is self._worker:
            self._worker = None
            self.progress_row.hide()
            self.cancel_button.setEnabled(True)
            self.state.set_busy(f"images{id(self)}", None)

    def _finish_status(self, result, cancelled: bool = False) -> None:
        cancelled = cancelled or bool(getattr(result, "cancelled", False))
        text = f"{self._collection_name}: {self._loaded} image{'' if self._loaded == 1 else 's'}"
        if self._failed:
            text += f", {self._failed} could not be read (see Problems)"
        if cancelled:
            text += " — cancelled"
        self.status_label.setText(text)
        self._update_use_button()
        spec = self._collection_spec
        if self._loaded == 0 and not cancelled and spec and not spec.startswith("builtin:") and Path(spec).is_dir():
            # Say why the list is empty (as the CLI does), and do not offer a folder with no images for training.
            n = self._failed
            self._set_error(f"{self._collection_name}: no loadable images ({n} file{'' if n == 1 else 's'} failed; "
                            f"see Problems)" if n else
                            f"{self._collection_name}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
            self.use_button.setEnabled(False)
        self.load_finished.emit(None if cancelled else result)

    # ---- list contents --------------------------------------------------------------------------------------------
    def _reset(self, name: str, spec: str | None) -> None:
        self.thumbnails.blockSignals(True)
        self.thumbnails.clear()
        self.thumbnails.blockSignals(False)
        self._entries.clear()
        self.problems.clear()
        self.problems.hide()
        self.problems_label.hide()
        self.error_label.hide()
        self._collection_name, self._collection_spec = name, spec
        self._loaded = self._failed = 0
        if not (spec or "").startswith("builtin:"):
            # the combo names what is open ("Folder: cats"), not "Built-in…" as if nothing were
            self.builtin_combo.setItemText(0, opened_text(name, spec))
            self.builtin_combo.setItemData(0, spec or name, Qt.ItemDataRole.ToolTipRole)
            self.builtin_combo.setCurrentIndex(0)
        else:
            self.builtin_combo.setItemText(0, BUILTIN_PLACEHOLDER)
            self.builtin_combo.setItemData(0, None, Qt.ItemDataRole.ToolTipRole)
        self._update_use_button()
        self._show_dataset(self.state.dataset_spec)

    def _add_thumbs(self, thumbs) -> None:
        if not thumbs:
            return
        self.thumbnails.setUpdatesEnabled(False)  # one repaint per batch, not per item
        try:
            # Rows and entries grow and clear together, so a row number is an index into self._entries.
            # Few Qt calls per item: each one may wait for the GIL while the loading thread runs Python.
            for entry, arr in thumbs:
                item = QListWidgetItem(QIcon(pixmap_from_u8(arr)), entry.name)
                item.setToolTip(entry.source)
                self._entries.append(entry)
                self.thumbnails.addItem(item)
        finally:
            self.thumbnails.setUpdatesEnabled(True)
        self._loaded += len(thumbs)
        if self.thumbnails.currentRow() < 0:
            self.thumbnails.setCurrentRow(0)  # the first image of what was opened becomes x_0 at once

    def _add_problem(self, err: DataError) -> None:
        item = QListWidgetItem(str(err))
        item.setToolTip(f"{err.path}\n{err}" if getattr(err, "path", None) else str(err))
        self.problems.addItem(item)
        self.problems.show()
        self.problems_label.show()
        self._failed += 1
        self.problems_label.setText(f"Problems ({self.problems.count()})")

    def _set_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()
        self.state.message.emit(f"Images: {message}")

    # ---- selection → x_0 ------------------------------------------------------------------------------------------
    def _on_current_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is not None:
            self._select_entry(self._entries[self.thumbnails.row(current)])

    def _select_entry(self, entry: Entry) -> None:
        size = self.working_size
        try:
            display = entry.load(size)
        except DataError as exc:  # e.g. the file changed or vanished since its thumbnail was made
            self._add_problem(exc)
            self._set_error(str(exc))
            return
        image = SelectedImage(name=entry.name, x0=from_uint8(display), display=display, source=entry.source)
        self.crop_label.setText(crop_note(entry.name, entry.source_size, size))
        self.crop_label.setVisible(bool(self.crop_label.text()))
        self.error_label.hide()
        self.state.set_image(image)

    def _on_size_changed(self, _index: int) -> None:
        self.set_setting("size", self.working_size)
        row = self.thumbnails.currentRow()
        if row >= 0:
            self._select_entry(self._entries[row])

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries)

    # ---- training data --------------------------------------------------------------------------------------------
    def _update_use_button(self) -> None:
        ok = self._collection_spec is not None
        self.use_button.setEnabled(ok)
        self.use_button.setToolTip(
            f"Train on {self._collection_spec}" if ok else
            "Several loose files cannot be a training set: open their folder (or a built-in dataset) instead.")

    def use_as_training_data(self) -> None:
        """Hand what was opened (a folder, one file or builtin:NAME) to training via ``state.set_dataset``."""
        if self._collection_spec is None:
            self._set_error("open a folder or a built-in dataset to train on")
            return
        self.state.set_dataset(self._collection_spec)
        self.training_data_chosen.emit(self._collection_spec)
        self.state.message.emit(f"Training data: {self._collection_spec} (selected in the Training tab)")

    def _show_dataset(self, spec) -> None:
        """Say what the Training tab will train on (its own choice is named once the window calls
        ``set_training_choice``)."""
        self.dataset_label.setText(training_text(self._training_choice, spec, self._collection_spec))
        self.dataset_label.setToolTip(self._training_choice or spec or "")

    def set_training_choice(self, spec: str | None) -> None:
        """The dataset the Training tab has chosen itself (its Data row), so this dock can name it."""
        self._training_choice = spec or None
        self._show_dataset(self.state.dataset_spec)

    def _on_builtin_activated(self, index: int) -> None:
        key = self.builtin_combo.itemData(index)
        if key:
            self.load_builtin(key)

    # ---- drag and drop --------------------------------------------------------------------------------------------
    @staticmethod
    def _local_paths(event) -> list[str]:
        md = event.mimeData()
        if md is None or not md.hasUrls():
            return []
        return [u.toLocalFile() for u in md.urls() if u.isLocalFile()]

    def set_drop_highlight(self, on: bool) -> None:
        """Files dragged over the panel: the list shows where they will go."""
        self.thumbnails.setProperty("dropTarget", on)
        self.thumbnails.setStyleSheet("QListWidget { border: 2px dashed palette(highlight); "
                                      "background: palette(alternate-base); }" if on else "")
        self.status_label.setText("Drop to open these files" if on else self._status_before_drag)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._local_paths(event):
            event.acceptProposedAction()
            if not self.thumbnails.property("dropTarget"):
                self._status_before_drag = self.status_label.text()
                self.set_drop_highlight(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:
        if self.thumbnails.property("dropTarget"):
            self.set_drop_highlight(False)
        super().dragLeaveEvent(event)

    def dragMoveEvent(self, event) -> None:
        if self._local_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        if self.thumbnails.property("dropTarget"):
            self.set_drop_highlight(False)
        paths = self._local_paths(event)
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)
        else:
            event.ignore()

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def save_settings(self) -> None:
        self.set_setting("size", self.working_size)

    def shutdown(self) -> None:
        self._cancel_worker()
