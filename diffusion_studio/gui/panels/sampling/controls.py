"""The Sampling panel's sampler settings: sampler, steps, η, images, seed, clip, preview interval, class + guidance."""
from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QSpinBox)

from ....core.io.space import is_latent_meta
from ....core.io.models import LoadedModel
from ....jobs.frames import auto_every
from ....jobs.sampling import SamplingJob

SAMPLERS = [("DDPM (σ² = β̃)", "ddpm", "beta_tilde"), ("DDPM (σ² = β)", "ddpm", "beta"), ("DDIM", "ddim", "beta_tilde"),
            ("Euler (ODE)", "euler", "beta_tilde"), ("Heun (ODE, 2nd order)", "heun", "beta_tilde"),
            ("DPM-Solver++ (2M)", "dpm++2m", "beta_tilde"), ("UniPC", "unipc", "beta_tilde"),
            ("Euler ancestral", "euler_a", "beta_tilde")]
ODE_SAMPLERS = ("euler", "heun", "dpm++2m", "unipc", "euler_a")
SPACINGS = [("linspace: T−1 … 0", "linspace"), ("leading: k·⌊T/N⌋", "leading"), ("trailing: from T−1", "trailing")]
SAMPLER_TIP = ("DDPM (Algorithm 2) adds fresh noise σ_t z at each step, with σ_t² = β̃_t (the true posterior "
               "variance) or β_t. DDIM takes a deterministic path (η = 0) in far fewer steps. The rest solve the "
               "probability-flow ODE dx̃/dσ = ε̂ (x̃ = x_t/√ᾱ_t, σ = √((1−ᾱ_t)/ᾱ_t)): Euler is DDIM in σ form, Heun "
               "adds a corrector (2N − 1 model evaluations), DPM-Solver++ (2M) and UniPC reuse the last step's x̂₀ "
               "to take second-order steps, and Euler ancestral adds noise back (DDIM with η = 1). Few-step solvers "
               "reach in 10 evaluations what DDPM needs hundreds for.")


CLIP_TIP = ("Clamp the predicted x̂₀ to the data range [−1, 1] before taking the step (improved-diffusion's default; it "
            "keeps DDIM's first big steps from saturating). Off is exactly Algorithm 2")
CLIP_LATENT_TIP = ("Off for a latent model: its x̂₀ is a scaled latent (std ≈ 1, no [−1, 1] range), which clipping "
                   "would crush; the decoder's pictures are clamped instead")


