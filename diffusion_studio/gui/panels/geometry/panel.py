"""The 2-D tab: diffusion on points, where the whole distribution, every particle's path and the field that moves it
can be seen. The same engine as the images (schedule, trainer, samplers, guidance); the work runs in workers
(jobs/geometry.py) and the t slider means what it means everywhere (the app's t and Schedule)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog

from ....data.errors import DataError
from ....data.points import PointDataset, PointSet, make_toy
from ....jobs.geometry import lab as geometry
from ....jobs.geometry.outputs import bounds as data_bounds
from ...widgets.dialogs import remember, start_path
from ...workers import GeneratorWorker
from ..base import Panel
from .ui import build
from .views import narrow_title

FRAME_MS = 40
REPLAY_S = 4.0      # a replay lasts this long, however many frames a run recorded


class GeometryPanel(Panel):
    """Data (a toy, a CSV, or drawn), the cloud noised at t, the field at t, SDE and ODE paths side by side."""

    title = "2-D"
    settings_group = "geometry"

    def __init__(self, state, pool, settings, parent=None):
        super().__init__(state, pool, settings, parent)
        self.set: PointSet | None = None
        self.dataset: PointDataset | None = None
        self.model = None                 # the trained EMA MLP (standardised units)
        self.trainer = None
        self.model_schedule = None
        self.worker: GeneratorWorker | None = None
        self.path_worker: GeneratorWorker | None = None
        self.losses: tuple[list[int], list[float]] = ([], [])
        self.runs: dict[str, np.ndarray] = {}       # "sde"/"ode" → (frames, N, 2) in data units
        self.frame = 0
        build(self)
        self.timer = QTimer(self)
        self.timer.setInterval(FRAME_MS)
        self.timer.timeout.connect(self._advance)
        state.t_changed.connect(lambda _t: self.redraw_t())
        state.schedule_changed.connect(lambda _s: self.redraw_t())
        self.load_toy()

    # ---- data ---------------------------------------------------------------------------------------------------
    def load_source(self) -> None:
        key = self.source_combo.currentData()
        if key == "csv":
            path, _ = QFileDialog.getOpenFileName(self, "Open points", start_path(self.settings), "CSV (*.csv)")
            if not path:
                return
            remember(self.settings, path)
            self.load_csv(path)
        elif key == "drawn":
            self.draw_check.setChecked(True)
        else:
            self.load_toy()

    def load_toy(self) -> None:
        key = self.source_combo.currentData() or "toy:moons"
        spec = f"toy:text:{self.word_edit.text().strip() or 'DDPM'}" if key == "toy:text" else key
        try:
            self.set_points(make_toy(spec, n=self.n_spin.value(), seed=0), spec)
        except DataError as e:
            self.data_label.setText(str(e))

    def load_csv(self, path: str) -> list[str]:
        from ....data.points_csv import load_points_csv

        try:
            points, problems = load_points_csv(path)
        except DataError as e:
            self.data_label.setText(str(e))
            self.state.message.emit(str(e))
            return [str(e)]
        self.set_points(points, path)
        if problems:
            self.data_label.setText(self.data_label.text() + f" · {len(problems)} bad rows skipped: {problems[0]}")
        return problems

    def set_points(self, points: PointSet, spec: str) -> None:
        self.set, self.spec = points, spec
        self.dataset = PointDataset(points, spec) if len(points) >= 2 else None
        self.model = None
        self.runs = {}
        self.label_combo.clear()
        self.label_combo.addItem("all (unconditional)", None)
        for i, name in enumerate((self.dataset.class_names or []) if self.dataset is not None else []):
            self.label_combo.addItem(f"{i}: {name}", i)
        labelled = self.dataset is not None and self.dataset.labels is not None
        self.class_check.setEnabled(labelled)
        self.class_check.setChecked(labelled and self.class_check.isChecked())
        n = len(points)
        classes = f", {points.num_classes} classes" if points.labels is not None else ""
        self.data_label.setText(f"{spec}: {n:,} points{classes}")
        self.train_label.setText("No model yet: Train one (seconds), or look at the ideal denoiser's field.")
        for plot in (self.sde, self.ode):
            plot.show_frame(None, 0)
            plot.show_grid(None)
            plot.show_density(None, None)
            plot.show_start_paths(None, {})
        self.quality_label.setText("")
        self.redraw_t()

    def clear_points(self) -> None:
        self.set_points(PointSet(np.zeros((0, 2), np.float32)), "drawn")

    def _mouse(self, scene_pos) -> None:
        if not self.draw_check.isChecked() or not (QApplication.mouseButtons() & Qt.MouseButton.LeftButton):
            return
        if not self.cloud.sceneBoundingRect().contains(scene_pos):
            return
        p = self.cloud.vb.mapSceneToView(scene_pos)
        self.paint(p.x(), p.y())

    def _clicked(self, event) -> None:
        pos = event.scenePos()
        if self.draw_check.isChecked() and self.cloud.sceneBoundingRect().contains(pos):
            p = self.cloud.vb.mapSceneToView(pos)
            self.paint(p.x(), p.y())
        elif self.ode.sceneBoundingRect().contains(pos) and self.dataset is not None:
            p = self.ode.vb.mapSceneToView(pos)
            self.start_point_paths(p.x(), p.y())

    def paint(self, x: float, y: float, k: int = 6) -> None:
        """Add k points around (x, y) within the brush (or erase those within it), in data units."""
        r = self.brush_spin.value()
        pts = self.set.points if self.set is not None else np.zeros((0, 2), np.float32)
        if self.erase_check.isChecked():
            keep = ((pts - np.array([x, y])) ** 2).sum(1) > r * r
            pts = pts[keep]
        else:
            rng = np.random.default_rng()
            ang, rad = rng.uniform(0, 2 * np.pi, k), r * np.sqrt(rng.uniform(0, 1, k))
            new = np.stack([x + rad * np.cos(ang), y + rad * np.sin(ang)], 1).astype(np.float32)
            pts = np.concatenate([pts, new])
        self.set_points(PointSet(pts.astype(np.float32)), "drawn")

    def save_points_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save points", start_path(self.settings, "points.csv"),
                                              "CSV (*.csv)")
        if path:
            remember(self.settings, path)
            self.save_points(path)

    def save_points(self, path: str | Path) -> None:
        from ....data.points_csv import save_points_csv

        s = self.set
        save_points_csv(path, s.points, s.labels, s.class_names)
        self.state.message.emit(f"Saved {len(s):,} points to {path}")

    # ---- t ------------------------------------------------------------------------------------------------------
    @property
    def schedule(self):
        return self.model_schedule or self.state.schedule

    def _bounds(self) -> tuple[float, float, float, float]:
        clouds = [self.set.points] if self.set is not None and len(self.set) else [np.array([[-1.0, -1.0], [1, 1]])]
        return data_bounds(*clouds, margin=0.25)

    def redraw_t(self) -> None:
        T = self.schedule.T
        self.t_slider.blockSignals(True)
        self.t_slider.setRange(0, T)
        self.t_slider.setValue(self.state.t + 1)
        self.t_slider.blockSignals(False)
        paper_t = max(0, min(self.state.t + 1, T))
        i = max(0, paper_t - 1)
        ab = float(self.schedule.alpha_bars[i]) if paper_t else 1.0
        self.t_label.setText(f"t = {paper_t} / {T} · √ᾱ_t = {ab ** 0.5:.3f}")
        if self.dataset is None:
            self.cloud.show_data(self.set.points if self.set is not None else None)
            self.cloud.show_points(None)
            return
        std = self.dataset.standardiser
        x_t = geometry.noised(self.dataset.points, self.schedule, paper_t, seed=0)
        self.cloud.show_data(self.set.points)
        self.cloud.show_points(np.asarray(std.inverse(x_t.double().numpy())) if paper_t else None)
        self.marg_x.show_values(x_t[:, 0].numpy())
        self.marg_y.show_values(x_t[:, 1].numpy())
        b = self._bounds()
        for plot in (self.cloud, self.field_plot, self.sde, self.ode):
            plot.fit(b)
        self.field_plot.show_data(self.set.points)
        for plot in (self.sde, self.ode):
            plot.show_data(self.set.points)
        self.redraw_field()

    def _grid(self) -> tuple[torch.Tensor, np.ndarray]:
        """The field's grid points: standardised (for the models) and in data units (to draw)."""
        std = self.dataset.standardiser
        x0, x1, y0, y1 = self._bounds()
        lo = std.forward(np.array([[x0, y0]]))[0]
        hi = std.forward(np.array([[x1, y1]]))[0]
        g = geometry.grid((lo[0], hi[0], lo[1], hi[1]), 17)
        return g, np.asarray(std.inverse(g.double().numpy()))

    def redraw_field(self) -> None:
        if self.dataset is None:
            return
        paper_t = max(1, min(self.state.t + 1, self.schedule.T))
        g, g_data = self._grid()
        kind, which = self.kind_combo.currentData(), self.field_combo.currentData()
        std = torch.as_tensor(self.dataset.standardiser.std, dtype=torch.float32)
        vectors: dict[str, np.ndarray] = {}
        learned = ideal = None
        if self.model is not None and which in ("learned", "both", "difference"):
            learned = geometry.field(geometry.network_eps(self.model, self.schedule), self.schedule, paper_t, g, kind)
        if which in ("ideal", "both", "difference") and len(self.dataset) <= 20_000:
            eps = geometry.ideal_eps(self.dataset.points, self.schedule)
            ideal = geometry.field(eps, self.schedule, paper_t, g, kind)
        if learned is not None and which in ("learned", "both"):
            vectors["learned"] = (learned * std).numpy()
        if ideal is not None and which in ("ideal", "both"):
            vectors["ideal"] = (ideal * std).numpy()
        if learned is not None and ideal is not None and which == "difference":
            vectors["difference"] = ((learned - ideal) * std).numpy()
        span = max(self._bounds()[1] - self._bounds()[0], 1e-9)
        longest = max((float(np.linalg.norm(v, axis=1).max()) for v in vectors.values()), default=1.0)
        self.field_plot.show_field(g_data, vectors, scale=0.08 * span / max(longest, 1e-9))
        title = {"score": "score", "x0": "<i>x̂</i>₀ − x_t"}[kind]
        narrow_title(self.field_plot, f"{title} at t = {paper_t} ({which})")
        self.field_plot.setToolTip("The field at the slider's t over a grid; arrows are scaled to fit the view. "
                                   "score = −ε̂/√(1−ᾱ_t), the direction of steepest rise of log p_t(x_t)")

    # ---- training -------------------------------------------------------------------------------------------------
    def start_training(self) -> GeneratorWorker | None:
        if self.worker is not None or self.dataset is None:
            return None
        self.model_schedule = self.state.schedule
        self.losses = ([], [])
        g, _ = self._grid()
        paper_t = lambda: max(1, min(self.state.t + 1, self.model_schedule.T))  # noqa: E731
        factory = lambda: geometry.train_points(  # noqa: E731
            self.dataset, self.model_schedule, steps=self.steps_spin.value(),
            class_conditional=self.class_check.isChecked(), field_t=paper_t, field_at=g)
        worker = GeneratorWorker(factory, name="trainPoints")
        worker.yielded.connect(self._on_train_item)
        worker.returned.connect(self._on_trained)
        worker.errored.connect(self.show_error)
        worker.finished.connect(self._train_done)
        self.worker = worker
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.state.set_busy("points", "Training the 2-D model")
        self.pool.start(worker)
        return worker

    def _on_train_item(self, item) -> None:
        if isinstance(item, geometry.FieldSnapshot):
            std = self.dataset.standardiser
            at = np.asarray(std.inverse(item.at.astype(np.float64)))
            v = item.vectors * std.std
            span = max(self._bounds()[1] - self._bounds()[0], 1e-9)
            self.field_plot.show_field(at, {"learned": v}, 0.08 * span / max(float(np.linalg.norm(v, axis=1).max()),
                                                                             1e-9))
            return
        steps, losses = self.losses
        steps.append(item.step)
        losses.append(item.loss)
        if item.step % 10 == 0 or item.done:
            self.loss_plot.show_losses(steps, losses)
            self.train_label.setText(f"step {item.step} / {item.total_steps} · loss {item.loss:.4f} · "
                                     f"{item.elapsed_s:.1f} s")

    def _on_trained(self, trainer) -> None:
        self.trainer = trainer
        self.model = trainer.ema.eval()
        self.train_label.setText(f"Trained {trainer.step} steps in {trainer.elapsed_s:.1f} s · last loss "
                                 f"{trainer.last_loss:.4f}. Sample paths to see where it sends noise.")
        self.redraw_field()

    def _train_done(self) -> None:
        if self.worker is not None:
            self.worker.wait(2000)
        self.worker = None
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.state.set_busy("points", None)

    def stop(self) -> None:
        for w in (self.worker, self.path_worker):
            if w is not None:
                w.abort()

    def save_model_dialog(self) -> None:
        if self.trainer is None:
            self.show_error("Train a model first: nothing to save yet.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Save the 2-D model into a folder", start_path(self.settings))
        if folder:
            remember(self.settings, folder)
            path = self.trainer.save(Path(folder) / "checkpoint.json")
            self.state.message.emit(f"Saved the 2-D model to {path}")

    # ---- paths -----------------------------------------------------------------------------------------------------
    def _eps(self):
        if self.model_combo.currentData() == "ideal" or self.model is None:
            label = self.label_combo.currentData()
            return geometry.ideal_eps(self.dataset.points, self.schedule, self.dataset.labels, label)
        return geometry.network_eps(self.model, self.schedule, self.label_combo.currentData(), self.w_spin.value())

    def start_paths(self) -> GeneratorWorker | None:
        if self.dataset is None or self.path_worker is not None:
            return None
        eps, schedule, n = self._eps(), self.schedule, self.particles_spin.value()
        ode, steps = self.ode_combo.currentData(), self.ode_steps.value()
        std, data = self.dataset.standardiser, self.set.points
        want_grid = self.grid_check.isChecked()
        centres, sigma = self.set.centres, self.set.sigma
        b = self._bounds()
        lo, hi = std.forward(np.array([[b[0], b[2]]]))[0], std.forward(np.array([[b[1], b[3]]]))[0]

        def run():
            x_T = torch.randn((n, 2), generator=torch.Generator().manual_seed(0))
            finals = {}
            for key, sampler, k in (("sde", "ddpm", schedule.T), ("ode", ode, steps)):
                frames, _ = geometry.paths(eps, schedule, x_T, sampler, k)
                if len(frames) > 120:  # keep ~120 frames of a long DDPM run for playback
                    idx = np.unique(np.linspace(0, len(frames) - 1, 120).round().astype(int))
                    frames = frames[idx]
                pts = np.asarray(std.inverse(frames.reshape(-1, 2).astype(np.float64))).reshape(frames.shape)
                finals[key] = pts[-1]
                yield key, pts
            if want_grid:
                lines = geometry.warped_grid(eps, schedule, (lo[0], hi[0], lo[1], hi[1]), steps=steps)
                yield "grid", np.asarray(std.inverse(lines.reshape(-1, 2).astype(np.float64))).reshape(lines.shape)
            yield "quality", {key: geometry.quality(final, data, centres, sigma) for key, final in finals.items()}

        worker = GeneratorWorker(run, name="pointPaths")
        worker.yielded.connect(self._on_paths)
        worker.errored.connect(self.show_error)
        worker.finished.connect(self._paths_done)
        self.path_worker = worker
        self.run_button.setEnabled(False)
        self.state.set_busy("paths", "Sampling 2-D paths")
        self.pool.start(worker)
        return worker

    def _on_paths(self, item) -> None:
        key, value = item
        if key == "grid":
            self.ode.show_grid(value)
        elif key == "quality":
            names = {"sde": "DDPM", "ode": self.ode_combo.currentText()}
            self.quality_label.setText("<br>".join(f"<b>{names[k]}</b>: {q.describe()}" for k, q in value.items()))
        else:
            self.runs[key] = value
            narrow_title(self.ode, f"{self.ode_combo.currentData()}, {self.ode_steps.value()} steps")
            if len(self.runs) == 2:
                self.replay()
                self._show_density()

    def _paths_done(self) -> None:
        if self.path_worker is not None:
            self.path_worker.wait(2000)
        self.path_worker = None
        self.run_button.setEnabled(True)
        self.state.set_busy("paths", None)

    def replay(self) -> None:
        if not self.runs:
            return
        self._started = time.perf_counter()
        self.timer.start()

    def _advance(self) -> None:
        """The frame the clock says (a late redraw skips frames rather than slowing the replay down)."""
        progress = min(1.0, (time.perf_counter() - self._started) / REPLAY_S)
        for key, plot in (("sde", self.sde), ("ode", self.ode)):
            frames = self.runs.get(key)
            if frames is not None:
                plot.show_frame(frames, int(round(progress * (len(frames) - 1))))
        if progress >= 1.0:
            self.timer.stop()

    def _show_density(self) -> None:
        b = self._bounds()
        for key, plot in (("sde", self.sde), ("ode", self.ode)):
            frames = self.runs.get(key)
            dens = geometry.density(frames[-1], b) if frames is not None and self.density_check.isChecked() else None
            plot.show_density(dens, b)

    def start_point_paths(self, x: float, y: float) -> None:
        """The path of one start point x_T (where clicked) under each sampler, drawn on the ODE view."""
        if self.dataset is None:
            return
        std = self.dataset.standardiser
        start = torch.as_tensor(std.forward(np.array([[x, y]])), dtype=torch.float32)
        eps, schedule, steps = self._eps(), self.schedule, self.ode_steps.value()
        out = {}
        for sampler in geometry.PATH_SAMPLERS:
            frames, _ = geometry.paths(eps, schedule, start, sampler, schedule.T if sampler == "ddpm" else steps)
            out[sampler] = np.asarray(std.inverse(frames[:, 0].astype(np.float64)))
        self.ode.show_start_paths(np.array([x, y]), out)

    # ---- the window ----------------------------------------------------------------------------------------------
    def save_settings(self) -> None:
        self.set_setting("word", self.word_edit.text())
        self.set_setting("n", self.n_spin.value())

    def shutdown(self) -> None:
        self.timer.stop()
        self.stop()
