"""The Sampling view's "Compare" tab: several samplers from the same x_T at the same budget of model evaluations,
their final images and the path each one's x̂₀ took, side by side (the work: jobs/compare.py)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy,
                               QSpinBox, QVBoxLayout, QWidget)

from ....jobs.compare import CompareRow, compare_factory
from ...workers import GeneratorWorker

NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "heun": "Heun", "dpm++2m": "DPM-Solver++ 2M",
         "unipc": "UniPC", "euler_a": "Euler ancestral"}
DEFAULT_ON = ("ddim", "heun", "dpm++2m", "unipc", "ddpm")
TILE = 96     # px of the final-images tile; a path picture is TILE / 2


def pixmap(u8: np.ndarray, height: int) -> QPixmap:
    a = np.ascontiguousarray(u8)
    fmt = QImage.Format.Format_Grayscale8 if a.ndim == 2 else QImage.Format.Format_RGB888
    img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], fmt).copy()
    return QPixmap.fromImage(img).scaledToHeight(height, Qt.TransformationMode.FastTransformation)


class LabView(QWidget):
    """A sampler-lab tab whose Run button starts one background job at a time (BUSY names it in the status bar)."""

    BUSY = "lab"

    def launch(self, worker: GeneratorWorker, busy_text: str) -> GeneratorWorker:
        worker.errored.connect(self.panel._error)
        worker.finished.connect(self._done)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.panel.state.set_busy(self.BUSY, busy_text)
        self.panel.pool.start(worker)
        return worker

    def _done(self) -> None:
        if self.worker is not None:
            self.worker.wait(2000)
        self.worker = None
        self.run_button.setEnabled(True)
        self.panel.state.set_busy(self.BUSY, None)


class CompareView(LabView):
    """Pick samplers and a budget; Run draws one row per sampler: name and cost, final images, x̂₀ path."""

    BUSY = "compare"

    def __init__(self, panel, parent=None):
        super().__init__(parent)
        self.setObjectName("compareView")
        self.panel = panel
        self.worker: GeneratorWorker | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.checks: dict[str, QCheckBox] = {}
        for key, name in NAMES.items():
            box = QCheckBox(name.replace("DPM-Solver++ 2M", "DPM++ 2M").replace("Euler ancestral", "Euler a"))
            box.setObjectName(f"compare_{key}")
            box.setChecked(key in DEFAULT_ON)
            self.checks[key] = box
        self.check_grid = grid = QGridLayout()
        self._columns = 0
        self._lay_out_checks(4)
        top.addLayout(grid, 1)
        lay.addLayout(top)
        row = QHBoxLayout()
        row.addWidget(QLabel("Evaluations"))
        self.evals_spin = QSpinBox()
        self.evals_spin.setObjectName("compareEvals")
        self.evals_spin.setRange(1, 1000)
        self.evals_spin.setValue(10)
        self.evals_spin.setToolTip("The budget every sampler gets: N steps (Heun: the most steps whose 2N − 1 "
                                   "evaluations fit). DDPM at 10 evaluations is respaced DDPM; its 1,000 steps are the "
                                   "quality the others chase")
        row.addWidget(self.evals_spin)
        self.run_button = QPushButton("Compare")
        self.run_button.setObjectName("compareButton")
        self.run_button.setToolTip("Run every chosen sampler from the same x_T (the one the Seed field draws), so the "
                                   "differences are the samplers' alone")
        self.run_button.clicked.connect(self.start)
        row.addWidget(self.run_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.note = QLabel("The <i>x̂</i>₀ path: the first image's predicted x₀ after each step. A curved path in few big "
                           "steps lands off the data; the second-order solvers follow the ODE's curve.")
        self.note.setObjectName("compareNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.rows = QGridLayout()
        self.rows.setSpacing(4)
        holder = QWidget()
        holder.setLayout(self.rows)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        lay.addWidget(scroll, 1)
        self.results: list[CompareRow] = []
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)

    CHECK_WIDTH = 112  # px a sampler's check box needs with its name

    def _lay_out_checks(self, columns: int) -> None:
        """The sampler check boxes in as many columns as fit (the quadrant is narrow beside the docks)."""
        columns = max(1, min(4, columns))
        if columns == self._columns:
            return
        self._columns = columns
        for box in self.checks.values():
            self.check_grid.removeWidget(box)
        for i, box in enumerate(self.checks.values()):
            self.check_grid.addWidget(box, i // columns, i % columns)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self._lay_out_checks(event.size().width() // self.CHECK_WIDTH)
        super().resizeEvent(event)

    def chosen(self) -> list[str]:
        return [k for k, box in self.checks.items() if box.isChecked()]

    def start(self) -> GeneratorWorker | None:
        loaded = self.panel.loaded
        if loaded is None or self.worker is not None or not self.chosen():
            return None
        self.clear()
        base = self.panel.controls.job()
        if loaded.is_text:
            from .text import job_for

            base = job_for(self.panel, base)
        worker = GeneratorWorker(compare_factory(loaded, base, self.chosen(), self.evals_spin.value()),
                                 name="compareSamplers")
        self._for = loaded
        worker.yielded.connect(lambda row: self.add_row(row) if self.panel.loaded is self._for else None)
        return self.launch(worker, "Comparing samplers")

    def clear(self) -> None:
        self.results = []
        while self.rows.count():
            w = self.rows.takeAt(0).widget()
            if w is not None:
                w.deleteLater()

    def add_row(self, r: CompareRow) -> None:
        self.results.append(r)
        i = len(self.results) - 1
        name = QLabel(f"<b>{NAMES.get(r.sampler, r.sampler)}</b><br>{r.steps} steps · {r.evals} evals<br>"
                      f"{r.seconds:.2f} s")
        name.setObjectName(f"compareName_{r.sampler}")
        final, path = QLabel(), QLabel()
        final.setPixmap(pixmap(r.final, TILE))
        path.setPixmap(pixmap(r.path, TILE // 2))
        path.setToolTip("x̂₀ of the first image after steps " + ", ".join(map(str, r.path_steps)))
        path.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.rows.addWidget(name, i, 0)
        self.rows.addWidget(final, i, 1)
        self.rows.addWidget(path, i, 2)
        self.rows.setColumnStretch(2, 1)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.abort()
