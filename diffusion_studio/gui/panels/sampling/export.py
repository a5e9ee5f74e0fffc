"""The Sampling panel's exports: the final samples as a PNG grid and the recorded frames as an animated GIF, with
their file dialogs (a mixin of SamplingPanel, which holds the frames)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from ....data.convert import save_gif, save_png
from ....data.enlarge import enlarge, integer_scale
from ....jobs.frames import gif_frames, gif_scale
from ...widgets.dialogs import remember, start_path
from ...widgets.export_labels import with_caption


class ExportMixin:
    """export_grid / export_gif (and their dialogs) over the panel's ``frames``; errors go to ``_error``."""

    def export_grid(self, path: str | Path) -> bool:
        """Save the last recorded frame's x (the final samples once a run has finished) as a PNG grid."""
        if not self.frames:
            self._error("Nothing to export yet: press ▶ Sample first")
            return False
        last = self.frames[-1]
        try:
            save_png(enlarge(last.x, integer_scale(last.x.shape)), path)  # a 4×4 grid of 16 px is 74 px: enlarged
        except (OSError, ValueError) as e:
            self._error(f"Could not save {Path(path).name}: {e}")
            return False
        note = "" if last.is_final else f" (sampling was stopped at t = {last.paper_t})"
        self.state.message.emit(f"Saved the samples grid to {Path(path).name}{note}")
        return True

    def export_gif(self, path: str | Path, fps: float | None = None, with_x0: bool | None = None) -> bool:
        """Save the recorded frames (x_t, or x_t | x̂₀) as an animated GIF, enlarged by nearest neighbour."""
        if not self.frames:
            self._error("Nothing to export yet: press ▶ Sample first")
            return False
        with_x0 = self.gif_x0_check.isChecked() if with_x0 is None else with_x0
        frames = gif_frames(self.frames, with_x0=with_x0)
        try:
            scale = gif_scale(frames[0].shape[1])
            frames = [with_caption(f, f"t = {rec.paper_t}", scale) for f, rec in zip(frames, self.frames)]
            save_gif(frames, path, fps=fps or self.player_bar.fps_spin.value(), scale=1)
        except (OSError, ValueError) as e:
            self._error(f"Could not save {Path(path).name}: {e}")
            return False
        self.state.message.emit(f"Saved {len(frames)} frames to {Path(path).name}")
        return True

    def _save_dialog(self, caption: str, name: str, filt: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, caption, start_path(self.settings, name), filt)
        if path:
            self.chooser.last_dir = str(Path(path).parent)
            remember(self.settings, path)
        return path

    def export_grid_dialog(self) -> None:
        if not self.frames:
            self._error("Nothing to export yet: press ▶ Sample first")
            return
        path = self._save_dialog("Export samples grid", "samples.png", "PNG image (*.png)")
        if path:
            self.export_grid(path)

    def export_gif_dialog(self) -> None:
        if not self.frames:
            self._error("Nothing to export yet: press ▶ Sample first")
            return
        path = self._save_dialog("Export sampling animation", "sampling.gif", "GIF animation (*.gif)")
        if path:
            self.export_gif(path)
