"""The Likelihood tab: the variational bound of the loaded model term by term, in bits per dimension.

The numbers come from core/diffusion/vlb.py in a GeneratorWorker (jobs/likelihood.py), one t at a time, so the curve fills
while it runs and Stop ends it at any t; σ² = β and β̃ come from the same model passes, so the toggle only redraws.
"""
from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QRadioButton, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from ....core.diffusion.vlb import max_every
from ...workers import GeneratorWorker
from ..base import Panel
from .plot import SYM, CumulativePlot, ProbeView, TermsPlot
from ....jobs.likelihood import Frame, Job, Started, explain, likelihood_factory, unsupported
from ..sampling.models import ModelChooser

EVERY_CHOICES = (1, 5, 10, 20, 50)
REDRAW_S = 0.1  # at most ten redraws a second while frames pour in; the last frame is always drawn


class LikelihoodPanel(Panel):
    """Model (and an optional second one to compare), images, quick-look or full T; the terms, their sum, a probe."""

    title = "Likelihood"
    settings_group = "likelihood"

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self.worker: GeneratorWorker | None = None
        self.frames: dict[str, Frame] = {}
        self.probes: dict[str, dict[int, object]] = {"A": {}, "B": {}}
        self.notes: dict[str, str] = {}
        self._last_draw = 0.0
        self._pending = False

        self.chooser = ModelChooser(state, pool)
        self.compare_box = QCheckBox("Compare with")
        self.compare_box.setObjectName("compareBox")
        self.compare_box.setToolTip("Overlay a second model or checkpoint (dashed), measured on the same images")
        self.chooser_b = ModelChooser(state, pool)
        self.chooser_b.setEnabled(False)
        self.compare_box.toggled.connect(self.chooser_b.setEnabled)
        self.data_edit = QLineEdit(self.setting("data", ""))
        self.data_edit.setObjectName("likelihoodData")
        self.data_edit.setPlaceholderText("the model's data (from its checkpoint)")
        self.data_edit.setToolTip("Images to score: a folder, builtin:NAME, mnist:PATH or cifar10:PATH (builtin:mnist, MNIST and CIFAR: "
                                  "their held-out test split). "
                                  "Empty: the data the checkpoint was trained on — not held out, so optimistic.")
        self.n_spin = QSpinBox()
        self.n_spin.setObjectName("likelihoodN")
        self.n_spin.setRange(2, 4096)
        self.n_spin.setValue(self.setting("n", 16, int))
        self.every_combo = QComboBox()
        self.every_combo.setObjectName("everyCombo")
        for k in EVERY_CHOICES:
            self.every_combo.addItem("all T" if k == 1 else f"1 t in {k}", k)
        self.every_combo.setCurrentIndex(max(0, self.every_combo.findData(self.setting("every", 10, int))))
        self.every_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.every_combo.setMinimumContentsLength(10)
        self.every_combo.setToolTip("All T gives the real figure. A quick look evaluates the first K t exactly and one random t in each block of "
                                    "K after them; the total is then an estimate with a wider interval")
        self.clip_box = QCheckBox("clip predicted x₀ to [−1, 1]")
        self.clip_box.setObjectName("clipBox")
        self.clip_box.setChecked(self.setting("clip", True, bool))
        self.clip_box.setToolTip("Take p_θ's mean from x̂₀ clipped to the data range (improved-diffusion's "
                                 "evaluation); off: exactly the ε form of Algorithm 2")
        self.beta_radio = QRadioButton("σ² = β")
        self.beta_tilde_radio = QRadioButton("σ² = β̃")
        self.beta_radio.setObjectName("betaRadio")
        self.beta_tilde_radio.setObjectName("betaTildeRadio")
        (self.beta_tilde_radio if self.setting("variance", "beta") == "beta_tilde" else self.beta_radio).setChecked(True)
        self.variance_group = QButtonGroup(self)
        for b in (self.beta_radio, self.beta_tilde_radio):
            self.variance_group.addButton(b)
            b.setToolTip("p_θ's variance: the two choices of Ho et al.; both come from the same model passes, so "
                         "switching only redraws")
        self.variance_group.buttonToggled.connect(lambda *_: self.redraw())
        self.run_button = QPushButton("▶ Compute")
        self.run_button.setObjectName("likelihoodRun")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("■ Stop")
        self.stop_button.setObjectName("likelihoodStop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.status = QLabel("")
        self.status.setObjectName("likelihoodStatus")
        self.status.setWordWrap(True)
        self.result = QLabel("")
        self.result.setObjectName("likelihoodResult")
        self.result.setWordWrap(True)
        self.result.setTextFormat(Qt.TextFormat.RichText)
        self.explanation = QLabel(explain(None, "beta"))
        self.explanation.setObjectName("likelihoodExplanation")
        self.explanation.setWordWrap(True)

        self.terms_plot = TermsPlot()
        self.cum_plot = CumulativePlot()
        self.cum_plot.setXLink(self.terms_plot)
        self.probe = ProbeView()
        self.terms_plot.hovered.connect(self.show_probe)
        self._layout()

    def _layout(self) -> None:
        side = QVBoxLayout()
        side.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Model")
        lay = QVBoxLayout(box)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.chooser)
        lay.addWidget(self.compare_box)
        lay.addWidget(self.chooser_b)
        side.addWidget(box)
        form_box = QGroupBox("Images and bound")
        form = QFormLayout(form_box)
        form.addRow("Images", self.data_edit)
        form.addRow("How many", self.n_spin)
        form.addRow("Timesteps", self.every_combo)
        form.addRow(self.clip_box)
        row = QHBoxLayout()
        row.addWidget(self.beta_radio)
        row.addWidget(self.beta_tilde_radio)
        form.addRow("p_θ", row)
        side.addWidget(form_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        side.addLayout(buttons)
        side.addWidget(self.status)
        side.addWidget(self.result)
        side.addStretch(1)
        left = QWidget()
        left.setLayout(side)
        left.setMaximumWidth(280)

        plots = QSplitter(Qt.Orientation.Vertical)
        plots.addWidget(self.terms_plot)
        plots.addWidget(self.cum_plot)
        plots.addWidget(self.probe)
        plots.setSizes([330, 150, 150])
        top = QHBoxLayout()
        top.addWidget(left)
        top.addWidget(plots, 1)
        outer = QVBoxLayout(self)
        outer.addLayout(top, 1)
        outer.addWidget(self.explanation)

    # ---- what the window and tests call -------------------------------------------------------------------------
    @property
    def variance(self) -> str:
        return "beta_tilde" if self.beta_tilde_radio.isChecked() else "beta"

    def set_variance(self, variance: str) -> None:
        (self.beta_tilde_radio if variance == "beta_tilde" else self.beta_radio).setChecked(True)

    @property
    def is_running(self) -> bool:
        return self.worker is not None

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.chooser.select_default()  # the shipped model, so the tab has something to measure at once

    def start(self) -> GeneratorWorker | None:
        if self.worker is not None:
            return None
        a = self.chooser.loaded
        if a is None:
            self.chooser.select_default()
            self.status.setText("Load a model first (it is loading now if a built-in one exists), then Compute.")
            return None
        b = self.chooser_b.loaded if self.compare_box.isChecked() else None
        for m in (a, b):
            why = None if m is None else unsupported(m.checkpoint.meta)
            if why is not None:
                self.status.setText(f"{m.name} {why}.")
                return None
        jobs = [self._job("A", a)]
        if b is not None:
            jobs.append(self._job("B", b))
        for key in ("A", "B"):
            self.terms_plot.remove(key)
            self.cum_plot.remove(key)
            self.probes[key] = {}
        self.frames.clear()
        self.notes.clear()
        self.probe.clear()
        self.result.setText("")
        worker = GeneratorWorker(likelihood_factory(jobs, self.state.device), name="likelihood")
        worker.yielded.connect(self._on_item)
        worker.returned.connect(lambda _v: self._ended("done"))
        worker.aborted.connect(lambda: self._ended("stopped"))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.state.set_busy("likelihood", "Measuring the bound")
        self.pool.start(worker)
        return worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.abort()

    def shutdown(self) -> None:
        self.stop()
        self.chooser.shutdown()
        self.chooser_b.shutdown()

    def save_settings(self) -> None:
        self.set_setting("data", self.data_edit.text())
        self.set_setting("n", self.n_spin.value())
        self.set_setting("every", self.every_combo.currentData())
        self.set_setting("clip", self.clip_box.isChecked())
        self.set_setting("variance", self.variance)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _job(self, key: str, model) -> Job:
        spec = self.data_edit.text().strip() or (model.checkpoint.meta.get("data") or {}).get("spec") or ""
        every = min(int(self.every_combo.currentData()), max_every(model.schedule.T))
        return Job(key, model.name, model, spec, self.n_spin.value(), every, self.clip_box.isChecked())

    def _on_item(self, item) -> None:
        if isinstance(item, Started):
            self.notes[item.key] = item.note
            self.status.setText(f"{item.name}: {item.note}; {item.total} of {item.T} t to evaluate…")
            return
        frame: Frame = item
        self.frames[frame.key] = frame
        if frame.probe is not None:
            self.probes[frame.key][frame.t] = frame.probe
        self.status.setText(f"{frame.name}: t = {frame.t}, {frame.done}/{frame.total} evaluated")
        now = time.monotonic()
        if frame.done == frame.total or now - self._last_draw >= REDRAW_S:
            self._last_draw = now
            self.redraw()

    def redraw(self) -> None:
        v = self.variance
        for frame in self.frames.values():
            self.terms_plot.show_frame(frame, v)
            self.cum_plot.show_frame(frame, v)
        self.explanation.setText(explain(self.frames.get("A"), v))
        self.result.setText(self._result_text(v))
        if self.probe.t is not None:
            self.show_probe(self.probe.t)

    def _result_text(self, v: str) -> str:
        lines = []
        for key, frame in sorted(self.frames.items()):
            s = frame.summary[v]
            if frame.done < frame.total:
                how = "so far…" if self.is_running else "when stopped: a partial sum, not the bound"
                lines.append(f"<b>{frame.name}</b>: {frame.done}/{frame.total} t {how}")
                continue
            sign = "≈" if s["estimate"] else "="
            what = "estimate; ± images and t sample" if s["estimate"] else "95% CI over images"
            colour = "#1950c8" if key == "A" else "#dc6e14"
            hw = f" ± {s['half_width']:.3f}" if math.isfinite(s["half_width"]) else ""
            # "bound = 2.660 bits/dim" (or ≈ for a quick look's estimate): the number, then its unit
            lines.append(f"<span style='color:{colour}'><b>{frame.name}</b></span>, σ² = {SYM[v]}: bound {sign} "
                         f"<b>{s['bits_per_dim']:.3f}</b> bits/dim{hw} ({what}); L_T {s['prior']:.2g}, "
                         f"L₀ {s['decoder']:.3f}<br><small>{self.notes.get(key, '')}</small>")
        return "<br>".join(lines)

    def show_probe(self, t: int) -> None:
        probes = self.probes.get("A") or {}
        if not probes:
            return
        near = min(probes, key=lambda k: abs(math.log(k) - math.log(max(1, t))))
        self.terms_plot.set_cursor(near)
        name = self.frames["A"].name if "A" in self.frames else ""
        self.probe.show_probe(near, probes[near], self.variance, name)

    def _on_error(self, message: str) -> None:
        self._ended("failed")
        self.show_error(message, "Likelihood")

    def _ended(self, how: str) -> None:
        self.redraw()
        done = {k: f"{f.done}/{f.total}" for k, f in self.frames.items()}
        if how == "stopped":
            self.status.setText(f"Stopped ({', '.join(f'{k}: {v} t' for k, v in done.items()) or 'nothing yet'}); "
                                "a stopped run's sum is partial, not the bound.")
        elif how == "done":
            self.status.setText("Done.")

    def _finished(self) -> None:
        self.worker = None
        self.result.setText(self._result_text(self.variance))  # a stopped run's line no longer says "so far…"
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.state.set_busy("likelihood", None)
