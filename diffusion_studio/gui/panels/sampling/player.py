"""Playback over recorded sampling frames: a timer that skips frames when late, and the Play/Step/scrubber bar."""
from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QHBoxLayout, QLabel, QPushButton, QSlider, QSpinBox,
                               QStyle, QVBoxLayout, QWidget)

MAX_TICK_HZ = 60


class FramePlayer(QObject):
    """Plays indices 0..count−1 at ``fps``. Like pyqtgraph's ImageView, each tick computes the index from the time
    elapsed since play started × fps, so a slow display skips frames instead of falling behind."""

    index_changed = Signal(int)
    playing_changed = Signal(bool)

    def __init__(self, count: Callable[[], int], parent: QObject | None = None):
        super().__init__(parent)
        self._count = count
        self.index = 0
        self.fps = 15.0
        self.loop = False
        self.shown = 0            # frames shown by playback since the last play() (tests: fewer than played = skips)
        self._anchor = (0.0, 0)   # (perf_counter at play/seek, index then)
        self.timer = QTimer(self)
        self.timer.setObjectName("samplingPlaybackTimer")
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def set_fps(self, fps: float) -> None:
        self.fps = max(0.1, float(fps))
        self.timer.setInterval(max(1000 // MAX_TICK_HZ, int(1000 / self.fps)))
        if self.playing:
            self._anchor = (time.perf_counter(), self.index)

    def play(self) -> None:
        n = self._count()
        if n < 2 or self.playing:
            return
        if self.index >= n - 1:
            self._set(0)
        self.shown = 0
        self._anchor = (time.perf_counter(), self.index)
        self.set_fps(self.fps)
        self.timer.start()
        self.playing_changed.emit(True)

    def pause(self) -> None:
        if self.playing:
            self.timer.stop()
            self.playing_changed.emit(False)

    def seek(self, index: int) -> None:
        """Show ``index`` (clamped); while playing, playback continues from there."""
        n = self._count()
        self._set(max(0, min(int(index), n - 1)) if n else 0)
        self._anchor = (time.perf_counter(), self.index)

    def step(self, delta: int) -> None:
        self.pause()
        self.seek(self.index + delta)

    def _set(self, index: int) -> None:
        if index != self.index:
            self.index = index
            self.index_changed.emit(index)

    def _tick(self) -> None:
        n = self._count()
        t0, i0 = self._anchor
        target = i0 + int((time.perf_counter() - t0) * self.fps)
        if target >= n - 1 and not self.loop:
            self._set(max(0, n - 1))
            self.shown += 1
            self.pause()
            return
        if n:
            target %= n
        if target != self.index:
            self._set(target)
            self.shown += 1


class PlayerBar(QWidget):
    """Step back · Play/Pause · Step forward · the frame scrubber · fps · loop, driving a FramePlayer.

    ``frame_selected(i)`` fires whenever the shown frame changes (playback, steps, scrubbing or ``show_index``);
    ``user_interacted`` when the user touches a control (the panel then stops following the live frame)."""

    frame_selected = Signal(int)
    user_interacted = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._n = 0
        self.player = FramePlayer(lambda: self._n, self)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        lay, row2 = QHBoxLayout(), QHBoxLayout()
        outer.addLayout(lay)
        outer.addLayout(row2)

        def button(text: str, name: str, tip: str) -> QPushButton:
            b = QPushButton(text)
            b.setObjectName(name)
            b.setToolTip(tip)
            lay.addWidget(b)
            return b

        self.first_button = button("", "firstFrameButton", "Show the first recorded frame, the pure noise x_T")
        self.first_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaSkipBackward))
        self.back_button = button("◀", "stepBackButton", "Show the previous recorded frame (one step less denoised)")
        self.play_button = button("▶ Play", "playButton", "Play the recorded frames from noise x_T to the sample x₀")
        self.play_button.setCheckable(True)
        self.forward_button = button("▶|", "stepForwardButton", "Show the next recorded frame (one step more denoised)")
        self.back_button.setText("|◀")
        self.last_button = button("", "lastFrameButton", "Show the last recorded frame, the sample x₀")
        self.last_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaSkipForward))
        for b in (self.first_button, self.last_button):
            b.setFixedWidth(30)
        for b in (self.back_button, self.forward_button):
            b.setFixedWidth(34)
        self.play_button.setMinimumWidth(84)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("frameSlider")
        self.slider.setToolTip("Scrub through the recorded frames: left is pure noise x_T (t = T), right the sample x₀ (t = 0)")
        self.slider.setRange(0, 0)
        self.slider.setMinimumWidth(80)
        outer.insertWidget(0, self.slider)  # a row of its own: full width, and the bar stays narrow
        self.frame_label = QLabel("no frames")
        self.frame_label.setObjectName("frameLabel")
        self.frame_label.setToolTip("The recorded frame shown, out of all frames recorded")
        row2.addWidget(self.frame_label)
        row2.addStretch(1)
        lay = row2
        self.fps_spin = QSpinBox()
        self.fps_spin.setObjectName("fpsSpin")
        self.fps_spin.setRange(1, 500)
        self.fps_spin.setValue(15)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setAccessibleName("Speed")  # "15 fps" says it; a "Speed" label made the tab too wide for 1024 px
        self.fps_spin.setToolTip("Playback speed in recorded frames per second; when the display cannot keep up, "
                                 "frames are skipped so playback keeps time")
        lay.addWidget(self.fps_spin)
        self.loop_check = QCheckBox("Loop")
        self.loop_check.setObjectName("loopCheck")
        self.loop_check.setToolTip("Start again from x_T after the last frame")
        lay.addWidget(self.loop_check)

        self.back_button.clicked.connect(lambda: self._user(lambda: self.player.step(-1)))
        self.forward_button.clicked.connect(lambda: self._user(lambda: self.player.step(+1)))
        self.first_button.clicked.connect(lambda: self._user(lambda: self.player.step(-self._n)))
        self.last_button.clicked.connect(lambda: self._user(lambda: self.player.step(+self._n)))
        self.play_button.clicked.connect(lambda: self._user(self.toggle_play))
        self.slider.actionTriggered.connect(lambda _a: self.user_interacted.emit())
        self.slider.sliderPressed.connect(self.user_interacted.emit)
        self.slider.valueChanged.connect(self._on_slider)
        self.fps_spin.valueChanged.connect(lambda v: self.player.set_fps(v))
        self.loop_check.toggled.connect(lambda on: setattr(self.player, "loop", on))
        self.player.index_changed.connect(self.slider.setValue)
        self.player.playing_changed.connect(self._on_playing)
        self.player.set_fps(self.fps_spin.value())
        self.set_count(0)

    @property
    def count(self) -> int:
        return self._n

    @property
    def index(self) -> int:
        return self.slider.value()

    def _user(self, action) -> None:
        self.user_interacted.emit()
        action()

    def toggle_play(self) -> None:
        if self.player.playing:
            self.player.pause()
        else:
            self.player.play()
        self._on_playing(self.player.playing)

    def play(self) -> None:
        self.player.play()

    def pause(self) -> None:
        self.player.pause()

    def set_count(self, n: int) -> None:
        """The number of recorded frames changed (grew while sampling, or 0 for a new run)."""
        self._n = n
        self.slider.setMaximum(max(0, n - 1))
        for w in (self.first_button, self.back_button, self.forward_button, self.last_button, self.slider):
            w.setEnabled(n > 0)
        self.play_button.setEnabled(n > 1)
        if n == 0:
            self.player.pause()
            self.player.index = 0
        self._update_label()

    def show_index(self, i: int) -> None:
        """Select frame ``i`` from code (the live view follows the newest frame this way); always emits
        ``frame_selected``, also when ``i`` is already selected (its pixels may be new)."""
        i = max(0, min(int(i), self._n - 1))
        if self.slider.value() != i:
            self.slider.setValue(i)  # → _on_slider → player.seek + frame_selected
        else:
            self.player.seek(i)
            self._update_label()
            self.frame_selected.emit(i)

    def _on_slider(self, v: int) -> None:
        if v != self.player.index:
            self.player.seek(v)
        self._update_label()
        self.frame_selected.emit(v)

    def _on_playing(self, playing: bool) -> None:
        self.play_button.setChecked(playing)
        # U+23F8 (⏸) is missing from the DejaVu fonts the install provides: Qt's own pause icon always draws
        self.play_button.setText("Pause" if playing else "▶ Play")
        self.play_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPause) if playing
                                 else QIcon())

    def _update_label(self) -> None:
        self.frame_label.setText(f"frame {self.slider.value() + 1} / {self._n}" if self._n else "no frames")


