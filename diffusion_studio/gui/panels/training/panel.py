"""The Training panel: choose data, model and hyper-parameters; train in a worker thread; watch loss, per-t loss,
progress and previews live; pause, stop, save and continue runs (a checkpoint is kept however a run ends)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSplitter,
                               QVBoxLayout)

from ....core.train.recipe import RECIPE
from .length import objective_choice
from ....core.train.trainer import TrainEvent
from ....core.train.config import TrainConfig
from ....core.io.models import LoadedModel
from ...workers import GeneratorWorker
from ..base import Panel
from .form import TrainingForm
from .multi import chosen_nproc, multi_gpu_run
from .plots import TrainingView
from .extras import TrainingExtras
from ....jobs.session import RunNote, StepPreview, new_named_run_dir, run_label
from ....jobs.training import (
    MANIFEST, FIDPoint, RunHandle, RunOutcome, RunRequest, RunStarted, check_request, fid_extractor_for, load_job,
    runs_dir, save_job, training_run,
)
from .space import attach_space_row
from .labels import attach_labels_row
from .text import attach_caption_row


class TrainingPanel(Panel):
    title = "Training"
    settings_group = "training"

    event_received = Signal(object)     # every TrainEvent, on the GUI thread (the plots redraw from a timer)
    run_started = Signal(object)        # RunStarted (data loaded, trainer built)
    run_finished = Signal(object)       # RunOutcome
    checkpoint_saved = Signal(str)      # a save asked for with save_checkpoint(path) is on disk
    checkpoint_loaded = Signal(object)  # load_checkpoint(path) read a run that Start now continues

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self.worker: GeneratorWorker | None = None
        self.handle: RunHandle | None = None        # the current run, or the last one (for Save while finished)
        self.resume_checkpoint = None               # a Checkpoint that Start continues
        self._fresh_form: dict | None = None        # the form's own choices while a checkpoint fills it
        self.last_checkpoint: Path | None = None
        self.last_event: TrainEvent | None = None
        self._run_error: str | None = None           # the worker's errored message for the current run
        self._stopping = False
        self._dirty = False
        self._pending_preview: TrainEvent | None = None
        self._out_auto = True
        self._save_workers: list[GeneratorWorker] = []
        self._loader: GeneratorWorker | None = None
        self.fid_samples = 256  # generated images per FID point (more than the feature net's 128 dimensions)

        self.form = TrainingForm()
        attach_space_row(self.form)  # "Space: pixels / latent (autoencoder)" (space.py)
        attach_caption_row(self.form)  # "Condition on captions" (text.py)
        attach_labels_row(self.form)  # "Condition on class labels" (labels.py)
        self.view = TrainingView()
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("startButton")
        self.start_button.setToolTip("Train ε_θ with Algorithm 1 in a background thread (continues a loaded checkpoint)")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("pauseButton")
        self.pause_button.setToolTip("Hold training after the current step; click again to resume")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setToolTip("End the run after the current step and save its checkpoint")
        self.save_button = QPushButton("Save…")
        self.save_button.setObjectName("saveButton")
        self.save_button.setToolTip("Save the run's weights, EMA and optimizer state (any time: while running it "
                                    "waits for the current step to finish)")
        self.load_button = QPushButton("Continue…")
        self.load_button.setObjectName("loadButton")
        self.load_button.setToolTip("Load a training checkpoint; Start then continues it at the same step")
        self.error_label = QLabel()
        self.error_label.setObjectName("errorLabel")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b; font-weight: bold;")
        self.error_label.hide()
        self.info_label = QLabel("Choose the data and the model, then Start.")
        self.info_label.setObjectName("infoLabel")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self.save_checkpoint_dialog)
        self.load_button.clicked.connect(self.load_checkpoint_dialog)
        self.form.resume_clear.clicked.connect(self.clear_resume)
        self.form.out_edit.textEdited.connect(lambda _t: setattr(self, "_out_auto", False))
        self.form.spec_changed.connect(lambda _s: self.clear_error())
        self.state.schedule_changed.connect(self._show_schedule)
        self.state.dataset_changed.connect(self.form.set_state_spec)
        self.form.set_state_spec(self.state.dataset_spec)
        self._show_schedule()

        self._timer = QTimer(self)
        self._timer.setObjectName("trainingRedrawTimer")
        self._timer.setInterval(100)  # ~10 Hz: steps can arrive much faster than that
        self._timer.timeout.connect(self._refresh)

        box = QGroupBox("Run")
        box_lay = QVBoxLayout(box)
        box_lay.addWidget(self.form)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        buttons2 = QHBoxLayout()
        buttons2.addWidget(self.save_button)
        buttons2.addWidget(self.load_button)
        for b in (self.start_button, self.pause_button, self.stop_button, self.save_button, self.load_button):
            b.setMinimumWidth(56)  # the style's 80 px minimum would make the form column wider than its fields
        box_lay.addLayout(buttons)
        box_lay.addLayout(buttons2)
        box_lay.addWidget(self.error_label)
        box_lay.addWidget(self.info_label)
        box_lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(box)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(box.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(scroll)
        self.splitter.addWidget(self.view)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self.splitter.setSizes([scroll.minimumWidth(), 10_000])  # the plots get every pixel the form does not need
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.splitter)
        self.extras = TrainingExtras(self, box_lay)
        self._restore_settings()
        self._update_buttons()

    # ---- state -------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def paused(self) -> bool:
        return self.worker is not None and self.worker.is_paused

    def _show_schedule(self, *_args) -> None:
        self.form.show_schedule(self.state.schedule, self.resume_checkpoint)
        # Before a run draws its bars, "Loss by t" spans the t of the schedule Start will use (the Schedule dock's,
        # or a continued run's own), not the one the tab was opened with.
        bars = getattr(getattr(self, "view", None), "bucket_plot", None)
        if bars is not None and not self.running and not bars.heights.any():
            ckpt = self.resume_checkpoint
            bars.reset(ckpt.schedule.T if ckpt is not None else self.state.schedule.T, TrainConfig().buckets)

    def _update_buttons(self) -> None:
        running = self.running
        self.start_button.setEnabled(not running and self._loader is None)  # Pause (→ Resume) toggles a paused run
        self.pause_button.setEnabled(running and not self._stopping)
        self.pause_button.setText("Resume" if self.paused else "Pause")
        self.stop_button.setEnabled(running and not self._stopping)
        has_trainer = self.handle is not None and self.handle.trainer is not None
        self.save_button.setEnabled(has_trainer)
        self.load_button.setEnabled(not running and self._loader is None)
        self.form.setEnabled(not running)

    def set_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()
        self.state.message.emit(f"Training: {message}")
        self.extras.status_line = f"Training: {message}"

    def clear_error(self) -> None:
        self.error_label.clear()
        self.error_label.hide()
        if getattr(self, "extras", None) is not None:
            self.extras.clear_status_line()

    # ---- settings ------------------------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        self.form.restore(self.setting)

    def save_settings(self) -> None:
        # While a checkpoint fills the form, the user's own choices (what a fresh run starts from) are remembered.
        values = self.form.settings_values() if self._fresh_form is None else self._fresh_form
        for key, value in values.items():
            if key in ("spec", "space", "text"):
                continue
            self.set_setting(key, value)

    # ---- building a run ------------------------------------------------------------------------------------------
    def build_request(self) -> RunRequest:
        """The run the form describes; raises ValueError (one line naming the field) when a value is wrong."""
        f = self.form
        text = f.lr_edit.text().strip()
        try:
            lr = float(text)
        except ValueError:
            raise ValueError(f"Learning rate (lr): {text!r} is not a number (write e.g. 2e-4)") from None
        spec = f.spec()
        fid_every = f.fid_spin.value() if f.fid_check.isChecked() and f.fid_check.isEnabled() else 0
        steps, minutes = f.length.steps_and_minutes()
        prediction, weighting = objective_choice(f.objective_combo)
        config = TrainConfig(steps=steps, minutes=minutes, warmup_steps=RECIPE["warmup"],
                             lr_schedule=RECIPE["lr_schedule"], loss_weighting=weighting, snr_gamma=RECIPE["snr_gamma"],
                             batch_size=f.batch_spin.value() or self.extras.default_batch, lr=lr,
                             ema_decay=f.ema_spin.value(), device=f.device_combo.currentData(),
                             precision=f.precision_combo.currentData(), preview_every=f.preview_spin.value(),
                             checkpoint_every=f.save_every_spin.value(), text=f.caption_row.check.isChecked(),
                             class_conditional=f.labels_row.check.isChecked())
        req = RunRequest(dataset_spec=spec or "", image_size=f.size_spin.value(), preset=f.preset_combo.currentData(),
                         schedule=self.state.schedule, config=config, out=Path("."),
                         resume=self.resume_checkpoint, model_device=self.state.device,
                         fid_every=fid_every, fid_extractor=fid_extractor_for(spec) if fid_every else None,
                         fid_samples=self.fid_samples, auto_batch=f.batch_spin.value() == 0, prediction=prediction)
        req.autoencoder = f.space_row.autoencoder()
        if req.resume is not None:  # a continued run keeps what it was made with, whatever the form shows
            req.autoencoder = None  # (its own autoencoder, embedded in the checkpoint)
            req.prediction = req.resume.model_config.prediction
            config.text = bool(req.resume.meta.get("train", {}).get("text") or req.resume.model_config.text_encoder)
            config.class_conditional = bool(req.resume.model_config.num_classes)
        check_request(req)
        return req

    def _output_for(self, req: RunRequest, handle: RunHandle) -> Path:
        text = self.form.out_edit.text().strip()
        if req.resume is not None and text and Path(text) == req.resume.path.parent:
            return req.resume.path
        if text and not self._out_auto:
            folder = Path(text).expanduser()
            if req.resume is None and (folder / MANIFEST).exists():
                raise ValueError(f"Checkpoints: {folder} already holds a run's {MANIFEST}; choose another folder, "
                                 f"or clear the field for a new run folder")
            return folder / MANIFEST
        try:
            folder = new_named_run_dir(runs_dir(self.setting("runs_dir", "", str)),
                                       run_label(req.dataset_spec, req.preset, req.image_size,
                                                 latent=req.autoencoder is not None, text=req.config.text))
        except OSError as e:
            raise ValueError(f"checkpoint folder: cannot create a run folder ({e.strerror or e})") from None
        handle.created_dir = folder
        self.form.out_edit.setText(str(folder))
        self._out_auto = True
        return folder / MANIFEST

    # ---- Start / Pause / Stop --------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a run (or continue a loaded checkpoint); when paused, resume. False when nothing started."""
        if self.running:
            if self.paused:
                self.pause()
                return True
            self.state.message.emit("Training is already running")
            return False
        if self._loader is not None:
            self.state.message.emit("Training: wait until the checkpoint has loaded")
            return False
        self.clear_error()
        handle = RunHandle()
        try:
            req = self.build_request()
            req.out = self._output_for(req, handle)
        except ValueError as e:
            self.set_error(str(e))
            return False
        self.handle, self._stopping, self.last_event, self._run_error = handle, False, None, None
        self._pending_preview = None
        schedule = req.resume.schedule if req.resume is not None else req.schedule
        start_step = req.resume.step if req.resume is not None else 0
        self.view.reset(schedule.T, req.config.buckets, req.config.steps, start_step, fid=req.fid_every > 0)
        self.extras.run_starting(req)
        nproc = chosen_nproc(self.form.multi_gpu_check)  # "Use all N GPUs": the CLI's launch, rank 0's events
        worker = GeneratorWorker(lambda: multi_gpu_run(req, handle, nproc) if nproc > 1 else training_run(req, handle),
                                 "training")
        worker.yielded.connect(self._on_item)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.pool.start(worker)
        self._timer.start()
        self.info_label.setText(f"Loading {req.dataset_spec} …")
        self.state.set_busy("training", "training: loading data")
        self._update_buttons()
        return True

    def pause(self) -> None:
        """Toggle: hold the run after its current step, or let it go on."""
        if not self.running or self._stopping:
            return
        if self.worker.is_paused:
            self.worker.resume()
            self._timer.start()
        else:
            self.worker.pause()
            self._timer.stop()
            self._dirty = True
            self._refresh()
            ev = self.last_event
            self.state.set_busy("training", f"training paused at step {ev.step}" if ev else "training paused")
        self._update_buttons()

    def stop(self) -> None:
        """End the run after the current step; the worker's generator saves the checkpoint on its way out."""
        if not self.running or self._stopping:
            return
        self._stopping = True
        self.handle.cancel.set()
        self.worker.abort()
        self.info_label.setText("Stopping: finishing the current step and saving the checkpoint …")
        self.state.set_busy("training", "training: stopping")
        self._update_buttons()

    def shutdown(self) -> None:
        """The window is closing: stop the run (its checkpoint is saved as the worker ends; the window joins it)."""
        if self.running:
            self.handle.closing = True
            self._stopping = True
            self.handle.cancel.set()
            self.worker.abort()
        self._timer.stop()

    # ---- what the worker sends -------------------------------------------------------------------------------------
    def _on_item(self, item) -> None:
        if isinstance(item, TrainEvent):
            self.last_event = item
            self.view.add_event(item)
            if item.preview is not None:
                self._pending_preview = item
            if item.checkpoint is not None:
                self.last_checkpoint = Path(item.checkpoint)
            self._dirty = True
            if self.paused:
                self._refresh()  # the step that was under way when Pause came; the timer is off while paused
            self.event_received.emit(item)
        elif isinstance(item, RunStarted):
            self.info_label.setText(self.extras.run_summary(item))
            self._update_buttons()  # the trainer exists now: Save… works
            self.run_started.emit(item)
        elif isinstance(item, FIDPoint):
            self.view.fid_plot.add(item)
        elif isinstance(item, (RunNote, StepPreview)):
            self.extras.on_item(item)

    def _on_error(self, message: str) -> None:
        self._run_error = message

    def _refresh(self) -> None:
        if self._pending_preview is not None:
            ev, self._pending_preview = self._pending_preview, None
            self.view.show_preview(ev.preview, ev.step)
        if not self._dirty or self.last_event is None:
            return
        self._dirty = False
        ev = self.last_event
        self.view.show_event(ev, paused=self.paused)
        if self.running and not self.paused and not self._stopping:
            total = f"/{ev.total_steps}" if ev.total_steps else ""
            self.state.set_busy("training", f"training step {ev.step}{total}")
        elif self.paused and not self._stopping:  # the step under way when Pause came: header and status agree
            self.state.set_busy("training", f"training paused at step {ev.step}")

    def _on_finished(self) -> None:
        handle, error = self.handle, self._run_error
        self._timer.stop()
        self._dirty = True
        self._refresh()
        self.worker = None
        self.state.set_busy("training", None)
        ev = self.last_event
        if error is not None:
            reason = "stopped" if self._stopping and "cancel" in error.lower() else "error"
        else:
            reason = "stopped" if self._stopping or (ev is not None and not ev.done) else "finished"
        self._stopping = False
        path = handle.saved_path if handle is not None else None
        step = handle.saved_step if handle is not None and handle.saved_step is not None else (ev.step if ev else None)
        if reason == "error":
            note = handle.save_note if handle is not None else None
            self.set_error(error + (f" — {note}" if note else ""))
        if handle is not None and self.resume_checkpoint is not None and handle.trainer is not None:
            self.clear_resume()  # continued: Start next begins a fresh run (the Continue button reloads this one)
        if path is not None:
            self.last_checkpoint = path
            ended = {"error": "ended by an error", "stopped": "stopped", "finished": "finished"}[reason]
            self.info_label.setText(f"Run {ended} at step {step:,}; checkpoint saved to {path}")
            self.state.message.emit(f"Training {reason} at step {step}; checkpoint saved to {path}")
        elif handle is not None and handle.save_note and reason != "error":
            self.info_label.setText(f"Run {reason}: {handle.save_note}")
        if handle is not None and handle.model is not None and handle.checkpoint is not None:
            name = f"{path.parent.name} · step {handle.checkpoint.step}"
            self.state.set_model(LoadedModel(name=name, checkpoint=handle.checkpoint, model=handle.model,
                                             device=self.state.device))
        self.extras.run_finished(reason, handle, step, path)
        self._update_buttons()
        self.run_finished.emit(RunOutcome(reason, step, path, error or ""))

    # ---- checkpoints -------------------------------------------------------------------------------------------------
    def save_checkpoint_dialog(self) -> None:
        if self.handle is None or self.handle.trainer is None:
            self.set_error("Save checkpoint: there is no training run to save yet; start one first")
            return
        start = str((self.handle.saved_path or Path.home() / MANIFEST).with_name("saved.json"))
        path, _ = QFileDialog.getSaveFileName(self, "Save training checkpoint", start,
                                              "Checkpoint manifest (*.json)")
        if path:
            self.save_checkpoint(path)

    def save_checkpoint(self, path: str | Path) -> bool:
        """Save the current (or last) run's trainer to ``path`` in a worker: while running, between two steps.

        Works while running, paused or after the run; ``checkpoint_saved(path)`` says when it is on disk.
        """
        handle = self.handle
        if handle is None or handle.trainer is None:
            self.set_error("Save checkpoint: there is no training run to save yet; start one first")
            return False
        worker = GeneratorWorker(lambda: save_job(handle, path), "training-save")
        worker.yielded.connect(self._on_saved)
        worker.errored.connect(self._on_save_error)
        worker.finished.connect(self._on_save_finished)
        self._save_workers.append(worker)
        self.pool.start(worker)
        return True

    def _on_saved(self, path) -> None:
        self.info_label.setText(f"Checkpoint saved to {path}")
        self.state.message.emit(f"Checkpoint saved to {path}")
        self.checkpoint_saved.emit(str(path))

    def _on_save_error(self, message: str) -> None:
        self.set_error(f"Save checkpoint: {message}")

    def _on_save_finished(self) -> None:
        self._save_workers = [w for w in self._save_workers if w is not self.sender()]

    def load_checkpoint_dialog(self) -> None:
        start = str(self.last_checkpoint or runs_dir(self.setting("runs_dir", "", str)))
        path, _ = QFileDialog.getOpenFileName(self, "Continue a training run", start,
                                              "Checkpoints (*.json *.safetensors)")
        if path:
            self.load_checkpoint(path)

    def load_checkpoint(self, path: str | Path) -> bool:
        """Load a training checkpoint (in a worker) so that Start continues it: same step, weights, EMA, optimizer
        state and random streams. ``checkpoint_loaded(Checkpoint)`` says when Start will continue it."""
        if self.running or self._loader is not None:
            self.set_error("Continue: stop the current run first" if self.running else
                           "Continue: a checkpoint is still loading")
            return False
        self.clear_error()
        worker = GeneratorWorker(lambda: load_job(path), "training-load")
        worker.yielded.connect(self._on_loaded)
        worker.errored.connect(self._on_load_error)
        worker.finished.connect(self._update_buttons)
        self._loader = worker
        self.info_label.setText(f"Loading {path} …")
        self.pool.start(worker)
        self._update_buttons()
        return True

    def _on_load_error(self, message: str) -> None:
        self._loader = None
        self.set_error(f"Continue: {message}")
        self._update_buttons()

    def _on_loaded(self, ckpt) -> None:
        self._loader = None  # (its thread ends right after this item)
        if self._fresh_form is None:
            self._fresh_form = self.form.snapshot()  # put back when the continued run is done with
        self.resume_checkpoint = ckpt
        self.form.apply_checkpoint(ckpt)
        self._out_auto = False
        self.form.show_resume(ckpt, ckpt.path.parent.name)
        self._show_schedule()
        self.info_label.setText(f"Loaded {ckpt.path} at step {ckpt.step:,}; Start continues it")
        self.extras.checkpoint_loaded(ckpt)
        self._update_buttons()
        self.checkpoint_loaded.emit(ckpt)

    def clear_resume(self) -> None:
        """Forget the loaded checkpoint: the form goes back to the choices it held before (a fresh run's)."""
        self.resume_checkpoint = None
        self.form.show_resume(None)
        fresh, self._fresh_form = self._fresh_form, None
        if fresh is not None:
            self.form.apply_snapshot(fresh)
        self.form.out_edit.clear()
        self._out_auto = True
        self._show_schedule()
