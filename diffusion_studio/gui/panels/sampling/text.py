"""Prompts in the Sampling tab: the prompt box (history, the model's own captions; Enter samples), guidance slider,
negative prompt, the guidance sweep strip (same seed at w = 0, 1, 3, 7, labelled with its prompt), and the
"Attention" tab (attention.py) with per-word cross-attention maps."""
from __future__ import annotations

import dataclasses
import html

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QSlider, QVBoxLayout)

from ....core.nets.text import unseen_words
from ....jobs.sampling import SWEEP_WS, SamplingJob, sweep_factory
from ...workers import GeneratorWorker
from .attention import AttentionView, crop, pixmap  # noqa: F401 - crop: the tests cut tiles as the view does

DEFAULT_W = 3.0
HISTORY = 20


EMPTY_NOTE = ("Empty prompt: ▶ Sample draws unconditionally (the null condition ∅, the model's w = 0). Type what to "
              "draw, e.g. “a red star”, and press Enter")
UNCONDITIONAL = "An empty prompt samples unconditionally (the null condition ∅): no words, so no attention maps."


def is_text_model(loaded) -> bool:
    return loaded is not None and loaded.is_text


def quoted(prompt: str, most: int = 40) -> str:
    return "“" + (prompt if len(prompt) <= most else prompt[:most - 1] + "…") + "”"


