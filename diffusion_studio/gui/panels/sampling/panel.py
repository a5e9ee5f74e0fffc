"""The Sampling panel: pick a trained model and a sampler, watch x_t, x̂₀ and ε frame by frame, replay, export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QCheckBox, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea,
                               QVBoxLayout, QWidget)

from ...widgets.imageview import ImagePane
from ....core.io.models import LoadedModel
from ...workers import GeneratorWorker
from ..base import Panel
from .controls import SamplerControls
from .export import ExportMixin
from ....jobs.frames import EPS_SCALE, ChosenPrecision, PromptNotes, RecordedFrame, StepTick
from ....jobs.sampling import SamplingJob, sampling_factory
from .first_look import describe_job, first_look_job
from .models import ModelChooser
from .player import PaneGrid, PlayerBar
from .lab import install as install_lab
from .latent import add_latent_tab
from .tabs import SamplingTabs
from .text import UNCONDITIONAL, install as install_text, job_for as text_job
from ....jobs import estimate as sampling_estimate

HINT = "Train a model in the Training tab or open a checkpoint (File ▸ Open Checkpoint…)"
TITLES = ("x_t", "predicted x₀", f"predicted ε ÷ {EPS_SCALE:g}")  # the panes' titles before any frame
DISPLAY_HZ = 25
SIDE_WIDTH = 240  # the side column; 260 kept the window wider than a 1024 px screen


class SamplingPanel(ExportMixin, Panel):
    title = "Sampling"
    settings_group = "sampling"

    model_loaded = Signal(object)   # the LoadedModel now in use
    frame_recorded = Signal(int)    # number of frames recorded so far
    run_finished = Signal(str)      # "done", "stopped" or "error", after the worker thread has ended

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self.frames: list[RecordedFrame] = []
        self.worker: GeneratorWorker | None = None
        self.job: SamplingJob | None = None
        self._run_T = 0
        self._live = True
        self._start_after_load = False
        self._shown_once = False
        self._outcome = ""
        self._discard = False  # the run on screen belongs to a model no longer in use: its last frames are dropped
        self._made_with = None  # the model of the frames on screen
        self._run_note = ""  # the first look's line when it ran a quick run rather than the form's
        self._refused = ""  # why the worker refused the run's prompt (bad input), if it did
        self.precision_note = ""  # the last run's network precision and why (jobs/frames.ChosenPrecision)
        self._display_timer = QTimer(self)
        self._display_timer.setObjectName("samplingDisplayTimer")
        self._display_timer.setSingleShot(True)
        self._display_timer.setInterval(1000 // DISPLAY_HZ)
        self._display_timer.timeout.connect(self._show_latest)
        self._build()
        self._restore_settings()
        self.chooser.model_selected.connect(self._on_model)
        self.chooser.load_failed.connect(self._on_load_failed)
        self.chooser.loading.connect(self._on_loading)
        if self.chooser.loaded is not None:
            self._on_model(self.chooser.loaded)
        self._update_buttons()

    # ---- layout ---------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QHBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        side = QWidget()
        col = QVBoxLayout(side)
        col.setContentsMargins(0, 0, 4, 0)
        box = QGroupBox("Model")
        QVBoxLayout(box).setContentsMargins(6, 6, 6, 6)
        self.chooser = ModelChooser(self.state, self.pool)
        box.layout().addWidget(self.chooser)
        col.addWidget(box)
        self.controls = SamplerControls()
        col.addWidget(self.controls)
        row = QHBoxLayout()
        self.sample_button = self._button("▶ Sample", "sampleButton", "Run reverse sampling from pure noise x_T to x₀ "
                                          "(Ctrl+R)", self.start, row)
        self.stop_button = self._button("■ Stop", "stopButton", "Stop sampling now; the frames recorded so far stay "
                                        "playable (Ctrl+Shift+R)", self.stop, row)
        col.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setObjectName("samplingProgress")
        self.progress.setFormat("idle")
        self.progress.setToolTip("Reverse steps done out of the total, and the speed in steps (iterations) per second")
        col.addWidget(self.progress)
        self.hint_label = QLabel(HINT)
        self.hint_label.setObjectName("hintLabel")
        self.hint_label.setWordWrap(True)
        col.addWidget(self.hint_label)
        box = QGroupBox("Export")
        ex = QVBoxLayout(box)
        ex.setContentsMargins(6, 6, 6, 6)
        row = QHBoxLayout()
        self.export_png_button = self._button("Grid PNG…", "exportPngButton",
                                              "Save the final samples (the last frame's x) as one PNG grid (Ctrl+E)",
                                              self.export_grid_dialog, row)
        self.export_gif_button = self._button("Animation GIF…", "exportGifButton",
                                              "Save the recorded frames as an animated GIF, enlarged with nearest "
                                              "neighbour so small images stay crisp (Ctrl+Shift+E)",
                                              self.export_gif_dialog, row)
        ex.addLayout(row)
        self.gif_x0_check = QCheckBox("GIF shows x_t | predicted x₀")
        self.gif_x0_check.setObjectName("gifX0Check")
        self.gif_x0_check.setToolTip("Put the predicted x̂₀ next to x_t in every GIF frame")
        ex.addWidget(self.gif_x0_check)
        col.addWidget(box)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setFixedWidth(SIDE_WIDTH)
        root.addWidget(scroll)

        right = QVBoxLayout()
        self.t_label = QLabel("t = –")
        self.t_label.setObjectName("tLabel")
        font = QFont(self.t_label.font())
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.t_label.setFont(font)
        self.t_label.setWordWrap(True)
        self.t_label.setToolTip("The paper's t of the frame shown: T is pure noise x_T, 0 is the finished sample x₀")
        right.addWidget(self.t_label)
        self.error_label = QLabel("")
        self.error_label.setObjectName("errorLabel")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #d03030;")
        self.error_label.hide()
        right.addWidget(self.error_label)
        self.x_pane = ImagePane(TITLES[0], min_size=100)
        self.x_pane.setToolTip("The current sample x_t: starts as pure noise x_T ~ N(0, I) and is denoised one reverse "
                               "step at a time, xₜ₋₁ = (1/√α_t)(x_t − β_t/√(1−ᾱ_t) ε_θ) + σ_t z")
        self.x0_pane = ImagePane(TITLES[1], min_size=100)
        self.x0_pane.setToolTip("The model's guess of the clean image, made at the t in brackets: "
                                "x̂₀ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t")
        self.eps_pane = ImagePane(TITLES[2], min_size=100)
        self.eps_pane.setToolTip(f"The noise ε_θ(x_t, t) the network predicts, divided by {EPS_SCALE:g} before display "
                                 "so ±3σ spans black to white")
        self.tabs = SamplingTabs()  # the 4th quadrant; other views add a tab with self.tabs.add_tab(widget, title)
        self.latent_view = add_latent_tab(self.tabs)
        install_text(self)  # prompt box (side column), Attention tab, guidance sweep
        install_lab(self)  # the sampler lab: Compare and Quality tabs
        self.panes = PaneGrid([self.x_pane, self.x0_pane, self.eps_pane, self.tabs])
        right.addWidget(self.panes, 1)
        self.player_bar = PlayerBar()
        self.player_bar.frame_selected.connect(self.show_frame)
        self.player_bar.user_interacted.connect(self._stop_following)
        right.addWidget(self.player_bar)
        root.addLayout(right, 1)

    def _button(self, text, name, tip, slot, layout) -> QPushButton:
        b = QPushButton(text)
        b.setObjectName(name)
        b.setToolTip(tip)
        b.clicked.connect(lambda _=False: slot())
        layout.addWidget(b)
        return b

    # ---- settings -------------------------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        self.controls.restore(self.setting)
        self.prompt_box.restore(self.setting)
        self.tabs.show_tab(self.setting("tab", "Run curves", str))  # a model's own tab comes back with the model
        self.player_bar.fps_spin.setValue(self.setting("fps", 15, int))
        self.player_bar.loop_check.setChecked(self.setting("loop", False, bool))
        self.gif_x0_check.setChecked(self.setting("gif_x0", False, bool))
        self.chooser.last_dir = self.setting("last_dir", "", str)
        self.chooser.restore_pick(self.setting("model", "", str))  # the model chosen last, loaded when first shown

    def save_settings(self) -> None:
        self.controls.save(self.set_setting)
        self.prompt_box.save(self.set_setting)
        for key, value in (("tab", self.tabs.wanted), ("fps", self.player_bar.fps_spin.value()),
                           ("loop", self.player_bar.loop_check.isChecked()),
                           ("gif_x0", self.gif_x0_check.isChecked()), ("last_dir", self.chooser.last_dir),
                           ("model", self.chooser.remembered())):
            self.set_setting(key, value)

    # ---- model ----------------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel | None:
        return self.chooser.loaded

    def _on_model(self, model: LoadedModel) -> None:
        if self._made_with is not model:
            self._reset_views()  # the other model's frames, titles, curves and maps must not stay under this one
        self.controls.set_model(model)
        self.tabs.set_model(model)  # the Latent and Attention tabs only for the models they concern
        self._idle_hint()
        self.error_label.hide()
        self._update_buttons()
        self.model_loaded.emit(model)
        if self._start_after_load:
            self._start_after_load = False
            self.start()

    def _on_load_failed(self, message: str) -> None:
        self._start_after_load = False
        self._error(message)

    def _on_loading(self, text: str) -> None:
        if text:
            self.hint_label.setText(text)
        else:
            self._idle_hint()
            if self.loaded is None:
                self._start_after_load = False
        self._update_buttons()

    def _idle_hint(self) -> None:
        if self.loaded is not None and self._run_note and self._made_with is self.loaded:
            self.hint_label.setText(self._run_note)  # the first look ran a quick run, not the form's: it says so
            return
        self.hint_label.setText(HINT if self.loaded is None else
                                "Press ▶ Sample (Ctrl+R) to watch the model turn noise into images. It samples with "
                                "its own schedule (above), not the Schedule panel's.")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            # First look at the tab: load the shipped model and, unless turned off, start animating it at once, so a
            # newcomer sees noise become digits before training anything.
            # The shipped model, unless the user picked another (a just-trained model is still noisy); DDIM, few steps.
            if self.chooser.select_first_look() and self.setting("autostart", True, bool) and not self.running:
                self._quick_next = True
                if self.loaded is not None:
                    self.start()
                else:
                    self._start_after_load = True

    def open_checkpoint(self, path: str | Path) -> GeneratorWorker | None:
        """Load a checkpoint file in the background; errors appear in the errorLabel and change nothing loaded."""
        self.error_label.hide()
        return self.chooser.open_checkpoint(path)

    def open_checkpoint_dialog(self) -> None:
        self.error_label.hide()
        self.chooser.open_dialog()

    # ---- running --------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self) -> None:
        """Sample with the chosen model and sampler (Run ▸ Sample); starts after the load if a model is loading."""
        if self.running:
            self.state.message.emit("Sampling is already running")
            return
        if self.chooser.is_loading:  # the model asked for is still loading: go when it is there
            self._start_after_load = True
            self.state.message.emit("Sampling will start when the model has loaded")
            return
        if self.loaded is None:
            if not self.chooser.select_default():
                self._error("No model to sample from. " + HINT)
                return
            if self.loaded is None:  # a built-in model is loading: go when it is there
                self._start_after_load = True
                self.state.message.emit("Sampling will start when the model has loaded")
                return
        job, note = text_job(self, self.controls.job()), ""
        if getattr(self, "_quick_next", False):  # the first look: the form's run when quick, else a quick one
            self._quick_next = False
            job, note = first_look_job(job, self.loaded.schedule.T)
        self.job = job
        text_model = self.loaded.is_text
        self.made_by = describe_job(self.loaded.name, job, text_model)  # every frame of this run is captioned with it
        self._made_with = self.loaded
        self._run_T = self.loaded.schedule.T
        self._discard = False
        self._refused = ""
        self.precision_note = ""
        self.error_label.hide()
        self.player_bar.pause()
        self.frames = []
        self.tabs.run_curves.reset()
        self.player_bar.set_count(0)
        self._live = True
        self._outcome = ""
        self.progress.setRange(0, job.steps)
        self.progress.setValue(0)
        self.progress.setFormat(f"step 0 / {job.steps}")
        self._run_note = note
        self._idle_hint()
        if text_model and job.prompt is None:
            self.attention_view.clear(UNCONDITIONAL)
        # a new message, so the last run's ("Sampling stopped at step 0 / 20") does not stand during this one
        message = f"Sampling {self.made_by}…"
        estimate = sampling_estimate.note(self.loaded, job)  # big models on a CPU: how long, before it starts
        if estimate is not None:
            message = estimate
            self.progress.setFormat(f"step 0 / {job.steps} · {estimate.split(' (')[0]}")
        self.state.message.emit(message)
        worker = GeneratorWorker(sampling_factory(self.loaded, job), name="sampling")
        worker.yielded.connect(self._on_frame)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.state.set_busy("sampling", f"Sampling {self.loaded.name}")
        self.pool.start(worker)
        self._update_buttons()

    def stop(self) -> None:
        """Stop sampling at the next step (Run ▸ Stop Sampling); what was recorded stays playable."""
        self._start_after_load = False
        if self.worker is not None:
            self.worker.abort()
            self.state.message.emit("Stopping sampling…")

    def shutdown(self) -> None:
        self.stop()
        if self.sweep_worker is not None:
            self.sweep_worker.abort()
        self.compare_view.shutdown()
        self.quality_view.shutdown()
        self.chooser.shutdown()
        self.player_bar.pause()
        self._display_timer.stop()

    def _on_frame(self, frame: RecordedFrame | StepTick | PromptNotes | ChosenPrecision) -> None:
        if self.sender() is not self.worker or self._discard:
            return
        if isinstance(frame, ChosenPrecision):  # said when the run ends, and on the progress bar meanwhile
            self.precision_note = frame.why
            self.progress.setToolTip(f"Network precision: {frame.why}")
            return
        if isinstance(frame, PromptNotes) and frame.error:  # a prompt that cannot be sampled: said, not logged
            self._refused = frame.error
            self._error(f"Cannot sample this prompt: {frame.error.split(': ', 1)[-1]}")
            return
        if isinstance(frame, PromptNotes):  # what the encoder kept of the prompt: said under the prompt box
            self.prompt_box.set_encoder_notes(self.job.prompt or "", frame.notes)
            return
        rate = frame.step / frame.elapsed_s if frame.elapsed_s > 0 else 0.0
        self.progress.setValue(frame.step)
        self.progress.setFormat(f"step {frame.step} / {frame.n_steps} · {rate:.1f} it/s")
        if frame.stats is not None:
            self.tabs.run_curves.add(frame.stats)
        if isinstance(frame, StepTick):
            return
        self.frames.append(frame)
        self.player_bar.set_count(len(self.frames))
        if self._live and not self._display_timer.isActive():
            self._display_timer.start()
        self.frame_recorded.emit(len(self.frames))

    def _show_latest(self) -> None:
        if self._live and self.frames:
            self.player_bar.show_index(len(self.frames) - 1)

    def _stop_following(self) -> None:
        self._live = False

    def _on_returned(self, _value) -> None:
        self._outcome = "done"
        if self._refused:
            self._outcome = "error"
            self.progress.setFormat("not started")
            return
        if self._discard:
            return
        last = self.frames[-1] if self.frames else None
        done = f"Sampled {self.job.n_images} images in {last.elapsed_s:.1f} s" if last else "Sampled"
        self.state.message.emit(f"{done} · {self.precision_note}" if self.precision_note else done)

    def _on_aborted(self) -> None:
        self._outcome = "stopped"
        if self._discard:  # stopped because the model changed: its progress no longer stands on screen
            return
        n = self.progress.value()
        self.state.message.emit(f"Sampling stopped at step {n} / {self.job.steps}; the recorded frames stay playable")
        self.progress.setFormat(f"stopped at step {n} / {self.job.steps}")

    def _on_errored(self, message: str) -> None:
        self._outcome = "error"
        if self._discard:
            return
        self._error(f"Sampling failed: {message}")

    def _on_finished(self) -> None:
        worker = self.sender()
        worker.wait(2000)  # `finished` fires just before the thread exits
        if worker is not self.worker:
            return
        self.worker = None
        self.state.set_busy("sampling", None)
        self._display_timer.stop()
        if self._live and not self._discard:
            self._show_latest()
        self._update_buttons()
        self.run_finished.emit(self._outcome or "stopped")

    def _update_buttons(self) -> None:
        self.sample_button.setEnabled(not self.running)
        self.stop_button.setEnabled(self.running)
        self.hint_label.setVisible(bool(self.hint_label.text()))

    # ---- display --------------------------------------------------------------------------------------------------
    def show_frame(self, index: int) -> None:
        """Show recorded frame ``index`` in the three panes and the t label."""
        if not 0 <= index < len(self.frames):
            return
        f = self.frames[index]
        grey = None if f.x0 is not None and f.eps is not None else np.full_like(f.x, 128)
        self.x_pane.show_u8(f.x)
        self.x0_pane.show_u8(f.x0 if f.x0 is not None else grey)
        self.eps_pane.show_u8(f.eps if f.eps is not None else grey)
        if f.is_final:
            self.x_pane.set_title("x₀, the sample (t = 0)")
        elif f.step == 0:
            self.x_pane.set_title(f"x_T, pure noise (t = {f.paper_t})")
        else:
            self.x_pane.set_title(f"x_t (t = {f.paper_t})")
        at = "none yet" if f.t_model is None else f"at t = {f.t_model + 1}"  # where ε_θ ran to make this x
        self.x0_pane.set_title(f"predicted x₀ ({at})")
        self.eps_pane.set_title(f"predicted ε ÷ {EPS_SCALE:g} ({at})")
        self.t_label.setText(f"t = {f.paper_t} / {self._run_T}   ·   step {f.step} / {f.n_steps}"
                             f"<br><span style='font-size:small; font-weight:normal'>{self.made_by}</span>")
        self.tabs.run_curves.set_cursor(f.paper_t if f.t_model is None else f.t_model + 1)
        self.latent_view.show_frame(f, self)  # a latent model: z_t's channels, and pane titles saying "decoded"
        self.attention_view.show_frame(f)  # a text model: per-word cross-attention maps
        self.state.set_reverse_t(f.paper_t, self._run_T)  # the Schedule dock's sampling cursor follows

    def _reset_views(self) -> None:
        """Another model: stop a run of the old one and put every view back as it is before any run, so nothing of
        the other model (its frames, "decoded z₀" titles, curves, maps, comparisons, sweep) stays on screen."""
        if self.running:
            self._discard = True
            self.stop()
        self._made_with = None
        self._run_note = ""
        self.frames = []
        self.player_bar.set_count(0)
        for pane, title in zip((self.x_pane, self.x0_pane, self.eps_pane), TITLES):
            pane.clear_image()
            pane.set_title(title)
        self.t_label.setText("t = –")
        self.state.set_reverse_t(None)  # the Schedule dock's sampling cursor belonged to the old run
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.tabs.run_curves.reset()
        self.latent_view.clear()
        self.attention_view.clear()
        self.compare_view.shutdown()  # a comparison of the old model: stopped, and its rows cleared
        self.compare_view.clear()
        self.prompt_box.clear_sweep()
        self.error_label.hide()

    @property
    def shown_index(self) -> int:
        return self.player_bar.index

    def _error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()
        self.state.message.emit(message)
