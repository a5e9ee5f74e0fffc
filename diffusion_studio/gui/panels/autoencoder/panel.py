"""The Autoencoder view: train the autoencoder a latent model runs on (in a worker), or open a saved one, and see
originals beside their reconstructions, the latent channels as small images (labelled: a row per image, a column per
channel), the reconstruction loss as it trains with the time left, and the reconstruction PSNR. Empty, it says what
it is for and how to start."""
from __future__ import annotations

import threading
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSizePolicy, QSpinBox, QWidget)

from ....core.nets.autoencoder import AutoencoderConfig
from ....core.train.autoencoder import AETrainConfig
from ...widgets.imageview import ImagePane
from ...widgets.plot_theme import apply_plot_theme
from ...workers import GeneratorWorker
from ....jobs.autoencoder import AEPicture, AEProgress, AEResult, inspect_job, train_job
from ..base import Panel
from ..forward.latent import shipped_autoencoders

DATASETS = ("builtin:shapes", "builtin:digits", "builtin:photos")
INTRO = ("<b>What this tab is for.</b> Latent diffusion runs the same noising and denoising on a smaller picture: "
         "an autoencoder's latent z = E(x) (a 32×32×3 image as 4×8×8 numbers with f = 4 and 4 channels), and its "
         "decoder D turns the result back into pixels. Train one here (<b>Train</b>, 3 minutes on the CPU) or look at "
         "the shipped one (<b>Open an autoencoder…</b>): the originals, their reconstructions D(E(x)), the "
         "latent channels, the loss as it falls and the PSNR show how much the latent keeps. <b>Save…</b> it, then "
         "choose it in Training ▸ space to train a latent model.")
LOSS_NAMES = {"l1": "mean |x − D(E(x))|", "l2": "mean (x − D(E(x)))²", "mse": "mean (x − D(E(x)))²"}
LOSS_TITLE = "loss = {}"   # short: a pyqtgraph title never wraps, and a long one widened the panel past the dock


class LossPlot(pg.PlotWidget):
    """A plot whose title wraps to the plot's width (a pyqtgraph title takes its whole text as minimum width, which
    pushed the axes and the curve past the right edge of a narrow plot)."""

    def setTitle(self, text: str, **kw) -> None:  # noqa: N802 (Qt's name)
        self.getPlotItem().setTitle(text, **kw)
        self._fit_title(self.width())

    def _fit_title(self, width: int) -> None:
        label = self.getPlotItem().titleLabel
        label.item.setTextWidth(-1)
        if label.item.boundingRect().width() > width - 12 > 20:
            label.item.setTextWidth(width - 12)
        label.updateMin()
        label.resizeEvent(None)
        label.setMinimumWidth(min(label.minimumWidth(), max(20, width - 12)))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event is not None and hasattr(self, "plotItem"):  # (pyqtgraph resizes once while it builds the view)
            self._fit_title(event.size().width())
        super().resizeEvent(event)