class PaneGrid(QWidget):
    """Lays its square image panes out in the number of columns that makes them largest for the space given:
    side by side when wide, 2 × 2 when the docks leave a narrow, tall centre."""

    def __init__(self, panes: list[QWidget], parent: QWidget | None = None):
        super().__init__(parent)
        self.panes = panes
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(4)
        self.columns = 0
        self._arrange(len(panes))
        # It re-arranges into fewer columns when narrow, so its minimum is two columns' (not all panes in a row:
        # that made the window wider than a 1280-px screen).
        side = max(max(p.minimumWidth(), p.minimumSizeHint().width()) for p in panes)
        self.setMinimumWidth(2 * side + self._grid.spacing())

    def best_columns(self, width: int, height: int) -> int:
        n = len(self.panes)
        best, best_side = n, -1.0
        for cols in range(n, 0, -1):  # fewer columns only when that makes the panes clearly (10 %) larger
            rows = -(-n // cols)
            side = min(width / cols, height / rows)
            if side > best_side * 1.1:
                best, best_side = cols, side
        return best

    def _arrange(self, cols: int) -> None:
        if cols == self.columns:
            return
        self.columns = cols
        for p in self.panes:
            self._grid.removeWidget(p)
        for c in range(len(self.panes)):
            self._grid.setColumnStretch(c, 1 if c < cols else 0)
            self._grid.setRowStretch(c, 1 if c < -(-len(self.panes) // cols) else 0)
        for i, p in enumerate(self.panes):
            self._grid.addWidget(p, i // cols, i % cols)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._arrange(self.best_columns(event.size().width(), event.size().height()))
