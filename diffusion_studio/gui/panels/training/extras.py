"""The Training panel's newcomer-facing behaviour: an automatic batch, a clean panel after a failed start, a preview
at step 0 (a text run's captions named), the loss plot naming the run's objective, a run summary that says latent
and captions, the loss history restored on Continue, the offer to continue an interrupted run, the form's wheel
leaving its values alone while the form scrolls, and the question before closing the window mid-training."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import (QAbstractSpinBox, QComboBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QPushButton, QVBoxLayout)

from ....core.train.recipe import RECIPE, recipe_for
from ....core.train.config import TrainConfig
from ....core.train.runlog import METRICS, read_loss_history
from ....jobs.session import RunNote, StepPreview, interrupted_record, interrupted_run
from ....jobs.training import MANIFEST, RunStarted
from .length import objective_choice
from .wheel import guard_wheel

INTERRUPTED = "interrupted"


class TrainingExtras(QObject):
    """Attached to a TrainingPanel (``panel.extras``); the panel calls the hooks below at its seams."""

    def __init__(self, panel, box_layout):
        super().__init__(panel)
        self.panel = panel
        self.form = panel.form
        self.status_line: str | None = None
        self.restored: tuple[Path, object, object] | None = None   # (manifest, steps, losses) of a loaded run
        self.close_box: QMessageBox | None = None
        self.close_confirmed = False
        form, view = panel.form, panel.view

        # Batch: 0 is "auto": the default batch, cut to the dataset's size when that is smaller.
        form.batch_spin.setMinimum(0)
        form.batch_spin.setValue(0)
        self._show_auto_batch()
        form.size_spin.valueChanged.connect(self._show_auto_batch)  # the recipe's batch depends on the image side
        # Before any run, "Loss by t" already shows its t axis (pyqtgraph's 0..1 default crowded its tick labels).
        view.bucket_plot.reset(panel.state.schedule.T, TrainConfig().buckets)
        # A loss of 0.06 reads as 0.06, not as "60" on an axis labelled "loss (x0.001)".
        view.loss_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        # Fixing a field clears the error it caused, in the panel and in the status bar.
        for w in form.findChildren(QAbstractSpinBox):
            w.editingFinished.connect(panel.clear_error)
            if hasattr(w, "valueChanged"):
                w.valueChanged.connect(lambda *_a: panel.clear_error())
        for w in form.findChildren(QLineEdit):
            w.textEdited.connect(lambda *_a: panel.clear_error())
        for w in form.findChildren(QComboBox):
            w.currentIndexChanged.connect(lambda *_a: panel.clear_error())

        self.offer = QFrame()
        self.offer.setObjectName("interruptedOffer")
        self.offer.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(self.offer)
        lay.setContentsMargins(6, 6, 6, 6)
        self.offer_label = QLabel()
        self.offer_label.setObjectName("interruptedLabel")
        self.offer_label.setWordWrap(True)
        row = QHBoxLayout()
        self.offer_continue = QPushButton("Continue it")
        self.offer_continue.setObjectName("continueInterruptedButton")
        self.offer_dismiss = QPushButton("Dismiss")
        self.offer_dismiss.setObjectName("dismissInterruptedButton")
        row.addWidget(self.offer_continue)
        row.addWidget(self.offer_dismiss)
        lay.addWidget(self.offer_label)
        lay.addLayout(row)
        box_layout.insertWidget(0, self.offer)
        self.offer.hide()
        self.offer_continue.clicked.connect(self.continue_interrupted)
        self.offer_dismiss.clicked.connect(self.dismiss_interrupted)
        panel.run_started.connect(self._on_started)
        # Wrapped labels in the form and the run box got one line's height (the scroll area lays its widget out by
        # size hint, not height-for-width): "Start continues …" and the schedule were cut off, even at 1600 px.
        self._wrapped = [form.schedule_label, form.resume_label, panel.info_label, panel.error_label, self.offer_label]
        for label in self._wrapped:
            label.installEventFilter(self)
        self._offered: Path | None = None
        self.offer_interrupted()
        # The loss plot names the objective the form (or the continued checkpoint) trains with.
        form.objective_combo.currentIndexChanged.connect(lambda _i: self._show_objective())
        self._show_objective()
        # The wheel scrolls the form; it changes a spin box or combo only once the user has clicked into it.
        self.wheel_guard = guard_wheel(box_layout.parentWidget())

    @property
    def default_batch(self) -> int:
        """The recipe's batch for the form's image size (core/train/recipe.py: larger for tiny images)."""
        return recipe_for(self.form.size_spin.value())["batch"]

    def _show_auto_batch(self, _side: int = 0) -> None:
        b = self.default_batch
        self.form.batch_spin.setSpecialValueText(f"auto ({b})")
        self.form.batch_spin.setToolTip("Images per optimisation step; each gets its own random t and noise ε. "
                                        f"auto: {b} at this image size, or the whole dataset when it has fewer images")
    def eventFilter(self, obj, event) -> bool:
        if obj in self._wrapped and event.type() in (QEvent.Type.Resize, QEvent.Type.Show):
            need = obj.heightForWidth(max(1, obj.width())) if obj.text() else 0
            if need > 0 and obj.minimumHeight() != need:
                obj.setMinimumHeight(need)
        return False

    # ---- status line ------------------------------------------------------------------------------------------------
    def clear_status_line(self) -> None:
        """Take the panel's own error off the status bar once it no longer holds (other messages stay)."""
        line, self.status_line = self.status_line, None
        window = self.panel.window()
        bar = window.statusBar() if hasattr(window, "statusBar") else None
        if line and bar is not None and bar.currentMessage() == line:
            bar.clearMessage()

    # ---- a run --------------------------------------------------------------------------------------------------
    def _show_objective(self, prediction: str | None = None, weighting: str | None = None,
                        gamma: float | None = None) -> None:
        if prediction is None:
            prediction, weighting = objective_choice(self.form.objective_combo)
        self.panel.view.set_objective(prediction, weighting, RECIPE["snr_gamma"] if gamma is None else gamma)

    def run_summary(self, item: RunStarted) -> str:
        """'Training a 1.20M-parameter latent UNet on shapes (…) …': what runs, in which space, on what captions."""
        self._show_objective(item.prediction, item.loss_weighting, item.snr_gamma)
        self.panel.view.set_preview_captions(item.preview_captions)
        what = "Continuing" if item.resumed else "Training"
        latent = item.space != "pixels"
        space = f"; diffusion on {item.space}" if latent else ""
        text = ", conditioned on captions," if item.text else ""
        return (f"{what} a {item.parameters / 1e6:.2f}M-parameter {'latent ' if latent else ''}UNet on "
                f"{item.dataset} ({item.n_images:,} images, {item.image_size}×{item.image_size}×{item.channels}"
                f"{space}){text} on {item.device} in {item.precision}; checkpoints go to {item.out}")

    def run_starting(self, req) -> None:
        view = self.panel.view
        view.preview.clear_image()
        view.preview.set_title("Preview")
        view.set_preview_captions([])
        self._show_objective(req.prediction, req.config.loss_weighting, req.config.snr_gamma)
        self.note = None
        if req.resume is not None and self.restored is not None and self.restored[0] == Path(req.resume.path):
            self._show_history()

    def _show_history(self) -> None:
        _path, steps, losses = self.restored
        view = self.panel.view
        for step, loss in zip(steps.tolist(), losses.tolist()):
            view.history.append(step, loss)
        view.loss_plot.show_history(view.history)

    def on_item(self, item) -> None:
        if isinstance(item, StepPreview):
            self.panel.view.show_preview(item.images, item.step)
        elif isinstance(item, RunNote):
            self.panel.state.message.emit(f"Training: {item.text}")
            self.note = item.text

    def _on_started(self, item: RunStarted) -> None:
        note = getattr(self, "note", None)
        if note:
            self.panel.info_label.setText(f"{note}\n{self.panel.info_label.text()}")
        total = self.panel.handle.trainer.config.steps if self.panel.handle and self.panel.handle.trainer else None
        # Recorded while it runs: if the app dies, the next start offers to continue from the last checkpoint.
        self.panel.set_setting(INTERRUPTED, interrupted_record(Path(item.out), item.start_step, total))

    def run_finished(self, reason: str, handle, step, path) -> None:
        view = self.panel.view
        if handle is not None and handle.trainer is None:
            # Refused before training began (data, batch, memory): nothing of this attempt or the last run stays.
            view.reset(self.panel.state.schedule.T, TrainConfig().buckets, None)
            view.progress.setRange(0, 1)
            view.progress.setFormat("not started")
            view.preview.clear_image()
            view.preview.set_title("Preview")
            self.panel.info_label.setText("Not started: fix what the message above says, then Start.")
            if handle.created_dir is not None and not handle.created_dir.exists() and self.panel._out_auto:
                self.panel.form.out_edit.clear()  # the run folder made for it was removed again
            self.note = None
        else:
            ev = self.panel.last_event
            if ev is not None:
                rate = f"{ev.images_per_s:,.0f} img/s" if ev.images_per_s else "— img/s"
                total = f" / {ev.total_steps:,}" if ev.total_steps else ""
                view.progress.setFormat(f"step {ev.step:,}{total} · {rate} · {reason}")  # no ETA once it ended
            note = getattr(self, "note", None)
            if note and note not in self.panel.info_label.text():
                self.panel.info_label.setText(f"{note}\n{self.panel.info_label.text()}")
        closing = handle is not None and handle.closing
        if not closing:
            self.panel.settings.remove(f"{self.panel.settings_group}/{INTERRUPTED}")
        elif path is not None:
            total = handle.trainer.config.steps if handle.trainer is not None else None
            self.panel.set_setting(INTERRUPTED, interrupted_record(Path(path), step or 0, total))
            self.panel.settings.sync()

    # ---- Continue ---------------------------------------------------------------------------------------------------
    def checkpoint_loaded(self, ckpt) -> None:
        """Show the loaded run's loss history (its metrics.jsonl) at once; Start keeps it and draws on."""
        steps, losses = read_loss_history(Path(ckpt.path).parent / METRICS, ckpt.step)
        self.restored = (Path(ckpt.path), steps, losses)
        view = self.panel.view
        view.reset(ckpt.schedule.T, TrainConfig().buckets, self.panel.form.steps_spin.value(), ckpt.step)
        view.progress.setFormat(f"loaded at step {ckpt.step:,}")  # short: the bar is narrow beside a wide form
        history = (f"its loss history ({len(steps):,} logged steps) is drawn" if len(steps) else
                   f"it has no loss history ({METRICS} not found)")
        self.panel.info_label.setText(f"{self.panel.info_label.text()}; {history}")
        if len(steps):
            self._show_history()

    # ---- an interrupted run -----------------------------------------------------------------------------------------
    def offer_interrupted(self) -> bool:
        found = interrupted_run(self.panel.setting(INTERRUPTED, "", str))
        if found is None:
            self.panel.settings.remove(f"{self.panel.settings_group}/{INTERRUPTED}")
            return False
        path, step, total = found
        self._offered = path
        of = f" of {total:,}" if total else ""
        self.offer_label.setText(f"<b>A run was interrupted</b> at step {step:,}{of} ({path.parent.name}). "
                                 f"Continue it from its checkpoint?")
        self.offer.show()
        self.panel.state.message.emit(f"Training: a run was interrupted at step {step:,}; the Training tab offers "
                                      f"to continue it")
        return True

    def continue_interrupted(self) -> None:
        path, self._offered = self._offered, None
        self.offer.hide()
        if path is None:
            return
        manifest = path if path.name.endswith(".json") else path / MANIFEST

        def go(_ckpt) -> None:
            self.panel.checkpoint_loaded.disconnect(go)
            self.panel.start()

        self.panel.checkpoint_loaded.connect(go)
        if not self.panel.load_checkpoint(manifest):
            self.panel.checkpoint_loaded.disconnect(go)

    def dismiss_interrupted(self) -> None:
        self._offered = None
        self.offer.hide()
        self.panel.settings.remove(f"{self.panel.settings_group}/{INTERRUPTED}")

    # ---- closing the window -----------------------------------------------------------------------------------------
    def may_close(self, window) -> bool:
        """True when the window may close now; while training runs, ask first (without blocking) and say no."""
        if not self.panel.running or self.close_confirmed:
            return True
        if self.close_box is not None and self.close_box.isVisible():
            return False
        ev = self.panel.last_event
        at = f" (step {ev.step:,})" if ev is not None else ""
        box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                          f"Training is running{at}. Save its checkpoint and quit, or keep training?",
                          QMessageBox.StandardButton.NoButton, window)
        box.setObjectName("closeDuringTrainingBox")
        self.save_quit_button = box.addButton("Save and quit", QMessageBox.ButtonRole.AcceptRole)
        self.keep_button = box.addButton("Keep training", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(self.keep_button)
        box.setModal(False)

        def answered(button) -> None:
            if button is self.save_quit_button:
                self.close_confirmed = True
                window.close()

        box.buttonClicked.connect(answered)
        box.show()
        self.close_box = box
        return False
