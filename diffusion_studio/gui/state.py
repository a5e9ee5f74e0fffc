"""The one shared state of the window (schedule, image, t, model, device) with change signals panels listen to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PySide6.QtCore import QObject, Signal

from ..core.diffusion.schedule import NoiseSchedule
from ..core.io.models import LoadedModel
from ..core.runtime.device import describe_device, resolve_device


@dataclass
class SelectedImage:
    """The image the forward panel noises: x_0 in model units and a uint8 copy for display."""

    name: str
    x0: torch.Tensor               # (C, H, W) float32 in [−1, 1]
    display: np.ndarray            # (H, W, C) uint8, C-contiguous
    source: str | None = None      # a file path or a dataset spec with index


class AppState(QObject):
    """Holds what several panels share; setters emit only on a real change, so panels can set freely."""

    schedule_changed = Signal(object)   # NoiseSchedule
    t_changed = Signal(int)             # schedule index −1..T−1 (the paper's t − 1; −1 is the clean x_0)
    image_changed = Signal(object)      # SelectedImage | None
    model_changed = Signal(object)      # LoadedModel | None
    dataset_changed = Signal(object)    # the Images panel's dataset selection: a spec string, or None
    busy_changed = Signal(str)          # what runs in the background, "" when idle (for the status bar)
    message = Signal(str)               # a transient line for the status bar
    reverse_t_changed = Signal(object)  # (paper t, T) of the sampling frame shown, or None: the Schedule dock follows

    def __init__(self, device: str = "auto", parent: QObject | None = None):
        super().__init__(parent)
        self.schedule: NoiseSchedule = NoiseSchedule.create("linear", 1000)
        self.t: int = -1  # index convention of core: the paper's t = index + 1, so −1 shows x_0 itself
        self.image: SelectedImage | None = None
        self.model: LoadedModel | None = None
        self.dataset_spec: str | None = None
        self.device: torch.device = resolve_device(device)
        self._busy: dict[str, str] = {}
        self.reverse_t: tuple[int, int] | None = None

    @property
    def device_description(self) -> str:
        return describe_device(self.device)

    def set_schedule(self, schedule: NoiseSchedule) -> None:
        if schedule == self.schedule:
            return
        self.schedule = schedule
        self.schedule_changed.emit(schedule)
        if self.t > schedule.T - 1:
            self.set_t(schedule.T - 1)

    def set_t(self, t: int) -> None:
        """Set the forward-process time as a schedule index (−1..T−1); ``paper_t`` is this + 1 (0..T)."""
        t = max(-1, min(int(t), self.schedule.T - 1))
        if t != self.t:
            self.t = t
            self.t_changed.emit(t)

    @property
    def paper_t(self) -> int:
        return self.t + 1

    def set_image(self, image: SelectedImage | None) -> None:
        if image is not self.image:
            self.image = image
            self.image_changed.emit(image)

    def set_model(self, model: LoadedModel | None) -> None:
        if model is not self.model:
            self.model = model
            self.model_changed.emit(model)

    def set_dataset(self, spec: str | None) -> None:
        if spec != self.dataset_spec:
            self.dataset_spec = spec
            self.dataset_changed.emit(spec)

    def set_reverse_t(self, paper_t: int | None, T: int | None = None) -> None:
        """The paper's t (0..T, of a schedule with T steps) of the reverse-sampling frame on screen; None: none."""
        value = None if paper_t is None else (int(paper_t), int(T if T is not None else self.schedule.T))
        if value != self.reverse_t:
            self.reverse_t = value
            self.reverse_t_changed.emit(value)

    def set_busy(self, key: str, text: str | None) -> None:
        """Register (text) or clear (None) one background activity; the status bar shows them all."""
        if text:
            self._busy[key] = text
        else:
            self._busy.pop(key, None)
        self.busy_changed.emit(" · ".join(self._busy.values()))

    def info(self) -> dict[str, Any]:
        return {"schedule": self.schedule.describe(), "t": self.t, "device": self.device_description,
                "image": self.image.name if self.image else None, "model": self.model.name if self.model else None}
