"""The Forward process panel: scrub t and watch x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, or the step-by-step chain."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QFileDialog

from ....core.diffusion.forward import ForwardScrubber
from ....data import save_png, to_uint8
from ...widgets.dialogs import remember, start_path
from ...widgets.export_labels import labelled_filmstrip
from ...workers import GeneratorWorker
from ..base import Panel
from ....jobs.chain import BuiltChain, ChainProgress, build_chain
from .extras import attach_extras
from .latent import attach_latent
from .ui import MAX_SEED, film_paper_ts, setup_ui

def _hwc(arr: np.ndarray) -> np.ndarray:
    return arr[:, :, None] if arr.ndim == 2 else arr


class ForwardPanel(Panel):
    """x_0, ε and x_t side by side for the t on the slider, a filmstrip over t, and playback."""

    title = "Forward process"
    settings_group = "forward"
    frame_shown = Signal(int)     # the paper's t of the x_t just drawn
    chain_ready = Signal()        # the step-by-step chain is built and x_t now comes from it

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self._scrubber: ForwardScrubber | None = None
        self._chain: BuiltChain | None = None
        self._chain_worker: GeneratorWorker | None = None
        self._chain_key = None
        self._x_t: torch.Tensor | None = None
        self._film: np.ndarray | None = None
        self._syncing = False
        self.display_range = 1.0   # x_0, ε and x_t share one colour mapping: [−L, L] → black…white
        setup_ui(self)
        attach_extras(self)  # colour scale and bar, pixel histogram, clickable filmstrip, x_T warning
        self.latent = attach_latent(self)  # noise in an autoencoder's latent space instead (latent.py)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.seed_spin.setValue(self.setting("seed", 0, int))
        self.speed_spin.setValue(self.setting("speed", 5, int))
        self.seed_spin.valueChanged.connect(self._on_seed_changed)
        state.t_changed.connect(self._on_t_changed)
        state.schedule_changed.connect(self._on_schedule_changed)
        state.image_changed.connect(self._on_image_changed)
        self._on_schedule_changed(state.schedule)

    # ---- layout ---------------------------------------------------------------------------------------------------
    # ---- state → widgets ------------------------------------------------------------------------------------------
    @property
    def paper_t(self) -> int:
        return self.state.t + 1

    def _on_schedule_changed(self, schedule) -> None:
        T = schedule.T
        self._syncing = True
        try:
            for w in (self.slider, self.t_spin):
                w.setRange(0, T)
                w.setValue(min(self.paper_t, T))
            self.slider.setPageStep(max(1, T // 10))
            self.slider.setTickInterval(max(1, T // 10))
            self.t_spin.setSuffix(f" / {T}")
        finally:
            self._syncing = False
        self._rebuild()

    def _on_image_changed(self, _image) -> None:
        self._rebuild()

    def _on_seed_changed(self, _seed: int) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        """A new image, seed or schedule: new ε, new filmstrip, and any chain built so far is stale."""
        image = self.state.image
        self._drop_chain()
        if image is None:
            self._scrubber = None
            self._film = None
            for p in (self.x0_pane, self.noise_pane, self.xt_pane, self.film_pane):
                p.clear_image()
            self.hint_label.show()
            self._render()
            return
        self.hint_label.hide()
        self._scrubber = ForwardScrubber(self.state.schedule, image.x0, seed=self.seed,
                                         display_range=self.display_range)
        self._show_x0_eps()
        if self.chain_check.isChecked():
            self._start_chain()
        self._render()
        self._render_film()

    def set_display_range(self, value: float) -> None:
        """Show x_0, ε and x_t with [−value, value] mapped to black…white (same ε, chain kept)."""
        self.display_range = float(value)
        if self._scrubber is not None:
            sc = self._scrubber
            self._scrubber = ForwardScrubber(sc.schedule, sc.x0, noise=sc.noise, display_range=self.display_range)
            self._show_x0_eps()
            self._render()
            self._render_film()

    def _show_x0_eps(self) -> None:
        image = self.state.image
        if self.display_range == 1.0:
            self.x0_pane.show_u8(np.ascontiguousarray(image.display))  # the image's own pixels, not a round trip
        else:
            self.x0_pane.show_u8(self._scrubber.frame_u8(-1).numpy().copy())
        name = image.name if len(image.name) <= 22 else image.name[:20] + "…"  # a long title would widen the pane
        self.x0_pane.set_title(f"x<sub>0</sub> — {name}")
        self.noise_pane.show_u8(self._scrubber.eps_u8().numpy())
        self.noise_pane.set_title(f"ε ~ N(0, I) — seed {self.seed}")

    def _on_t_changed(self, _t: int) -> None:
        self._syncing = True
        try:
            self.slider.setValue(self.paper_t)
            self.t_spin.setValue(self.paper_t)
        finally:
            self._syncing = False
        self._render()

    def _on_slider(self, value: int) -> None:
        if not self._syncing:
            self.state.set_t(value - 1)

    def set_paper_t(self, paper_t: int) -> None:
        """Move to the paper's t (0 … T)."""
        self.state.set_t(max(0, min(int(paper_t), self.state.schedule.T)) - 1)

    # ---- drawing --------------------------------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self.seed_spin.value()

    @property
    def using_chain(self) -> bool:
        """True when x_t on screen comes from the step-by-step chain (chain mode on and the chain built)."""
        return self.chain_check.isChecked() and self._chain is not None

    def _render(self) -> None:
        schedule = self.state.schedule
        # A new, shorter schedule is announced before state clamps t (its t_changed follows): clamp here too.
        t = min(self.state.t, schedule.T - 1)
        paper = t + 1
        self.t_label.setText(f"t = {paper}")
        sc = self._scrubber
        if sc is None:
            self._x_t = None
        elif self.using_chain and t >= 0:
            x = self._chain.cache.get(t)
            self._x_t = x
            self.xt_pane.show_u8(to_uint8(x / self.display_range))
            self.xt_pane.set_title(f"x<sub>t</sub>, t = {paper} (chain)")
        else:
            self._x_t = None
            self.xt_pane.show_u8(sc.frame_u8(t).numpy().copy())
            how = " (closed form)" if self.chain_check.isChecked() and t >= 0 else ""
            self.xt_pane.set_title(f"x<sub>t</sub>, t = {paper}{how}")
        if t < 0:
            a, b, snr = 1.0, 0.0, math.inf
        else:
            a = float(schedule.sqrt_alpha_bars[t])
            b = float(schedule.sqrt_one_minus_alpha_bars[t])
            snr = float(schedule.snr[t])
        self.sqrt_ab_label.setText(f"√ᾱ<sub>t</sub> = {a:.4f}")
        self.sqrt_1mab_label.setText(f"√(1−ᾱ<sub>t</sub>) = {b:.4f}")
        self.snr_label.setText("SNR = ᾱ<sub>t</sub>/(1−ᾱ<sub>t</sub>) = " + ("∞" if math.isinf(snr) else f"{snr:.4g}"))
        if sc is not None:
            self.frame_shown.emit(paper)

    def x_t(self) -> torch.Tensor | None:
        """The x_t on screen as a float tensor (C, H, W) in model units (from the chain in chain mode)."""
        if self._scrubber is None:
            return None
        if self._x_t is not None:
            return self._x_t
        # a new, shorter schedule is announced before the state clamps t (as in _render)
        return self._scrubber.x_t(min(self.state.t, self._scrubber.schedule.T - 1))

    def _render_film(self) -> None:
        sc = self._scrubber
        if sc is None:
            self._film = None
            return
        ts = film_paper_ts(self.state.schedule.T)
        frames = []
        for p in ts:
            if self.using_chain and p in self._chain.film and self.display_range == 1.0:
                frames.append(_hwc(self._chain.film[p]))
            elif self.using_chain and p >= 1:
                frames.append(_hwc(to_uint8(self._chain.cache.get(p - 1) / self.display_range)))
            else:
                frames.append(_hwc(sc.frame_u8(p - 1).numpy().copy()))
        h, _w, c = frames[0].shape
        gap = np.full((h, max(2, h // 32), c), 255, dtype=np.uint8)
        parts = []
        for i, f in enumerate(frames):
            parts += [gap, f] if i else [f]
        self._film = np.ascontiguousarray(np.concatenate(parts, axis=1))
        self.film_pane.show_u8(self._film)
        how = "step-by-step chain" if self.using_chain else "closed form"
        self.film_pane.set_title(f"Filmstrip ({how}): t = " + ", ".join(str(p) for p in ts))

    @property
    def filmstrip(self) -> np.ndarray | None:
        return self._film

    # ---- noise ----------------------------------------------------------------------------------------------------
    def new_noise(self) -> None:
        """Pick a new random seed, hence a new ε."""
        seed = self.seed
        while seed == self.seed:
            seed = random.randint(0, MAX_SEED)
        self.seed_spin.setValue(seed)

    # ---- the chain ------------------------------------------------------------------------------------------------
    def _on_chain_toggled(self, on: bool) -> None:
        if on and self._chain is None:
            self._start_chain()
        elif not on:
            self._drop_chain()
        self._render()
        self._render_film()

    def _start_chain(self) -> None:
        image = self.state.image
        if image is None or self._chain_worker is not None:
            return
        schedule, x0, seed = self.state.schedule, image.x0.clone(), self.seed
        key = (id(image), id(schedule), seed)
        self._chain_key = key
        ts = film_paper_ts(schedule.T)
        worker = GeneratorWorker(lambda: build_chain(key, schedule, x0, seed, ts, lambda: worker.abort_requested),
                                 name="forward: chain")
        self._chain_worker = worker
        worker.yielded.connect(self._on_chain_progress)
        worker.returned.connect(self._on_chain_built)
        worker.errored.connect(self._on_chain_error)
        worker.finished.connect(self._on_chain_finished)
        self.chain_progress.setRange(0, schedule.T)
        self.chain_progress.setValue(0)
        self.chain_row.show()
        self.state.set_busy(f"chain{id(self)}", "building the forward chain")
        self.pool.start(worker)

    def _drop_chain(self) -> None:
        self._chain = None
        self._chain_key = None
        if self._chain_worker is not None:
            self._chain_worker.abort()
            self._chain_worker = None
            self.chain_row.hide()
            self.state.set_busy(f"chain{id(self)}", None)

    @property
    def chain_building(self) -> bool:
        # The worker's `returned` (chain ready) arrives before its `finished`: a built chain means building is over.
        return self._chain_worker is not None and self._chain is None

    def _on_chain_progress(self, p: ChainProgress) -> None:
        if self.sender() is self._chain_worker:
            self.chain_progress.setValue(p.done)

    def _on_chain_built(self, built: BuiltChain | None) -> None:
        if self.sender() is not self._chain_worker or built is None or built.key != self._chain_key:
            return
        self._chain = built
        self.chain_row.hide()
        self._render()
        self._render_film()
        self.chain_ready.emit()

    def _on_chain_error(self, message: str) -> None:
        if self.sender() is self._chain_worker:
            self.error_label.setText(f"chain: {message}")
            self.error_label.show()
            self.state.message.emit(f"Forward process: {message}")

    def _on_chain_finished(self) -> None:
        if self.sender() is self._chain_worker:
            self._chain_worker = None
            self.chain_row.hide()
            self.state.set_busy(f"chain{id(self)}", None)

    # ---- playback -------------------------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self.play_timer.isActive()

    def play(self) -> None:
        self.play_button.setChecked(True)

    def pause(self) -> None:
        self.play_button.setChecked(False)

    def _on_play_toggled(self, on: bool) -> None:
        if on:
            if self.paper_t >= self.state.schedule.T:
                self.set_paper_t(0)
            self.play_timer.start()
            self.play_button.setText("Pause")
        else:
            self.play_timer.stop()
            self.play_button.setText("Play")

    def _on_play_tick(self) -> None:
        T = self.state.schedule.T
        nxt = min(T, self.paper_t + self.speed_spin.value())
        self.set_paper_t(nxt)
        if nxt >= T:
            self.pause()

    def hideEvent(self, event) -> None:
        self.pause()
        super().hideEvent(event)

    # ---- keyboard -------------------------------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        T = self.state.schedule.T
        page = max(1, T // 10)
        p = self.paper_t
        target = {Qt.Key.Key_Right: p + 1, Qt.Key.Key_Left: p - 1, Qt.Key.Key_Up: p + 1, Qt.Key.Key_Down: p - 1,
                  Qt.Key.Key_PageUp: p + page, Qt.Key.Key_PageDown: p - page,
                  Qt.Key.Key_Home: 0, Qt.Key.Key_End: T}.get(event.key())
        if target is not None:
            self.set_paper_t(target)
            event.accept()
        elif event.key() == Qt.Key.Key_Space:
            self.play_button.toggle()
            event.accept()
        else:
            super().keyPressEvent(event)

    # ---- export ---------------------------------------------------------------------------------------------------
    def export_filmstrip_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export filmstrip", start_path(self.settings, "filmstrip.png"),
                                              "PNG images (*.png)")
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            remember(self.settings, path)
            self.export_filmstrip(path)

    def export_filmstrip(self, path) -> Path | None:
        """Save the filmstrip as a PNG; returns the path, or None (with the reason shown) if it failed."""
        if self._film is None:
            self.error_label.setText("nothing to export: choose an image first")
            self.error_label.show()
            return None
        try:
            # each frame carries its t underneath (the gaps are those _render_film puts between frames)
            gap = max(2, self._film.shape[0] // 32)
            film = labelled_filmstrip(self._film, film_paper_ts(self.state.schedule.T), gap)
            out = save_png(film, path)
        except (OSError, ValueError) as exc:
            self.error_label.setText(f"could not save {Path(path).name}: {exc}")
            self.error_label.show()
            self.state.message.emit(f"Export failed: {exc}")
            return None
        self.error_label.hide()
        self.state.message.emit(f"Filmstrip saved to {out}")
        return out

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def save_settings(self) -> None:
        self.set_setting("seed", self.seed)
        self.set_setting("speed", self.speed_spin.value())

    def shutdown(self) -> None:
        self.pause()
        self.play_timer.stop()
        self._drop_chain()