def clock(seconds: float) -> str:
    """0:07, 2:30, 1:05:00."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


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
        self._restore_settings()
        self._update_buttons()

    def _build(self) -> None:
        root = QHBoxLayout(self)
        side = self.side = QWidget()
        side.setFixedWidth(self.SIDE_WIDTH[0])
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
        self.open_combo.addItem("Open an autoencoder…", None)
        self.open_combo.setToolTip("Look at a saved autoencoder: a shipped one or a folder")
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
        right = QGridLayout()
        right.setContentsMargins(0, 0, 0, 0)
        self.intro = QLabel(INTRO)
        self.intro.setObjectName("aeIntro")
        self.intro.setWordWrap(True)
        self.intro.setTextFormat(Qt.TextFormat.RichText)
        right.addWidget(self.intro, 0, 0, 1, 2)
        self.orig_pane = ImagePane("originals x", min_size=80)
        self.orig_pane.setObjectName("aeOriginals")
        self.rec_pane = ImagePane("reconstructions D(E(x))", min_size=80)
        self.rec_pane.setObjectName("aeReconstructions")
        self.latent_pane = ImagePane(self.LATENT_TITLE, min_size=80)
        self.latent_pane.setObjectName("aeLatents")
        self.latent_pane.setToolTip("E(x) of the first four images: a row per image, a column per latent channel "
                                    "(scaled latents shown as z/3 on grey: ±3 is black to white)")
        self.loss_plot = LossPlot()
        self.loss_plot.setObjectName("aeLossPlot")
        self.loss_plot.setMinimumSize(80, 80)
        self.loss_plot.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)  # the grid shares out
        self.loss_plot.setTitle(self.LOSS_TITLE, size="9pt")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.setToolTip("The reconstruction loss of each training batch (log axis); it is what the "
                                  "autoencoder minimises, with a tiny KL term that keeps the latent near N(0, I)")
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#4fc3f7", width=1.5))
        apply_plot_theme(self.loss_plot)
        self.loss_steps: list[int] = []
        self.loss_values: list[float] = []
        right.addWidget(self.orig_pane, 1, 0)
        right.addWidget(self.rec_pane, 1, 1)
        right.addWidget(self.latent_pane, 2, 0)
        right.addWidget(self.loss_plot, 2, 1)
        for r in (1, 2):
            right.setRowStretch(r, 1)
        for c in (0, 1):
            right.setColumnStretch(c, 1)
        root.addLayout(right, 1)

    SIDE_WIDTH = (270, 235, 640)  # the form's width; below 640 px of panel the narrower one leaves the pictures room

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        wide, narrow, at = self.SIDE_WIDTH
        self.side.setFixedWidth(wide if event.size().width() >= at else narrow)
        super().resizeEvent(event)

    LATENT_TITLE = "latent channels z = E(x): a row per image, a column per channel"
    LOSS_TITLE = "reconstruction loss"

    def _show_intro(self) -> None:
        self.intro.setVisible(self.last is None)

    def _button(self, text, name, tip, slot) -> QPushButton:
        b = QPushButton(text)
        b.setObjectName(name)
        b.setToolTip(tip)
        b.clicked.connect(lambda _=False: slot())
        return b

    # ---- settings (kept across a restart, like the other tabs) ------------------------------------------------------
    def _restore_settings(self) -> None:
        data = self.setting("data", DATASETS[0], str).strip()
        if data:
            self.data_combo.setCurrentText(data)
        self.size_spin.setValue(self.setting("image_size", self.size_spin.value(), int))
        self.factor_combo.setCurrentIndex(max(0, self.factor_combo.findData(self.setting("factor", 4, int))))
        self.channels_spin.setValue(self.setting("latent_channels", self.channels_spin.value(), int))
        self.minutes_spin.setValue(self.setting("minutes", self.minutes_spin.value(), float))

    def save_settings(self) -> None:
        for key, value in (("data", self.data_combo.currentText().strip()), ("image_size", self.size_spin.value()),
                           ("factor", self.factor_combo.currentData()),
                           ("latent_channels", self.channels_spin.value()), ("minutes", self.minutes_spin.value())):
            self.set_setting(key, value)

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
        self.loss_steps, self.loss_values = [], []
        self.loss_curve.setData([], [])
        self.loss_plot.setTitle(LOSS_TITLE.format(LOSS_NAMES.get(train.loss, train.loss)), size="9pt")
        self.progress.setRange(0, 0)
        self.progress.setFormat("loading the data…")
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
        self.state.set_busy("autoencoder", BUSY.get(name, name))  # the status bar says what this tab's job is
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
        self.state.set_busy("autoencoder", None)

    def _on_item(self, item) -> None:
        if isinstance(item, AEProgress):
            self._on_progress(item)
            return
        if not isinstance(item, AEPicture):
            return
        self.last = item
        self._show_intro()
        self.orig_pane.show_u8(item.originals)
        self.rec_pane.show_u8(item.reconstructions)
        self.latent_pane.show_u8(item.latents)
        if item.latent_shape is not None:
            c, h, w = item.latent_shape
            self.latent_pane.set_title(f"latent z = E(x): rows = the top {item.shown} originals, columns = "
                                       f"channels 1 … {c} ({h}×{w} each)")
        speed = f" · {item.images_per_s:.0f} img/s" if item.images_per_s else ""
        self.psnr_label.setText(f"step {item.step}: PSNR {item.psnr:.2f} dB on these {PREVIEW_N_TEXT}{speed}")

    def _on_progress(self, p: AEProgress) -> None:
        self.loss_steps.append(p.step)
        self.loss_values.append(max(p.rec_loss, 1e-12))
        self.loss_curve.setData(self.loss_steps, self.loss_values)
        if p.eta_s is None:
            self.progress.setRange(0, 0)
            text = f"step {p.step}"
        else:
            total = p.elapsed_s + p.eta_s
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(round(1000 * p.elapsed_s / total)) if total > 0 else 1000)
            text = f"step {p.step} · {clock(p.eta_s)} left"
        self.progress.setFormat(text)
        self.state.set_busy("autoencoder", f"{BUSY['autoencoder']}: {text}")
        if p.eta_s is not None and p.eta_s <= 0:
            self.progress.setFormat(f"step {p.step} · measuring PSNR and the latent scale…")

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
        if self.worker is None:
            self.state.set_busy("autoencoder", None)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("done" if self.result is not None or self.last is not None else "idle")
        self._show_intro()
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
BUSY = {"autoencoder": "training the autoencoder", "autoencoder-inspect": "looking at an autoencoder"}