class PromptBox(QGroupBox):
    """Prompt, negative prompt, guidance w (0–10) and the sweep strip; shown only for a model trained on captions."""

    sweep_requested = Signal()
    submitted = Signal()   # Enter in the prompt field: sample

    def __init__(self, parent=None):
        super().__init__("Prompt", parent)
        self.setObjectName("promptBox")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.prompt_combo = QComboBox()
        self.prompt_combo.setObjectName("promptCombo")
        self.prompt_combo.setEditable(True)
        self.prompt_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.prompt_combo.setMinimumContentsLength(10)
        self.prompt_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.prompt_combo.setToolTip("What to draw; Enter samples. The list holds your recent prompts and captions "
                                     "the model was trained on; the text goes through the frozen encoder to the "
                                     "UNet's cross-attention. Empty: an unconditional sample")
        self.prompt_combo.lineEdit().setPlaceholderText("empty: unconditional")
        self.prompt_combo.lineEdit().returnPressed.connect(self.submitted.emit)
        lay.addWidget(self.prompt_combo)
        self.negative_edit = QLineEdit()
        self.negative_edit.setObjectName("negativeEdit")
        self.negative_edit.setPlaceholderText("negative prompt (optional)")
        self.negative_edit.setToolTip("What to steer away from: it takes the place of the empty prompt ∅ in "
                                      "ε̃ = ε_neg + w (ε_prompt − ε_neg); Enter samples")
        self.negative_edit.returnPressed.connect(self.submitted.emit)
        lay.addWidget(self.negative_edit)
        row = QHBoxLayout()
        row.addWidget(QLabel("Guidance w"))
        self.guidance_slider = QSlider(Qt.Orientation.Horizontal)
        self.guidance_slider.setObjectName("guidanceSlider")
        self.guidance_slider.setRange(0, 100)   # tenths of w, 0..10
        self.guidance_slider.setValue(int(DEFAULT_W * 10))
        self.guidance_slider.setToolTip("Classifier-free guidance ε̃ = ε_∅ + w (ε_c − ε_∅): 0 ignores the prompt, "
                                        "1 is the conditional model alone, more follows the prompt harder "
                                        "(and gives less varied, more saturated images)")
        row.addWidget(self.guidance_slider, 1)
        self.guidance_value = QLabel()
        self.guidance_value.setObjectName("guidanceValue")
        self.guidance_value.setMinimumWidth(28)
        row.addWidget(self.guidance_value)
        lay.addLayout(row)
        self.notes_label = QLabel("")
        self.notes_label.setObjectName("promptNotes")
        self.notes_label.setWordWrap(True)
        self.notes_label.setStyleSheet("color: #c08000;")
        self.notes_label.setTextFormat(Qt.TextFormat.RichText)
        self.notes_label.hide()
        lay.addWidget(self.notes_label)
        self.sweep_button = QPushButton("Guidance sweep: w = 0 … 7")
        self.sweep_button.setObjectName("sweepButton")
        self.sweep_button.setToolTip("The same seed and prompt at four guidance weights, side by side")
        self.sweep_button.clicked.connect(lambda _=False: self.sweep_requested.emit())
        lay.addWidget(self.sweep_button)
        self.sweep_label = QLabel("")
        self.sweep_label.setObjectName("sweepPrompt")
        self.sweep_label.setWordWrap(True)
        self.sweep_label.setToolTip("The prompt the four pictures below were drawn from")
        self.sweep_label.hide()
        lay.addWidget(self.sweep_label)
        self.sweep_prompt: str | None = None
        strip = QGridLayout()
        strip.setSpacing(2)
        self.sweep_images, self.sweep_labels = [], []
        for i, w in enumerate(SWEEP_WS):
            img, cap = QLabel(), QLabel(f"w={w:g}")
            img.setFixedSize(48, 48)
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            img.setStyleSheet("background: #202020;")
            cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
            strip.addWidget(img, 0, i)
            strip.addWidget(cap, 1, i)
            self.sweep_images.append(img)
            self.sweep_labels.append(cap)
        lay.addLayout(strip)
        self.history: list[str] = []
        self.examples: list[str] = []
        self.known_words: set[str] = set()
        self.encoder_notes: list[str] = []   # what the encoder said of the last run's prompt (a cut, [UNK])
        self._encoded_prompt: str | None = None
        self.guidance_slider.valueChanged.connect(self._show_w)
        self.prompt_combo.editTextChanged.connect(self._check)
        self._show_w()
        self.setVisible(False)

    @property
    def guidance(self) -> float:
        return self.guidance_slider.value() / 10.0

    def set_guidance(self, w: float) -> None:
        self.guidance_slider.setValue(int(round(w * 10)))

    @property
    def prompt(self) -> str:
        return self.prompt_combo.currentText()

    def set_prompt(self, text: str) -> None:
        self.prompt_combo.setEditText(text)

    def _show_w(self, *_):
        self.guidance_value.setText(f"{self.guidance:g}")

    def set_model(self, loaded) -> None:
        """Show the box for a text model, with its example captions and its words; hide it otherwise."""
        text = is_text_model(loaded)
        self.setVisible(text)
        if not text:
            return
        data = loaded.checkpoint.meta.get("data", {})
        self.examples = [c for c in data.get("captions", []) if isinstance(c, str)][:24]
        self.known_words = {w for w in data.get("caption_words", []) if isinstance(w, str)}
        current = self.prompt.strip()
        self.encoder_notes, self._encoded_prompt = [], None
        self._fill()
        if not current:  # a prompt ready to run: the example when the model knows its words
            current = "a red star" if {"red", "star"} <= self.known_words else (self.examples or [""])[0]
        self.set_prompt(current)
        self.clear_sweep()
        self._check(self.prompt)  # this model's words

    def _fill(self) -> None:
        text = self.prompt
        self.prompt_combo.blockSignals(True)
        self.prompt_combo.clear()
        for h in self.history:
            self.prompt_combo.addItem(h)
        if self.examples:
            if self.history:
                self.prompt_combo.insertSeparator(self.prompt_combo.count())
            for c in self.examples:
                if c not in self.history:
                    self.prompt_combo.addItem(c)
        self.prompt_combo.setEditText(text)
        self.prompt_combo.blockSignals(False)

    def remember(self, prompt: str) -> None:
        prompt = prompt.strip()
        if not prompt:
            return
        self.history = [prompt] + [h for h in self.history if h != prompt][: HISTORY - 1]
        self._fill()

    def _check(self, text: str) -> None:
        """One line under the box: an empty prompt samples unconditionally; words the model never saw in its captions
        (each once); what the encoder cut or could not represent in this prompt's last run."""
        unseen = unseen_words(text, sorted(self.known_words)) if self.known_words else []
        lines = []
        if not text.strip():
            lines.append(EMPTY_NOTE)
        elif unseen:
            lines.append(f"The model never saw {', '.join(repr(w) for w in unseen)} in its captions; it will mostly "
                         f"ignore {'it' if len(unseen) == 1 else 'them'}")
        if self.encoder_notes and text.strip() == self._encoded_prompt:
            lines += [n.split(": ", 1)[-1][0].upper() + n.split(": ", 1)[-1][1:] for n in self.encoder_notes]
        self.notes_label.setText("<br>".join(html.escape(line, quote=False) for line in lines))
        self.notes_label.setVisible(bool(lines))
        self._label_sweep()

    def set_encoder_notes(self, prompt: str, notes: list[str]) -> None:
        """The worker's notes on ``prompt`` (jobs/prompts.py): shown while the box holds that prompt."""
        # the words the model never saw are named above already, from this box's own check
        self._encoded_prompt, self.encoder_notes = prompt.strip(), [n for n in notes if "never saw" not in n]
        self._check(self.prompt)

    def job_fields(self) -> dict:
        return {"prompt": self.prompt.strip(), "negative_prompt": self.negative_edit.text().strip() or None,
                "guidance": self.guidance}

    def clear_sweep(self) -> None:
        for img in self.sweep_images:
            img.clear()
        self.sweep_prompt = None
        self._label_sweep()

    def start_sweep(self, prompt: str) -> None:
        """A sweep of ``prompt`` begins: the strip empties and says which prompt it will show."""
        self.clear_sweep()
        self.sweep_prompt = prompt.strip()
        self._label_sweep()

    def show_sweep(self, w: float, u8: np.ndarray) -> None:
        i = SWEEP_WS.index(w)
        self.sweep_images[i].setPixmap(pixmap(u8, 48))

    def _label_sweep(self) -> None:
        """Name the prompt the strip shows; say so when the box now holds another one."""
        if self.sweep_prompt is None:
            self.sweep_label.hide()
            return
        if self.sweep_prompt == self.prompt.strip():
            self.sweep_label.setText(f"Sweep of {quoted(self.sweep_prompt)}")
            self.sweep_label.setStyleSheet("")
        else:
            self.sweep_label.setText(f"Sweep of an earlier prompt, {quoted(self.sweep_prompt)}")
            self.sweep_label.setStyleSheet("color: #909090;")
        self.sweep_label.show()

    # ---- settings (the panel passes its get/set) ------------------------------------------------------------------
    def restore(self, get) -> None:
        self.history = [h for h in get("prompt_history", "", str).split("\n") if h.strip()][:HISTORY]
        self._fill()
        self.set_prompt(get("prompt", "", str))
        self.negative_edit.setText(get("negative_prompt", "", str))
        self.set_guidance(min(10.0, max(0.0, get("prompt_guidance", DEFAULT_W, float))))

    def save(self, put) -> None:
        for key, value in (("prompt", self.prompt), ("negative_prompt", self.negative_edit.text()),
                           ("prompt_guidance", self.guidance), ("prompt_history", "\n".join(self.history))):
            put(key, value)