class SamplerControls(QGroupBox):
    """The form that describes one sampling run; ``job()`` reads it as a SamplingJob."""

    def __init__(self, parent=None):
        super().__init__("Sampler", parent)
        self.T = 1000
        # remembered per sampler; None: all T steps. The ODE solvers' point is few steps.
        self._steps = {"ddpm": None, "ddim": 50, **{s: 20 for s in ODE_SAMPLERS}}
        form = QFormLayout(self)
        form.setContentsMargins(6, 6, 6, 6)

        self.sampler_combo = QComboBox()
        self.sampler_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.sampler_combo.setMinimumContentsLength(8)
        self.sampler_combo.setObjectName("samplerCombo")
        for text, _s, _v in SAMPLERS:
            self.sampler_combo.addItem(text)
        self.sampler_combo.setToolTip(SAMPLER_TIP)
        form.addRow("Sampler", self.sampler_combo)
        self.steps_spin = self._spin("stepsSpin", 1, 1000, "Number of reverse steps (diffusers' num_inference_steps). "
                                     "DDPM: all T steps, or fewer with the respaced βs; the others: steps from t = T "
                                     "down to 0. Heun evaluates the model twice per step but the last")
        form.addRow("Steps", self.steps_spin)
        self.spacing_combo = QComboBox()
        self.spacing_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.spacing_combo.setMinimumContentsLength(8)
        self.spacing_combo.setObjectName("spacingCombo")
        for text, key in SPACINGS:
            self.spacing_combo.addItem(text, key)
        self.spacing_combo.setToolTip("Which timesteps N steps visit, as diffusers names it: linspace from T−1 down to "
                                      "0 (both ends), leading k·⌊T/N⌋ (down to 0, not from T−1), trailing from T−1 "
                                      "down in steps of T/N (not down to 0)")
        form.addRow("Timesteps", self.spacing_combo)
        self.karras_check = QCheckBox("Karras σ spacing")
        self.karras_check.setObjectName("karrasCheck")
        self.karras_check.setToolTip("Karras et al.'s σ spacing (ρ = 7): more of the steps at low noise, where the "
                                     "details form. For the ODE solvers")
        form.addRow(self.karras_check)  # a row of its own: beside the timesteps it made the side column too wide
        self.eta_spin = QDoubleSpinBox()
        self.eta_spin.setObjectName("etaSpin")
        self.eta_spin.setRange(0.0, 1.0)
        self.eta_spin.setSingleStep(0.1)
        self.eta_spin.setToolTip("DDIM's η: 0 is deterministic (the same x_T always gives the same image); 1 adds as "
                                 "much fresh noise as DDPM with σ² = β̃")
        form.addRow("η (DDIM)", self.eta_spin)
        self.n_spin = self._spin("nImagesSpin", 1, 64, "How many images to sample at once (one batch)")
        self.n_spin.setValue(16)
        form.addRow("Images", self.n_spin)
        seed_row = QHBoxLayout()
        self.seed_spin = self._spin("seedSpin", 0, 2**31 - 1, "Seed of the starting noise x_T (and of the noise z "
                                    "added at each DDPM step): the same seed gives the same samples")
        self.seed_spin.setMinimumWidth(70)
        seed_row.addWidget(self.seed_spin, 1)
        self.new_seed_button = QPushButton("New")
        self.new_seed_button.setFixedWidth(48)
        self.new_seed_button.setObjectName("newSeedButton")
        self.new_seed_button.setToolTip("Pick a random seed")
        self.new_seed_button.clicked.connect(
            lambda: self.seed_spin.setValue(int(np.random.default_rng().integers(0, 2**31 - 1))))
        seed_row.addWidget(self.new_seed_button)
        form.addRow("Seed", seed_row)
        self.clip_check = QCheckBox("Clip predicted x₀ to [−1, 1]")
        self.clip_check.setObjectName("clipCheck")
        self.clip_check.setChecked(True)
        self._pixel_clip = True  # the choice kept while a latent model greys the box out
        self.clip_check.setToolTip(CLIP_TIP)
        form.addRow(self.clip_check)
        self.every_spin = self._spin("everySpin", 0, 1000, "Record a frame every N steps (plus the start and the "
                                     "end). Fewer frames cost less memory and display time; auto records about 50")
        form.addRow("Preview", self.every_spin)  # "Preview every" made the side column too wide for 1024 px
        self.class_combo = QComboBox()
        self.class_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_combo.setMinimumContentsLength(8)
        self.class_combo.setObjectName("classCombo")
        self.class_combo.setToolTip("For a class-conditional model: which class to generate (the label y fed to ε_θ)")
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setObjectName("guidanceSpin")
        self.guidance_spin.setRange(0.0, 10.0)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setValue(2.0)
        self.guidance_spin.setToolTip("Classifier-free guidance w: ε = ε_∅ + w (ε_y − ε_∅). w = 1 is the conditional "
                                      "model alone; a larger w follows the label more strongly")
        self.class_label, self.guidance_label = QLabel("Class"), QLabel("Guidance")
        self.guidance_label.setToolTip(self.guidance_spin.toolTip())  # "Guidance w" made the form too wide at 1024 px
        form.addRow(self.class_label, self.class_combo)
        form.addRow(self.guidance_label, self.guidance_spin)
        self.sampler_combo.currentIndexChanged.connect(self._on_sampler)
        self.steps_spin.valueChanged.connect(self._on_steps)
        self.set_classes(None, None)
        self._on_sampler()

    def _spin(self, name: str, lo: int, hi: int, tip: str) -> QSpinBox:
        s = QSpinBox()
        s.setObjectName(name)
        s.setRange(lo, hi)
        s.setToolTip(tip)
        return s

    @property
    def sampler(self) -> tuple[str, str]:
        """(sampler, variance) of the selected entry."""
        _text, sampler, variance = SAMPLERS[self.sampler_combo.currentIndex()]
        return sampler, variance

    def select_sampler(self, sampler: str, variance: str = "beta_tilde") -> None:
        for i, (_t, s, v) in enumerate(SAMPLERS):
            if s == sampler and (s == "ddim" or v == variance):
                self.sampler_combo.setCurrentIndex(i)

    def _on_sampler(self, *_args) -> None:
        sampler, _ = self.sampler
        self.steps_spin.setMaximum(self.T)
        want = self._steps[sampler]
        self.steps_spin.blockSignals(True)
        self.steps_spin.setValue(self.T if want is None else min(want, self.T))
        self.steps_spin.blockSignals(False)
        self.eta_spin.setEnabled(sampler == "ddim")
        self.karras_check.setEnabled(sampler in ODE_SAMPLERS)
        self._on_steps(self.steps_spin.value(), remember=False)

    def _on_steps(self, value: int, remember: bool = True) -> None:
        sampler, _ = self.sampler
        if remember:
            self._steps[sampler] = None if sampler == "ddpm" and value == self.T else value
        self.every_spin.setSpecialValueText(f"auto (every {auto_every(value)})")

    def set_classes(self, num_classes: int | None, names: list[str] | None) -> None:
        self.class_combo.clear()
        if num_classes:
            self.class_combo.addItem("one of each class", -1)
            for i in range(num_classes):
                name = names[i] if names and i < len(names) else str(i)
                self.class_combo.addItem(name if name == str(i) else f"{i}: {name}", i)
            self.class_combo.addItem("unconditional (null class)", None)
        for w in (self.class_combo, self.guidance_spin, self.class_label, self.guidance_label):
            w.setVisible(bool(num_classes))

    def set_model(self, model: LoadedModel) -> None:
        """Fit the controls to a model: its own T bounds the steps; class controls only for conditional models."""
        self.T = model.schedule.T
        self.set_classes(model.config.num_classes, model.checkpoint.class_names)
        sampling = model.checkpoint.meta.get("sampling")
        self._fit_clip(is_latent_meta(model.checkpoint.meta))
        if sampling:  # an imported diffusers scheduler: its x̂_0 clipping and DDPM σ_t² are the defaults
            self.clip_check.setChecked(bool(sampling.get("clip_x0")))
            if self.sampler[0] == "ddpm":
                self.select_sampler("ddpm", sampling.get("variance", "beta_tilde"))
        self._on_sampler()

    def _fit_clip(self, latent: bool) -> None:
        """A latent has no [−1, 1] range to clip x̂₀ to: off and greyed for a latent model; the user's own choice
        comes back with the next pixel model."""
        if latent and self.clip_check.isEnabled():
            self._pixel_clip = self.clip_check.isChecked()
            self.clip_check.setChecked(False)
        elif not latent and not self.clip_check.isEnabled():
            self.clip_check.setChecked(self._pixel_clip)
        self.clip_check.setEnabled(not latent)
        self.clip_check.setToolTip(CLIP_LATENT_TIP if latent else CLIP_TIP)

    @property
    def pixel_clip(self) -> bool:
        """The clip choice for pixel models (what the settings keep, whatever model is loaded now)."""
        return self.clip_check.isChecked() if self.clip_check.isEnabled() else self._pixel_clip

    def job(self) -> SamplingJob:
        sampler, variance = self.sampler
        label = self.class_combo.currentData() if self.class_combo.count() else None
        return SamplingJob(sampler=sampler, variance=variance, steps=self.steps_spin.value(),
                           eta=self.eta_spin.value(), n_images=self.n_spin.value(), seed=self.seed_spin.value(),
                           clip_x0=self.clip_check.isChecked(), every=self.every_spin.value(), label=label,
                           guidance=self.guidance_spin.value(), timestep_spacing=self.spacing_combo.currentData(),
                           karras=self.karras_check.isChecked() and sampler in ODE_SAMPLERS)

    # ---- settings (the panel passes its get/set) ------------------------------------------------------------------
    def restore(self, get) -> None:
        self.sampler_combo.setCurrentIndex(max(0, min(len(SAMPLERS) - 1, get("sampler", 2, int))))
        self._steps["ddim"] = max(1, get("ddim_steps", 50, int))
        self._steps["ddpm"] = max(0, get("ddpm_steps", 0, int)) or None  # 0: all T steps
        self.eta_spin.setValue(get("eta", 0.0, float))
        self.n_spin.setValue(get("n_images", 16, int))
        self.seed_spin.setValue(get("seed", 0, int))
        self.clip_check.setChecked(get("clip_x0", True, bool))
        self.every_spin.setValue(get("every", 0, int))
        self.spacing_combo.setCurrentIndex(max(0, self.spacing_combo.findData(get("timestep_spacing", "linspace", str))))
        self.karras_check.setChecked(get("karras", False, bool))
        for name in ODE_SAMPLERS:
            self._steps[name] = max(1, get(f"{name}_steps", 20, int))
        self._on_sampler()

    def save(self, put) -> None:
        for key, value in (("sampler", self.sampler_combo.currentIndex()), ("ddim_steps", self._steps["ddim"]),
                           ("ddpm_steps", self._steps["ddpm"] or 0),
                           ("eta", self.eta_spin.value()), ("n_images", self.n_spin.value()),
                           ("seed", self.seed_spin.value()), ("clip_x0", self.pixel_clip),
                           ("every", self.every_spin.value()), ("timestep_spacing", self.spacing_combo.currentData()),
                           ("karras", self.karras_check.isChecked()),
                           *((f"{name}_steps", self._steps[name]) for name in ODE_SAMPLERS)):
            put(key, value)
