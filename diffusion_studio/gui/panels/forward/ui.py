"""The Forward process panel's widgets (a setupUi-style builder, to keep panel.py short)."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy,
                               QSlider, QSpinBox, QVBoxLayout, QWidget)

from ...widgets.imageview import ImagePane

FPS = 30
MAX_SEED = 2**31 - 1

FILM_FRAMES = 8


def film_paper_ts(T: int, n: int = FILM_FRAMES) -> list[int]:
    """Up to n distinct paper times evenly spaced from 0 (x_0) to T: each t once, so a short schedule (T = 2) gives
    the frames t = 0, 1, 2 rather than 0, 0, 1, 1, 1, 1, 2, 2."""
    n = max(2, min(int(n), int(T) + 1))
    return list(dict.fromkeys(round(k * T / (n - 1)) for k in range(n)))


def share_height(widget: QWidget) -> None:
    """Let the layout share the tab's height by the stretch factors, down to each widget's minimum: every such widget
    expands and asks for no more than its minimum. (With their own large size hints the image views took what they
    asked for, and the histogram was left at its minimum, ~20 px of plot, when the latent view was on.)"""
    widget.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    if hasattr(widget, "set_size_hint"):
        widget.set_size_hint(QSize(max(60, widget.minimumWidth()), max(1, widget.minimumHeight())))


def setup_ui(panel) -> None:
    """Create the panel's widgets as attributes and connect them to its slots."""
    lay = QVBoxLayout(panel)
    lay.setContentsMargins(6, 6, 6, 6)
    panes = QHBoxLayout()
    panel.x0_pane = ImagePane("x<sub>0</sub>")
    panel.x0_pane.setObjectName("x0Pane")
    panel.x0_pane.setToolTip("x₀: the clean image chosen in the Images panel (pixels scaled to [−1, 1]).")
    panel.noise_pane = ImagePane("ε ~ N(0, I)")
    panel.noise_pane.setObjectName("noisePane")
    panel.noise_pane.setToolTip("ε: one draw of standard Gaussian noise per pixel (shown as ε/3, so ±3σ fills "
                                "black…white). The seed fixes it.")
    panel.xt_pane = ImagePane("x<sub>t</sub>")
    panel.xt_pane.setObjectName("xtPane")
    panel.xt_pane.setToolTip("xₜ = √ᾱₜ·x₀ + √(1−ᾱₜ)·ε: the closed form q(xₜ | x₀), one scaled sum per pixel.")
    for p in (panel.x0_pane, panel.noise_pane, panel.xt_pane):
        share_height(p)
        panes.addWidget(p, 1)
    lay.addLayout(panes, 3)
    panel.hint_label = QLabel("Choose an image in the Images panel to see it noised.")
    panel.hint_label.setObjectName("hintLabel")
    panel.hint_label.hide()
    lay.addWidget(panel.hint_label)

    row = QHBoxLayout()
    panel.t_label = QLabel("t = 0")
    panel.t_label.setObjectName("tLabel")
    panel.t_label.setMinimumWidth(70)
    panel.slider = QSlider(Qt.Orientation.Horizontal)
    panel.slider.setObjectName("tSlider")
    panel.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
    panel.slider.setToolTip("The paper's t: 0 is the clean x₀, T is (almost) pure noise. "
                            "Keys: ←/→ step 1, PageUp/PageDown step T/10, Home/End jump to 0/T.")
    panel.slider.valueChanged.connect(panel._on_slider)
    panel.t_spin = QSpinBox()
    panel.t_spin.setObjectName("tSpin")
    panel.t_spin.setToolTip("Type a t (0 … T).")
    panel.t_spin.valueChanged.connect(panel._on_slider)
    panel.play_button = QPushButton("Play")
    panel.play_button.setObjectName("playButton")
    panel.play_button.setCheckable(True)
    panel.play_button.setToolTip("Animate t from where it is to T: the image dissolves into noise.")
    panel.play_button.toggled.connect(panel._on_play_toggled)
    panel.speed_spin = QSpinBox()
    panel.speed_spin.setObjectName("speedSpin")
    panel.speed_spin.setRange(1, 200)
    panel.speed_spin.setSuffix(" t/frame")
    panel.speed_spin.setToolTip(f"Playback speed: how many steps of t each frame advances ({FPS} frames/s).")
    row.addWidget(panel.t_label)
    row.addWidget(panel.slider, 1)
    row.addWidget(panel.t_spin)
    row.addWidget(panel.play_button)
    row.addWidget(panel.speed_spin)
    lay.addLayout(row)

    grid = QGridLayout()
    panel.sqrt_ab_label = QLabel()
    panel.sqrt_ab_label.setObjectName("sqrtAlphaBarLabel")
    panel.sqrt_ab_label.setToolTip("√ᾱₜ: how much of x₀ is left in xₜ (ᾱₜ = ∏ₛ≤ₜ (1 − βₛ)).")
    panel.sqrt_1mab_label = QLabel()
    panel.sqrt_1mab_label.setObjectName("sqrtOneMinusAlphaBarLabel")
    panel.sqrt_1mab_label.setToolTip("√(1−ᾱₜ): the standard deviation of the noise in xₜ.")
    panel.snr_label = QLabel()
    panel.snr_label.setObjectName("snrLabel")
    panel.snr_label.setToolTip("Signal-to-noise ratio ᾱₜ/(1−ᾱₜ): infinite at t = 0, near 0 at t = T.")
    for i, w in enumerate((panel.sqrt_ab_label, panel.sqrt_1mab_label, panel.snr_label)):
        w.setTextFormat(Qt.TextFormat.RichText)
        grid.addWidget(w, 0, i)

    panel.new_noise_button = QPushButton("New noise")
    panel.new_noise_button.setObjectName("newNoiseButton")
    panel.new_noise_button.setToolTip("Draw a fresh ε (picks a new random seed).")
    panel.new_noise_button.clicked.connect(panel.new_noise)
    panel.seed_spin = QSpinBox()
    panel.seed_spin.setObjectName("seedSpin")
    panel.seed_spin.setRange(0, MAX_SEED)
    panel.seed_spin.setPrefix("seed ")
    panel.seed_spin.setToolTip("The random seed of ε (and of the chain's per-step noise): same seed, same noise.")
    panel.chain_check = QCheckBox("Step-by-step chain")
    panel.chain_check.setObjectName("chainCheck")
    panel.chain_check.setToolTip(
        "Reach xₜ by t steps of q(xₜ | xₜ₋₁) = N(√αₜ xₜ₋₁, βₜ I), with fresh noise every step, instead of the "
        "closed form. Different draws, same distribution: the two look alike.")
    panel.chain_check.toggled.connect(panel._on_chain_toggled)
    nrow = QHBoxLayout()
    nrow.addWidget(panel.new_noise_button)
    nrow.addWidget(panel.seed_spin)
    nrow.addWidget(panel.chain_check)
    nrow.addStretch(1)
    grid.addLayout(nrow, 1, 0, 1, 3)
    lay.addLayout(grid)

    panel.chain_row = QWidget()
    crow = QHBoxLayout(panel.chain_row)
    crow.setContentsMargins(0, 0, 0, 0)
    crow.addWidget(QLabel("building chain…"))
    panel.chain_progress = QProgressBar()
    panel.chain_progress.setObjectName("chainProgress")
    panel.chain_progress.setFormat("step %v / %m")
    panel.chain_progress.setToolTip("The chain is walked once to t = T in the background; until then xₜ shows "
                                    "the closed form.")
    crow.addWidget(panel.chain_progress, 1)
    panel.chain_row.hide()
    lay.addWidget(panel.chain_row)

    panel.film_pane = ImagePane("Filmstrip", min_size=60)
    panel.film_pane.setMinimumHeight(110)
    panel.film_pane.setObjectName("filmstripPane")
    share_height(panel.film_pane)
    panel.film_pane.setToolTip("xₜ at evenly spaced t from 0 to T, with the same ε throughout.")
    lay.addWidget(panel.film_pane, 1)
    panel.error_label = QLabel("")
    panel.error_label.setObjectName("errorLabel")
    panel.error_label.setStyleSheet("color: #c0392b;")
    panel.error_label.hide()
    lay.addWidget(panel.error_label)

    panel.play_timer = QTimer(panel)
    panel.play_timer.setObjectName("playTimer")
    panel.play_timer.setInterval(round(1000 / FPS))
    panel.play_timer.timeout.connect(panel._on_play_tick)

