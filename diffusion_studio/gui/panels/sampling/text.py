"""Prompts in the Sampling tab: the prompt box (history, the model's own captions), guidance slider, negative prompt,
the guidance sweep strip (same seed at w = 0, 1, 3, 7), and the "Attention" tab with per-word cross-attention maps."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QSizePolicy, QSlider, QSpinBox, QVBoxLayout, QWidget)

from ....jobs.sampling import SWEEP_WS, SamplingJob, sweep_factory
from ...workers import GeneratorWorker

DEFAULT_W = 3.0
HISTORY = 20


def is_text_model(loaded) -> bool:
    return loaded is not None and loaded.is_text


# ---- widgets ------------------------------------------------------------------------------------------------------
def _pixmap(u8: np.ndarray, side: int) -> QPixmap:
    a = np.ascontiguousarray(u8)
    if a.ndim == 2:
        img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8)
    else:
        img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy()).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.FastTransformation)


def heat(u8: np.ndarray) -> np.ndarray:
    """A black → red → yellow → white heat map of a uint8 map (the colours DAAM's figures use)."""
    v = u8.astype(np.float32) / 255.0
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def crop(grid: np.ndarray | None, k: int, side: int) -> np.ndarray:
    """Image k of a make_grid grid (padding 2, ceil(sqrt(n)) columns) as RGB uint8; grey when there is none yet."""
    if grid is None:
        return np.full((side, side, 3), 128, np.uint8)
    cols = max(1, (grid.shape[1] - 2) // (side + 2))
    r, c = divmod(k, cols)
    top, left = 2 + r * (side + 2), 2 + c * (side + 2)
    tile = grid[top:top + side, left:left + side]
    return np.repeat(tile[..., None], 3, axis=-1) if tile.ndim == 2 else tile


def best_layout(n: int, width: int, height: int) -> tuple[int, int]:
    """(columns, tile side) that make n square tiles (each with a caption line) largest in width × height."""
    best = (1, 0)
    for cols in range(1, n + 1):
        rows = (n + cols - 1) // cols
        side = min(width // cols - 6, height // rows - 22)
        if side > best[1]:
            best = (cols, side)
    return best[0], max(24, min(192, best[1]))


def blend(base: np.ndarray, heat_rgb: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    return (alpha * heat_rgb.astype(np.float32) + (1 - alpha) * base.astype(np.float32)).astype(np.uint8)


class PromptBox(QGroupBox):
    """Prompt, negative prompt, guidance w (0–10) and the sweep strip; shown only for a model trained on captions."""

    sweep_requested = Signal()

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
        self.prompt_combo.setToolTip("What to draw. The list holds your recent prompts and captions the model was "
                                     "trained on; the text goes through the frozen encoder to the UNet's "
                                     "cross-attention")
        lay.addWidget(self.prompt_combo)
        self.negative_edit = QLineEdit()
        self.negative_edit.setObjectName("negativeEdit")
        self.negative_edit.setPlaceholderText("negative prompt (optional)")
        self.negative_edit.setToolTip("What to steer away from: it takes the place of the empty prompt ∅ in "
                                      "ε̃ = ε_neg + w (ε_prompt − ε_neg)")
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
        self.notes_label.hide()
        lay.addWidget(self.notes_label)
        self.sweep_button = QPushButton("Guidance sweep (w = 0, 1, 3, 7)")
        self.sweep_button.setObjectName("sweepButton")
        self.sweep_button.setToolTip("The same seed and prompt at four guidance weights, side by side")
        self.sweep_button.clicked.connect(lambda _=False: self.sweep_requested.emit())
        lay.addWidget(self.sweep_button)
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
        self._fill()
        if not current:  # a prompt ready to run: the example when the model knows its words
            current = "a red star" if {"red", "star"} <= self.known_words else (self.examples or [""])[0]
        self.set_prompt(current)
        self.clear_sweep()

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
        """One line under the box when the prompt uses words the model never saw in its captions."""
        words = re.findall(r"[a-z0-9]+", text.lower())
        unseen = [w for w in words if self.known_words and w not in self.known_words]
        if not text.strip():
            self.notes_label.setText("Type what to draw, e.g. \"a red star\"")
        elif unseen:
            self.notes_label.setText(f"The model never saw {', '.join(repr(w) for w in unseen)} in its captions; "
                                     f"it will mostly ignore {'it' if len(unseen) == 1 else 'them'}")
        else:
            self.notes_label.setText("")
        self.notes_label.setVisible(bool(self.notes_label.text()))

    def job_fields(self) -> dict:
        return {"prompt": self.prompt.strip(), "negative_prompt": self.negative_edit.text().strip() or None,
                "guidance": self.guidance}

    def clear_sweep(self) -> None:
        for img in self.sweep_images:
            img.clear()

    def show_sweep(self, w: float, u8: np.ndarray) -> None:
        i = SWEEP_WS.index(w)
        self.sweep_images[i].setPixmap(_pixmap(u8, 48))


class AttentionView(QWidget):
    """The "Attention" tab: for the frame shown, which pixels of one image listened to each word of the prompt."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("attentionView")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(QLabel("Image"))
        self.image_spin = QSpinBox()
        self.image_spin.setObjectName("attentionImageSpin")
        self.image_spin.setRange(1, 1)
        self.image_spin.setToolTip("Which sample of the batch to show the maps of")
        top.addWidget(self.image_spin)
        top.addStretch(1)
        lay.addLayout(top)
        self.note = QLabel("Per-word cross-attention maps appear here when a model trained on captions samples "
                           "from a prompt.")
        self.note.setObjectName("attentionNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.grid = QGridLayout()
        self.grid.setSpacing(3)
        lay.addLayout(self.grid, 1)
        self.tiles: list[tuple[QLabel, QLabel]] = []
        self._frame = None
        self.image_spin.valueChanged.connect(lambda _v: self.show_frame(self._frame))
        self.setToolTip("Cross-attention weight of each pixel on each word, averaged over heads and over every "
                        "cross-attention layer (upsampled to the image), at the step that made this frame. Each "
                        "map is scaled to its own maximum (as DAAM shows them); bright = listens to that word.")

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._frame is not None:
            self.show_frame(self._frame)

    def show_frame(self, frame) -> None:
        self._frame = frame
        att = getattr(frame, "attention", None) if frame is not None else None
        if att is None:
            for img, cap in self.tiles:
                img.clear()
            self.note.setVisible(True)
            return
        self.note.setVisible(False)
        n_img = att.maps.shape[0]
        self.image_spin.setMaximum(max(1, n_img))
        i = min(self.image_spin.value(), n_img) - 1
        base = crop(frame.x0, i, att.maps.shape[-1])  # the sample's x̂₀ under its maps, as DAAM overlays them
        tiles = [("sample", base)] + [(w, blend(base, heat(att.maps[i, k]))) for k, w in enumerate(att.words)]
        cols, side = best_layout(len(tiles), self.width() - 10, self.height() - 50)
        while len(self.tiles) < len(tiles):
            img, cap = QLabel(), QLabel()
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            cap.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            cap.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
            # the pixmap must not set the tab's minimum size: the pane grid decides how large the quadrant is
            img.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
            img.setMinimumSize(24, 24)
            self.tiles.append((img, cap))
        if getattr(self, "_cols", None) != (cols, len(tiles)):  # re-flow the tiles into the best column count
            self._cols = (cols, len(tiles))
            for k, (img, cap) in enumerate(self.tiles):
                self.grid.removeWidget(img)
                self.grid.removeWidget(cap)
                self.grid.addWidget(img, 2 * (k // cols), k % cols)
                self.grid.addWidget(cap, 2 * (k // cols) + 1, k % cols)
            for r in range(2 * len(self.tiles) + 2):
                self.grid.setRowStretch(r, 1 if r % 2 == 0 and r // 2 < (len(tiles) + cols - 1) // cols else 0)
        for k, (img, cap) in enumerate(self.tiles):
            if k < len(tiles):
                img.setPixmap(_pixmap(tiles[k][1], side))
                cap.setText(tiles[k][0])
                img.show()
                cap.show()
            else:
                img.hide()
                cap.hide()


def install(panel) -> None:
    """Thin call site for SamplingPanel: the prompt box in the side column, the Attention tab, the sweep worker."""
    panel.prompt_box = PromptBox()
    panel.controls.parentWidget().layout().insertWidget(1, panel.prompt_box)
    panel.attention_view = AttentionView()
    panel.tabs.add_tab(panel.attention_view, "Attention", tip="per-word cross-attention maps at the frame shown",
                       applies=is_text_model)
    panel.model_loaded.connect(panel.prompt_box.set_model)
    panel.prompt_box.sweep_requested.connect(lambda: start_sweep(panel))
    panel.sweep_worker = None


def job_for(panel, job: SamplingJob) -> SamplingJob:
    """The panel's job with the prompt box's prompt, negative prompt and w (a text model only)."""
    if not is_text_model(panel.loaded):
        return job
    fields = panel.prompt_box.job_fields()
    panel.prompt_box.remember(fields["prompt"])
    return dataclasses.replace(job, **fields)


def start_sweep(panel) -> GeneratorWorker | None:
    if panel.loaded is None or not is_text_model(panel.loaded) or panel.sweep_worker is not None:
        return None
    job = job_for(panel, panel.controls.job())
    panel.prompt_box.clear_sweep()
    worker = GeneratorWorker(sweep_factory(panel.loaded, job), name="guidanceSweep")
    worker.yielded.connect(lambda item: panel.prompt_box.show_sweep(*item))
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
