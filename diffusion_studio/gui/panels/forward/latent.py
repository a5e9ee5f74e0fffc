"""The Forward view's latent toggle: noise the image's latent z_0 = scale · E(x_0) instead of its pixels, and show
z_t's channels and the decoder's picture of z_t beside the pixel-space x_t at the same t."""
from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ....core.io.space import LatentNoising, LatentSpace
from ....data.convert import make_grid, to_uint8
from ...widgets.imageview import ImagePane
from .ui import share_height
from ....jobs.frames import LATENT_SCALE

OPEN_ITEM = "Open autoencoder…"


def shipped_autoencoders() -> list[str]:
    """``builtin:NAME`` of every autoencoder shipped under resources/models/."""
    from ....core.io.autoencoder_io import AE_MANIFEST
    from ....resources import models_dir

    root = models_dir()
    try:
        return sorted(f"builtin:{d.name}" for d in root.iterdir() if (d / AE_MANIFEST).is_file())
    except OSError:
        return []


class LatentForward(QWidget):
    """A checkbox and autoencoder chooser, and (when on) two panes: z_t's channels and D(z_t / scale)."""

    def __init__(self, panel):
        super().__init__(panel)
        self.panel = panel
        self.setObjectName("latentForward")
        self.space: LatentSpace | None = None
        self.noising: LatentNoising | None = None
        self._key = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.check = QCheckBox("Noise in latent space")
        self.check.setObjectName("latentCheck")
        self.check.setToolTip("Encode x₀ with an autoencoder, z₀ = scale·E(x₀), and noise the latent: "
                              "z_t = √ᾱ_t z₀ + √(1−ᾱ_t) ε. Shows z_t and what the decoder makes of it, next to the "
                              "pixel-space x_t at the same t.")
        self.combo = QComboBox()
        self.combo.setObjectName("latentAutoencoder")
        self.combo.setToolTip("The autoencoder whose latent space is noised")
        for spec in shipped_autoencoders():
            self.combo.addItem(spec, spec)
        self.combo.addItem(OPEN_ITEM, None)
        self.combo.activated.connect(self._on_combo)
        bar.addWidget(self.check)
        bar.addWidget(self.combo)
        self.info = QLabel("")
        self.info.setObjectName("latentInfo")
        self.info.setWordWrap(True)
        bar.addWidget(self.info, 1)
        lay.addLayout(bar)
        self.row = QWidget()
        share_height(self)  # its panes take a share of the tab's height (stretch 3 when on), not their size hint
        panes = QHBoxLayout(self.row)
        panes.setContentsMargins(0, 0, 0, 0)
        self.z_pane = ImagePane("z_t channels", min_size=90)
        self.z_pane.setObjectName("latentZPane")
        self.z_pane.setToolTip("The noised latent z_t, one tile per channel, shown as z/3 (±3 std spans black to "
                               "white). At t = T it is ε, like x_T in pixel space.")
        self.dec_pane = ImagePane("decoder's picture of z_t", min_size=90)
        self.dec_pane.setObjectName("latentDecodedPane")
        self.dec_pane.setToolTip("D(z_t / scale): what the decoder makes of the noisy latent. Noise in latent space "
                                 "is not pixel noise: it turns into blotches and wrong colours, not grain.")
        for pane in (self.z_pane, self.dec_pane):
            share_height(pane)
        panes.addWidget(self.z_pane, 1)
        panes.addWidget(self.dec_pane, 1)
        lay.addWidget(self.row, 1)
        self.row.hide()
        self.check.toggled.connect(self._on_toggled)
        panel.frame_shown.connect(self._on_t)
        panel.state.image_changed.connect(self._invalidate)
        panel.state.schedule_changed.connect(self._invalidate)
        panel.seed_spin.valueChanged.connect(self._invalidate)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name): the Forward tab's stretch decides its height
        return QSize(300, self.minimumSizeHint().height())

    # ---- choosing an autoencoder ------------------------------------------------------------------------------------
    def _on_combo(self, index: int) -> None:
        spec = self.combo.itemData(index)
        if spec is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open autoencoder", "", "Autoencoder (autoencoder.json)")
            if not path:
                return
            spec = path
            self.combo.insertItem(0, path, path)
            self.combo.setCurrentIndex(0)
        self.load(spec)

    def load(self, spec: str) -> bool:
        """Use the autoencoder ``spec``; a bad one leaves the previous in place and says why in one line."""
        try:
            self.space = LatentSpace.load(spec)
        except (ValueError, OSError) as e:
            self.info.setText(f"<span style='color:#c0392b'>{e}</span>")
            return False
        c = self.space.config
        self.info.setText(f"{c.image_size}×{c.image_size}×{c.image_channels} ↔ {c.latent_channels}×{c.latent_size}×"
                          f"{c.latent_size} (f = {c.factor}); the image is resized to {c.image_size} px")
        self._invalidate()
        return True

    def _on_toggled(self, on: bool) -> None:
        if on and self.space is None:
            spec = self.combo.itemData(self.combo.currentIndex())
            if spec is None or not self.load(spec):
                if spec is None:
                    self.info.setText("Choose an autoencoder (Open autoencoder…): none is shipped or chosen yet")
                self.check.setChecked(False)
                return
        self.row.setVisible(on)
        self.panel.layout().setStretchFactor(self, 3 if on else 0)
        if on:
            self._on_t(self.panel.paper_t)

    # ---- showing ----------------------------------------------------------------------------------------------------
    def _invalidate(self, *_args) -> None:
        self.noising = None
        if self.check.isChecked():
            self._on_t(self.panel.paper_t)

    def _on_t(self, paper_t: int) -> None:
        if not self.check.isChecked() or self.space is None:
            return
        image = self.panel.state.image
        if image is None:
            self.z_pane.clear_image()
            self.dec_pane.clear_image()
            return
        if self.noising is None:
            self.noising = LatentNoising(self.space, image.x0, self.panel.state.schedule, seed=self.panel.seed)
        z, picture = self.noising.at(paper_t)
        c = z.shape[1]
        tiles = (z[0] / LATENT_SCALE).clamp(-1, 1).reshape(c, 1, *z.shape[-2:])
        self.z_pane.show_u8(to_uint8(make_grid(tiles, nrow=c, padding=1)))
        self.z_pane.set_title(f"z<sub>t</sub> channels, t = {paper_t}")
        self.dec_pane.show_u8(to_uint8(make_grid(picture)))
        self.dec_pane.set_title(f"decoder's picture of z<sub>t</sub>, t = {paper_t}")


def attach_latent(panel) -> LatentForward:
    view = LatentForward(panel)
    layout = panel.layout()
    layout.insertWidget(1, view)  # under the x_0 | ε | x_t panes
    return view
