"""The Training form's "Space" row: pixels, or latent with a shipped or opened autoencoder."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QFileDialog

from .forward_latent import shipped_autoencoders

PIXELS = "pixels"
OPEN = "open"


class SpaceRow(QComboBox):
    """pixels, or latent with one of the shipped autoencoders, or one opened from a folder."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("spaceCombo")
        self.setToolTip("Where diffusion runs: on the pixels, or on the latents of an autoencoder (trained in the "
                        "Autoencoder tab or shipped). A latent run encodes the dataset once, trains the UNet on the "
                        "small latents (much faster) and decodes what it shows; the image size is the autoencoder's.")
        self.addItem("pixels", PIXELS)
        for spec in shipped_autoencoders():
            self.addItem(f"latent ({spec})", spec)
        self.addItem("latent (open autoencoder…)", OPEN)
        self.activated.connect(self._on_activated)

    def _on_activated(self, index: int) -> None:
        if self.itemData(index) != OPEN:
            return
        folder = QFileDialog.getExistingDirectory(self, "Autoencoder folder (autoencoder.json)")
        if not folder:
            self.setCurrentIndex(0)
            return
        self.add_autoencoder(folder)

    def add_autoencoder(self, spec: str) -> None:
        """Offer ``spec`` (a folder or builtin:NAME) and select it."""
        i = self.findData(spec)
        if i < 0:
            i = self.count() - 1
            self.insertItem(i, f"latent ({spec})", spec)
        self.setCurrentIndex(i)

    def autoencoder(self) -> str | None:
        data = self.currentData()
        return None if data in (PIXELS, OPEN, None) else str(data)


def attach_space_row(form) -> SpaceRow:
    """Insert the "Space" row under "Data" in the Training form."""
    row = SpaceRow(form)
    form.layout().insertRow(1, "Space", row)
    form.space_row = row
    return row