def install(panel) -> None:
    """Thin call site for SamplingPanel: the prompt box in the side column, the Attention tab, the sweep worker."""
    panel.prompt_box = PromptBox()
    panel.controls.parentWidget().layout().insertWidget(1, panel.prompt_box)
    panel.attention_view = AttentionView()
    panel.tabs.add_tab(panel.attention_view, "Attention", tip="per-word cross-attention maps at the frame shown",
                       applies=is_text_model)
    panel.model_loaded.connect(panel.prompt_box.set_model)
    panel.prompt_box.sweep_requested.connect(lambda: start_sweep(panel))
    panel.prompt_box.submitted.connect(panel.start)
    panel.sweep_worker = None


def job_for(panel, job: SamplingJob) -> SamplingJob:
    """The panel's job with the prompt box's prompt, negative prompt and w (a text model only); an empty prompt is
    an unconditional job (no prompt, no negative prompt)."""
    if not is_text_model(panel.loaded):
        return job
    fields = panel.prompt_box.job_fields()
    if not fields["prompt"]:
        return dataclasses.replace(job, prompt=None, negative_prompt=None, guidance=fields["guidance"])
    panel.prompt_box.remember(fields["prompt"])
    return dataclasses.replace(job, **fields)


def start_sweep(panel) -> GeneratorWorker | None:
    if panel.loaded is None or not is_text_model(panel.loaded) or panel.sweep_worker is not None:
        return None
    job = job_for(panel, panel.controls.job())
    if job.prompt is None:
        panel.state.message.emit("The guidance sweep needs a prompt: w scales how hard the prompt is followed")
        return None
    panel.prompt_box.start_sweep(job.prompt)
    worker = GeneratorWorker(sweep_factory(panel.loaded, job), name="guidanceSweep")
    loaded = panel.loaded
    worker.yielded.connect(lambda item: panel.prompt_box.show_sweep(*item) if panel.loaded is loaded else None)
    worker.errored.connect(panel._error)

    def done():
        worker.wait(2000)
        panel.sweep_worker = None
        panel.prompt_box.sweep_button.setEnabled(True)

    worker.finished.connect(done)
    panel.sweep_worker = worker
    panel.prompt_box.sweep_button.setEnabled(False)
    panel.pool.start(worker)
    return worker
