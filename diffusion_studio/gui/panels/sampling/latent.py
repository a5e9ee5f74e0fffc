"""The Sampling view's "Latent" tab: a latent model's z_t itself, channel by channel (its frames are decoded in the
worker: jobs/frames.py)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from ....jobs.frames import EPS_SCALE, LatentFrame, RecordedFrame
from ...widgets.imageview import ImagePane

MIN_TILE_SCALE = 3  # a latent tile is shown at least 3× (an 8 × 8 latent as 24 px): the tab scrolls instead
NOTE = "The decoder runs once per shown frame (for z_t and the predicted x₀), not per step."
NOTE_TIP = ("A latent model: the UNet denoises the latent z_t (shown here channel by channel); the decoder "
            "D(z / scale) turns z_t and the predicted x̂₀ into the pictures in the panes. It runs only for the frames "
            "that are recorded and shown, not at every reverse step, so the pictures cost little.")


class LatentView(QWidget):
    """The Sampling view's "Latent" tab: z_t's channels at the frame shown, and what the panes mean for a latent
    model. For a pixel model it says there is no latent."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("latentView")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.pane = ImagePane("z_t channels", min_size=60)
        self.pane.setToolTip("The latent z_t the UNet denoises: one row per image (the first four), one column per "
                             "latent channel, shown as z/3 on grey (±3 std spans black to white)")
        self.note = QLabel("A latent model's z_t shows here.")
        self.note.setObjectName("latentNote")
        self.note.setWordWrap(True)
        self.scroll = QScrollArea()
        self.scroll.setObjectName("latentScroll")
        self.scroll.setWidget(self.pane)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.note)
        # Its size must not push the Sampling view's pane grid: the grid shares the height out evenly.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)

    def clear(self) -> None:
        """Before any frame of the model in use (another model was just chosen)."""
        self.pane.clear_image()
        self.pane.setMinimumSize(60, 60)
        self.pane.set_title("z_t channels")
        self.note.setText("A latent model's z_t shows here.")
        self.note.setToolTip("")

    def show_frame(self, f: RecordedFrame, panel=None) -> None:
        """Show frame ``f``'s latent; for a latent frame also retitle the panel's panes to say what they show."""
        if not isinstance(f, LatentFrame) or f.latent is None:
            self.pane.clear_image()
            self.pane.set_title("z_t channels (pixel model: none)")
            self.note.setText("A pixel model: no latent.")
            self.note.setToolTip("This model denoises pixels directly. Train one in an autoencoder's latent space "
                                 "(Training ▸ Space ▸ latent) to see its z_t here.")
            return
        self.pane.show_u8(f.latent)
        h, w = f.latent.shape[:2]
        self.pane.setMinimumSize(max(60, MIN_TILE_SCALE * w + 8), max(60, MIN_TILE_SCALE * h + 44))
        self.pane.set_title(f"z_t channels (t = {f.paper_t})" if not f.is_final else "z₀ channels, the sample")
        self.note.setText(NOTE)
        self.note.setToolTip(NOTE_TIP)
        if panel is not None:
            at = "none yet" if f.t_model is None else f"at t = {f.t_model + 1}"
            panel.x_pane.set_title("decoded z₀: the sample" if f.is_final else f"decoded z_t (t = {f.paper_t})")
            panel.x0_pane.set_title(f"decoded x̂₀ ({at})")
            panel.eps_pane.set_title(f"predicted ε channels ÷ {EPS_SCALE:g} ({at})")


def add_latent_tab(tabs) -> LatentView:
    view = LatentView()
    tabs.add_tab(view, "Latent", "A latent model's z_t, channel by channel; the panes show its decoded pictures",
                 applies=lambda loaded: loaded.is_latent)
    return view
