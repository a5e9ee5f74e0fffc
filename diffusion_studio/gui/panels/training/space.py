"""The Training form's "Space" row: pixels, or latent with a shipped or opened autoencoder."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QFileDialog

from ..forward.latent import shipped_autoencoders

PIXELS = "pixels"
OPEN = "open"
EMBEDDED = "@embedded"  # a continued latent run's own autoencoder, when its manifest names no source to reopen


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
        return None if data in (PIXELS, OPEN, EMBEDDED, None) else str(data)

    def show_checkpoint_space(self, latent: dict | None) -> None:
        """Show the space a checkpoint was trained in (its manifest's "latent" section, or None for pixels)."""
        if latent is None:
            self.setCurrentIndex(0)
            return
        source = latent.get("source")
        if isinstance(source, str) and source.strip():
            self.add_autoencoder(source)
            return
        fp = str(latent.get("fingerprint") or "")[:12]
        self.insertItem(self.count() - 1, f"latent (the run's own autoencoder {fp})".replace(" )", ")"), EMBEDDED)
        self.setCurrentIndex(self.count() - 2)

    def forget_checkpoint_space(self, data=None) -> None:
        """Back to the choice ``data`` (a fresh run), without the item a continued run's own autoencoder added."""
        i = self.findData(EMBEDDED)
        if i >= 0:
            self.removeItem(i)
        self.setCurrentIndex(max(0, self.findData(data if data not in (None, EMBEDDED, OPEN) else PIXELS)))

    def sync(self, _index: int = 0) -> None:
        """A latent space fixes the image size to its autoencoder's."""
        form = self.parent()
        if form is None or not hasattr(form, "size_spin"):
            return
        spec = self.autoencoder()
        size = autoencoder_size(spec) if spec else None
        form.size_spin.setEnabled(size is None and self.isEnabled())
        if size is not None:
            form.size_spin.setValue(size)
            form.size_spin.setToolTip(f"A latent run uses the autoencoder's image size, {size} px")
        else:
            form.size_spin.setToolTip(self.size_tip)


def autoencoder_size(spec: str) -> int | None:
    """The image side an autoencoder takes, from its manifest alone (None if it cannot be read)."""
    import json

    from ....core.io.autoencoder_io import resolve_autoencoder_spec

    try:
        meta = json.loads(resolve_autoencoder_spec(spec).read_text(encoding="utf-8"))
        return int(meta["autoencoder"]["image_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def attach_space_row(form) -> SpaceRow:
    """Insert the "Space" row under "Data" in the Training form; a latent space fixes the image size."""
    row = SpaceRow(form)
    row.size_tip = form.size_spin.toolTip()
    form.layout().insertRow(1, "Space", row)
    form.space_row = row
    row.currentIndexChanged.connect(row.sync)
    return row
