"""The Autoencoder view: train the autoencoder a latent model runs on (in a worker), or open a saved one, and see
originals beside their reconstructions, the latent channels as small images, and the reconstruction PSNR."""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ....core.nets.autoencoder import AutoencoderConfig
from ....core.train.autoencoder import AETrainConfig
from ...widgets.imageview import ImagePane
from ...workers import GeneratorWorker
from ....jobs.autoencoder import AEPicture, AEResult, inspect_job, train_job
from ..base import Panel
from ..forward.latent import shipped_autoencoders

DATASETS = ("builtin:shapes", "builtin:digits", "builtin:photos")


class AutoencoderPanel(Panel):
    title = "Autoencoder"
    settings_group = "autoencoder"

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self.worker: GeneratorWorker | None = None
        self.result: AEResult | None = None
        self.last: AEPicture | None = None
        self._stop = threading.Event()
        self._build()
        self._update_buttons()

    def _build(self) -> None:
        root = QHBoxLayout(self)
        side = QWidget()
        side.setFixedWidth(270)
        form = QFormLayout(side)
        self.data_combo = QComboBox()
        self.data_combo.setObjectName("aeData")
        self.data_combo.setEditable(True)
        self.data_combo.addItems(DATASETS)
        self.data_combo.setToolTip("The images to train on (any data spec: a folder, builtin:NAME, mnist:PATH …)")
        self.size_spin = QSpinBox()
        self.size_spin.setObjectName("aeSize")
        self.size_spin.setRange(8, 128)
        self.size_spin.setSingleStep(8)
        self.size_spin.setValue(32)
        self.size_spin.setSuffix(" px")
        self.factor_combo = QComboBox()
        self.factor_combo.setObjectName("aeFactor")
        for f in (2, 4, 8):
            self.factor_combo.addItem(f"f = {f}", f)
        self.factor_combo.setCurrentIndex(1)
        self.factor_combo.setToolTip("Downsampling factor: the latent is f times smaller per side than the image")
        self.channels_spin = QSpinBox()
        self.channels_spin.setObjectName("aeLatentChannels")
        self.channels_spin.setRange(1, 16)
        self.channels_spin.setValue(4)
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setObjectName("aeMinutes")
        self.minutes_spin.setRange(0.05, 120)
        self.minutes_spin.setValue(3.0)
        self.minutes_spin.setSuffix(" min")
        form.addRow("Data", self.data_combo)
        form.addRow("Size", self.size_spin)
        form.addRow("Factor", self.factor_combo)
        form.addRow("Latent ch.", self.channels_spin)
        form.addRow("Length", self.minutes_spin)
        self.train_button = self._button("Train", "aeTrain", "Train a new autoencoder in the background", self.train)
        self.stop_button = self._button("Stop", "aeStop", "Stop after the current step (the result is kept)",
                                        self.stop)
        self.save_button = self._button("Save…", "aeSave", "Save the trained autoencoder to a folder "
                                        "(use it with Training ▸ space: latent, or `train --autoencoder`)",
                                        self.save_dialog)
        row = QHBoxLayout()
        for b in (self.train_button, self.stop_button, self.save_button):
            row.addWidget(b)
        form.addRow(row)
        self.open_combo = QComboBox()
        self.open_combo.setObjectName("aeOpen")
        self.open_combo.addItem("Look at a saved autoencoder…", None)
        for spec in shipped_autoencoders():
            self.open_combo.addItem(spec, spec)
        self.open_combo.addItem("Open folder…", "open")
        self.open_combo.activated.connect(self._on_open)
        form.addRow(self.open_combo)
        self.progress = QProgressBar()
        self.progress.setObjectName("aeProgress")
        self.progress.setFormat("idle")
        form.addRow(self.progress)
        self.psnr_label = QLabel("PSNR –")
        self.psnr_label.setObjectName("aePsnr")
        self.psnr_label.setWordWrap(True)
        self.psnr_label.setToolTip("Peak signal-to-noise ratio of the reconstructions, 10·log10(2² / MSE) for pixels "
                                   "in [−1, 1]: 30 dB is an RMS error of about 1.6% of the range")
        form.addRow(self.psnr_label)
        root.addWidget(side)
        panes = QVBoxLayout()
        self.orig_pane = ImagePane("originals x", min_size=80)
        self.orig_pane.setObjectName("aeOriginals")
        self.rec_pane = ImagePane("reconstructions D(E(x))", min_size=80)
        self.rec_pane.setObjectName("aeReconstructions")
        self.latent_pane = ImagePane("latent channels", min_size=80)
        self.latent_pane.setObjectName("aeLatents")
        self.latent_pane.setToolTip("E(x) of the first four images: a row per image, a column per latent channel "
                                    "(scaled latents shown as z/3 on grey)")
        for p in (self.orig_pane, self.rec_pane, self.latent_pane):
            panes.addWidget(p, 1)
        root.addLayout(panes, 1)

    def _button(self, text, name, tip, slot) -> QPushButton:
        b = QPushButton(text)
        b.setObjectName(name)
        b.setToolTip(tip)
        b.clicked.connect(lambda _=False: slot())
        return b

    # ---- jobs -------------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def train(self) -> bool:
        if self.running:
            return False
        try:
            config = AutoencoderConfig(image_size=self.size_spin.value(), factor=self.factor_combo.currentData(),
                                       latent_channels=self.channels_spin.value())
            config.validate()
            train = AETrainConfig(steps=None, minutes=self.minutes_spin.value(), batch_size=32, lr=2e-3,
                                  precision="auto", device="cpu", preview_every=25, preview_n=8)
            train.validate()
        except ValueError as e:
            self.psnr_label.setText(f"<span style='color:#c0392b'>{e}</span>")
            return False
        spec = self.data_combo.currentText().strip()
        self.result = None
        self._stop.clear()
        self.progress.setRange(0, 0)
        self.progress.setFormat("training…")
        self._start(lambda w: train_job(spec, config, train, cancel=self._stop.is_set), "autoencoder")
        return True

    def inspect(self, ae_spec: str) -> None:
        if self.running:
            return
        spec = self.data_combo.currentText().strip()
        self._start(lambda w: inspect_job(ae_spec, spec, cancel=lambda: w.abort_requested), "autoencoder-inspect")

    def _start(self, make, name: str) -> None:
        holder: dict = {}
        worker = GeneratorWorker(lambda: make(holder["w"]), name=name)
        holder["w"] = worker
        worker.yielded.connect(self._on_item)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.pool.start(worker)
        self._update_buttons()

    def stop(self) -> None:
        """Training ends after the current step and is still measured and kept; looking at one is cancelled."""
        self._stop.set()
        if self.worker is not None and self.worker.objectName() != "autoencoder":
            self.worker.abort()

    def shutdown(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.abort()

    def _on_item(self, item) -> None:
        if not isinstance(item, AEPicture):
            return
        self.last = item
        self.orig_pane.show_u8(item.originals)
        self.rec_pane.show_u8(item.reconstructions)
        self.latent_pane.show_u8(item.latents)
        speed = f" · {item.images_per_s:.0f} img/s" if item.images_per_s else ""
        self.psnr_label.setText(f"step {item.step}: PSNR {item.psnr:.2f} dB on these {PREVIEW_N_TEXT}{speed}")
        self.progress.setFormat(f"step {item.step}")

    def _on_returned(self, value) -> None:
        if isinstance(value, AEResult):
            self.result = value
            held = f", held-out {value.psnr_heldout:.2f} dB" if value.psnr_heldout is not None else ""
            self.psnr_label.setText(f"trained: PSNR train {value.psnr_train:.2f} dB{held}; latent scale factor "
                                    f"{value.scale_factor:.4f}. Save… to use it for latent training.")
        elif value is not None and hasattr(value, "scale_factor"):
            m = value.meta.get("metrics") if isinstance(value.meta.get("metrics"), dict) else {}
            held = m.get("psnr_heldout_db")
            self.psnr_label.setText(f"{value.source}: PSNR {self.last.psnr:.2f} dB on these images"
                                    + (f" (held-out {held:.2f} dB when trained)" if isinstance(held, float) else "")
                                    + f"; scale {value.scale_factor:.4f}")

    def _on_error(self, message: str) -> None:
        self.psnr_label.setText(f"<span style='color:#c0392b'>{message}</span>")
        self.state.message.emit(message)

    def _on_finished(self) -> None:
        worker = self.sender()
        worker.wait(2000)
        if worker is self.worker:
            self.worker = None
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("done" if self.result is not None or self.last is not None else "idle")
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.train_button.setEnabled(not self.running)
        self.stop_button.setEnabled(self.running)
        self.save_button.setEnabled(not self.running and self.result is not None)
        self.open_combo.setEnabled(not self.running)

    def _on_open(self, index: int) -> None:
        data = self.open_combo.itemData(index)
        self.open_combo.setCurrentIndex(0)
        if data == "open":
            folder = QFileDialog.getExistingDirectory(self, "Open autoencoder folder")
            if folder:
                self.inspect(folder)
        elif data:
            self.inspect(data)

    def save_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save autoencoder into folder")
        if folder:
            self.save(folder)

    def save(self, folder: str | Path) -> Path | None:
        from ....core.io.autoencoder_io import save_autoencoder

        if self.result is None:
            return None
        try:
            path = save_autoencoder(folder, self.result.model, self.result.scale_factor, self.result.meta)
        except (OSError, ValueError) as e:
            self._on_error(f"Could not save: {e}")
            return None
        self.state.message.emit(f"Autoencoder saved to {path}")
        return path


PREVIEW_N_TEXT = "8 images"
