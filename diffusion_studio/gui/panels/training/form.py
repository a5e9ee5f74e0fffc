"""The Training panel's settings form: dataset, image size, model preset and the hyper-parameters of a run."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QToolButton, QWidget)

from ....core.io.checkpoint import Checkpoint
from ....core.runtime.device import cpu_supports_bf16, describe_device, resolve_device
from ....core.diffusion.schedule import NoiseSchedule
from ....core.train.config import TrainConfig
from ....core.nets.unet import PRESET_NOTES, PRESETS
from ....data import BUILTIN_DATASETS
from ....core.train.recipe import DEFAULT_SIZE, RECIPE, recipe_for
from .length import LengthField, objective_combo, select_objective
from ....data.specs import natural_channels
from ....jobs.training import default_image_size, fid_extractor_for
from .multi import multi_gpu_checkbox

IMAGES_PANEL = "@images-panel"
FOLDER = "@folder"
DEFAULTS = TrainConfig(lr=RECIPE["lr"], ema_decay=RECIPE["ema_decay"], batch_size=RECIPE["batch"])


def _spin(lo: int, hi: int, value: int, name: str, tip: str, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    s.setObjectName(name)
    s.setToolTip(tip)
    s.setGroupSeparatorShown(True)
    return s


class TrainingForm(QWidget):
    """Widgets are attributes (tests set them as a user would); ``spec()`` is the chosen dataset spec or None."""

    spec_changed = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._state_spec: str | None = None
        self._last_index = 1
        self.dataset_combo = QComboBox()
        self.dataset_combo.setObjectName("datasetCombo")
        self.dataset_combo.setToolTip("The images x₀ the network learns to denoise (Algorithm 1 draws x₀ from here)")
        self.dataset_combo.addItem("Images panel selection", IMAGES_PANEL)
        for name, desc in BUILTIN_DATASETS.items():
            self.dataset_combo.addItem(f"Built-in: {name}", f"builtin:{name}")
            self.dataset_combo.setItemData(self.dataset_combo.count() - 1, desc, 3)  # 3 = Qt.ToolTipRole
        self.dataset_combo.addItem("Folder…", FOLDER)
        self._set_images_item(None)

        self.size_spin = _spin(8, 512, 16, "imageSizeSpin", "Side of the square images the model sees; must be "
                               "divisible by 2^(levels − 1) of the model (4 for tiny/small, 8 for base/ddpm-cifar)", 8)
        self.channels_label = QLabel()
        self.channels_label.setObjectName("channelsLabel")
        self.channels_label.setToolTip("Taken from the dataset: 1 for greyscale digits/MNIST, 3 for colour images")
        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("presetCombo")
        for i, name in enumerate(PRESETS):
            self.preset_combo.addItem(name, name)
            self.preset_combo.setItemData(i, PRESET_NOTES.get(name, ""), 3)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(RECIPE["model"]))
        self.preset_combo.setToolTip("Size of the UNet ε_θ(x_t, t): " + "; ".join(f"{k}: {v}" for k, v in PRESET_NOTES.items()))
        self.batch_spin = _spin(1, 100_000, DEFAULTS.batch_size, "batchSpin",
                                "Images per optimisation step; each gets its own random t and noise ε")
        self.lr_edit = QLineEdit(f"{DEFAULTS.lr:g}")
        self.lr_edit.setObjectName("lrEdit")
        self.lr_edit.setToolTip("AdamW learning rate, e.g. 2e-4 (Ho et al. use 2e-4; tiny models tolerate 1e-3). "
                                "Too high and the loss becomes NaN")
        self._recipe_side = DEFAULT_SIZE  # the image side the widgets' batch, lr and model were taken for (RECIPE's)
        self._follow_recipe(self.size_spin.value())  # …and now the recipe of the side shown
        self.size_spin.valueChanged.connect(self._follow_recipe)
        self.length = LengthField()
        self.steps_spin, self.minutes_spin = self.length.steps_spin, self.length.minutes_spin
        self.objective_combo = objective_combo()
        self.device_combo = QComboBox()
        self.device_combo.setObjectName("deviceCombo")
        auto = resolve_device("auto")
        # "auto (CPU)": the thread count is in the tooltip and the status bar; the whole text was cut off at 1280 px
        self.device_combo.addItem(f"auto ({auto.type.upper()})", "auto")
        self.device_combo.setItemData(0, f"auto: {describe_device(auto)}", 3)
        self.device_combo.addItem("cpu", "cpu")
        if torch.cuda.is_available():
            self.device_combo.addItem(f"cuda ({describe_device('cuda')})", "cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            self.device_combo.addItem("mps (Apple GPU)", "mps")
        self.device_combo.setToolTip("Where training runs: auto takes a CUDA or Apple GPU when there is one")
        self.multi_gpu_check = multi_gpu_checkbox(self)  # None unless torch sees more than one GPU
        self.precision_combo = QComboBox()
        self.precision_combo.setObjectName("precisionCombo")
        for p in ("auto", "fp32", "bf16"):
            self.precision_combo.addItem(p, p)
        bf16_note = "this CPU has bf16 instructions" if cpu_supports_bf16() else "this CPU has no bf16 instructions"
        self.precision_combo.setToolTip("auto: bf16 autocast where the hardware has bf16 (CUDA GPUs, CPUs with "
                                        "AVX512-BF16/AMX: ~2× faster, same loss curve), fp32 elsewhere "
                                        f"({bf16_note})")
        self.ema_spin = QDoubleSpinBox()
        self.ema_spin.setObjectName("emaSpin")
        self.ema_spin.setDecimals(4)
        self.ema_spin.setRange(0.0, 0.9999)
        self.ema_spin.setSingleStep(0.001)
        self.ema_spin.setValue(DEFAULTS.ema_decay)
        self.ema_spin.setToolTip("Decay of the exponential moving average of the weights that previews and sampling "
                                 "use: θ_ema ← d·θ_ema + (1 − d)·θ after every step")
        self.preview_spin = _spin(0, 1_000_000, 100, "previewEverySpin",
                                  "Sample a preview grid every N steps (0: never); costs a few DDIM passes", 10)
        self.save_every_spin = _spin(0, 1_000_000, 500, "saveEverySpin", "Also save a checkpoint every N steps "
                                     "(0: only at the end); a crash or divergence then keeps the last one", 100)
        for spin in (self.preview_spin, self.save_every_spin):
            spin.setPrefix("every ")
            spin.setSuffix(" steps")
            spin.setSpecialValueText("off")
        self.fid_check = QCheckBox("FID")
        self.fid_check.setObjectName("fidCheck")
        self.fid_spin = _spin(1, 1_000_000, 500, "fidEverySpin", "Steps between FID measurements", 100)
        self.fid_spin.setPrefix("every ")
        self.fid_spin.setSuffix(" steps")
        self.fid_check.setToolTip("Compute the FID of samples against the dataset in the training thread (needs a "
                                  "feature network for the dataset: the shipped ones for builtin:digits and "
                                  "builtin:mnist)")
        self.out_edit = QLineEdit()
        self.out_edit.setObjectName("outEdit")
        self.out_edit.setToolTip("Folder the run's checkpoint.json (+ weights) is saved in; empty: a new folder per run")
        self.out_button = QToolButton()
        self.out_button.setText("…")
        self.out_button.setToolTip("Choose the checkpoint folder")
        self.out_button.clicked.connect(self._choose_out)
        self.schedule_label = QLabel()
        self.schedule_label.setObjectName("scheduleLabel")
        self.schedule_label.setWordWrap(True)
        self.schedule_label.setToolTip("The Schedule panel's β_t; change it there. A continued run keeps its own")
        self.resume_label = QLabel()
        self.resume_label.setObjectName("resumeLabel")
        self.resume_label.setWordWrap(True)
        self.resume_clear = QPushButton("Start fresh instead")
        self.resume_clear.setObjectName("resumeClearButton")
        self.resume_clear.setToolTip("Forget the loaded checkpoint; Start then begins a new run")

        out_row = QHBoxLayout()
        out_row.setContentsMargins(0, 0, 0, 0)
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_button)
        fid_row = QHBoxLayout()
        fid_row.setContentsMargins(0, 0, 0, 0)
        fid_row.addWidget(self.fid_check)
        fid_row.addWidget(self.fid_spin, 1)
        for combo in (self.dataset_combo, self.preset_combo, self.device_combo, self.precision_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        for w in (self.size_spin, self.batch_spin, self.steps_spin, self.ema_spin, self.preview_spin,
                  self.save_every_spin, self.fid_spin, self.lr_edit, self.out_edit):
            w.setMinimumWidth(60)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Data", self.dataset_combo)
        form.addRow("Size", self.size_spin)
        form.addRow("Channels", self.channels_label)
        form.addRow("Model", self.preset_combo)
        form.addRow("Batch", self.batch_spin)
        form.addRow("LR", self.lr_edit)
        form.addRow("Length", self.length)
        form.addRow("Objective", self.objective_combo)
        form.addRow("Device", self.device_combo)
        if self.multi_gpu_check is not None:
            form.addRow("", self.multi_gpu_check)
        form.addRow("Precision", self.precision_combo)
        form.addRow("EMA", self.ema_spin)
        form.addRow("Preview", self.preview_spin)
        form.addRow("Save", self.save_every_spin)
        form.addRow(fid_row)
        form.addRow("Folder", out_row)
        form.addRow("Schedule", self.schedule_label)
        form.addRow(self.resume_label)
        form.addRow(self.resume_clear)
        self.show_resume(None)

        self.dataset_combo.currentIndexChanged.connect(self._on_index)
        self.dataset_combo.activated.connect(self._on_activated)
        self.dataset_combo.setCurrentIndex(1)
        self._on_index(1)

    # ---- dataset ---------------------------------------------------------------------------------------------------
    def _set_images_item(self, spec: str | None) -> None:
        item = self.dataset_combo.model().item(0)
        item.setEnabled(spec is not None)
        item.setText("Images panel selection" + (f": {Path(spec).name or spec}" if spec else " (none)"))
        item.setToolTip(spec or "Choose a folder or images in the Images panel first")

    def set_state_spec(self, spec: str | None) -> None:
        """Follow the Images panel's dataset selection (AppState.dataset_changed)."""
        self._state_spec = spec
        self._set_images_item(spec)
        if self.dataset_combo.currentData() == IMAGES_PANEL:
            if spec is None:
                self.dataset_combo.setCurrentIndex(1)
            else:
                self._on_index(0)

    def spec(self) -> str | None:
        data = self.dataset_combo.currentData()
        if data == IMAGES_PANEL:
            return self._state_spec
        return None if data == FOLDER else data

    def set_dataset_spec(self, spec: str) -> None:
        """Select a dataset by spec (a built-in, the Images panel's, a folder or mnist:/cifar10: path)."""
        spec = str(spec)
        idx = self.dataset_combo.findData(spec)
        if idx < 0 and spec == self._state_spec:
            idx = 0
        if idx < 0:
            idx = self.dataset_combo.count() - 1  # before "Folder…"
            label = Path(spec).name if not spec.startswith(("mnist:", "cifar10:")) else spec
            self.dataset_combo.insertItem(idx, f"Folder: {label}", spec)
            self.dataset_combo.setItemData(idx, spec, 3)
        if idx == self.dataset_combo.currentIndex():
            self._on_index(idx)
        self.dataset_combo.setCurrentIndex(idx)

    def _follow_recipe(self, side: int) -> None:
        """The recipe's batch and lr depend on the image side (core/train/recipe.py: larger batches for tiny images);
        follow it when the size changes, unless the user has set their own values."""
        old, new = recipe_for(self._recipe_side), recipe_for(side)
        self._recipe_side = side
        if self.batch_spin.value() == old["batch"]:
            self.batch_spin.setValue(new["batch"])
        try:
            same_lr = math.isclose(float(self.lr_edit.text()), old["lr"])
        except ValueError:
            same_lr = False
        if same_lr:
            self.lr_edit.setText(f"{new['lr']:g}")
        if self.preset_combo.currentData() == old["model"]:
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(new["model"]))

    def _on_index(self, index: int) -> None:
        if self.dataset_combo.itemData(index) == FOLDER:
            return  # the dialog opens on `activated`
        self._last_index = index
        spec = self.spec()
        if self.size_spin.isEnabled():
            self.size_spin.setValue(default_image_size(spec))
        self.channels_label.setText({1: "1 (greyscale)", 3: "3 (RGB)"}[natural_channels(spec or "")]
                                    if spec else "—")
        fid_ok = fid_extractor_for(spec) is not None
        self.fid_check.setEnabled(fid_ok)
        if not fid_ok:
            self.fid_check.setChecked(False)
        self.fid_spin.setEnabled(fid_ok)
        self.spec_changed.emit(spec)

    def _on_activated(self, index: int) -> None:
        if self.dataset_combo.itemData(index) != FOLDER:
            return
        path = QFileDialog.getExistingDirectory(self, "Train on a folder of images")
        if path:
            self.set_dataset_spec(path)
        else:
            self.dataset_combo.setCurrentIndex(self._last_index)

    # ---- other fields ----------------------------------------------------------------------------------------------
    def _choose_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Save checkpoints in", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def show_schedule(self, schedule: NoiseSchedule, resume: Checkpoint | None = None) -> None:
        if resume is not None:
            self.schedule_label.setText(f"{resume.schedule.describe()} (the checkpoint's own)")
        else:
            self.schedule_label.setText(schedule.describe())

    def show_resume(self, ckpt: Checkpoint | None, name: str = "") -> None:
        """Lock what a checkpoint fixes (data, space, captions, size, model, objective) and say which run Start will
        continue."""
        locked = [self.dataset_combo, self.size_spin, self.preset_combo, self.objective_combo]
        locked += [w for w in (getattr(self, "space_row", None),
                               getattr(getattr(self, "caption_row", None), "check", None),
                               getattr(getattr(self, "labels_row", None), "check", None)) if w is not None]
        for w in locked:
            w.setEnabled(ckpt is None)
        if ckpt is None and getattr(self, "space_row", None) is not None:
            self.space_row.sync()  # a latent space chosen again fixes the size again
        self.resume_label.setVisible(ckpt is not None)
        self.resume_clear.setVisible(ckpt is not None)
        if ckpt is not None:
            self.resume_label.setText(f"<b>Start continues</b> {name} from step {ckpt.step:,} "
                                      f"(same weights, EMA, optimizer state and random streams)")

    def apply_checkpoint(self, ckpt: Checkpoint) -> None:
        """Fill the fields from a checkpoint's manifest, so Start continues with every choice the run was made with:
        data, space (its autoencoder), captions, image size, model preset, objective and hyper-parameters."""
        train = TrainConfig.from_dict(ckpt.meta.get("train", {}))
        mc = ckpt.model_config
        spec = (ckpt.meta.get("data") or {}).get("spec")
        if spec:
            self.set_dataset_spec(spec)
        latent = ckpt.meta.get("latent") if isinstance(ckpt.meta.get("latent"), dict) else None
        if getattr(self, "space_row", None) is not None:
            self.space_row.show_checkpoint_space(latent)
        ae = (latent or {}).get("autoencoder") if isinstance((latent or {}).get("autoencoder"), dict) else {}
        side, channels = ((ae.get("image_size"), ae.get("image_channels")) if latent is not None
                          else (mc.image_size, mc.in_channels))
        if isinstance(side, int):
            self.size_spin.setValue(side)
        if mc.preset and self.preset_combo.findData(mc.preset) >= 0:
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(mc.preset))
        self.channels_label.setText({1: "1 (greyscale)", 3: "3 (RGB)"}.get(channels, str(channels)))
        if getattr(self, "caption_row", None) is not None:
            self.caption_row.check.setChecked(bool(train.text or mc.text_encoder))
        if getattr(self, "labels_row", None) is not None:
            self.labels_row.check.setChecked(bool(mc.num_classes))
        self.batch_spin.setValue(train.batch_size)
        self.lr_edit.setText(f"{train.lr:g}")
        steps = train.steps or 0
        self.steps_spin.setValue(steps if steps > ckpt.step else ckpt.step + max(steps, 1000))
        if train.steps is None and train.minutes:  # a time-budget run continues for as long again
            self.minutes_spin.setValue(float(train.minutes))
        select_objective(self.objective_combo, mc.prediction, train.loss_weighting)
        self.ema_spin.setValue(train.ema_decay)
        self.preview_spin.setValue(train.preview_every)
        self.save_every_spin.setValue(train.checkpoint_every)
        self.out_edit.setText(str(ckpt.path.parent))

    def snapshot(self) -> dict:
        """The form's choices, to put back with ``apply_snapshot`` (what a fresh run starts from after a Continue)."""
        values = self.settings_values()
        values["spec"] = self.spec()
        if getattr(self, "space_row", None) is not None:
            values["space"] = self.space_row.currentData()
        if getattr(self, "caption_row", None) is not None:
            values["text"] = self.caption_row.check.isChecked()
        if getattr(self, "labels_row", None) is not None:
            values["labels"] = self.labels_row.check.isChecked()
        return values

    def apply_snapshot(self, values: dict) -> None:
        if values.get("spec"):
            self.set_dataset_spec(values["spec"])
        if getattr(self, "space_row", None) is not None:
            self.space_row.forget_checkpoint_space(values.get("space"))
        self.restore(lambda key, default, _type=None: values.get(key, default), dataset=False)
        if getattr(self, "caption_row", None) is not None:
            self.caption_row.check.setChecked(bool(values.get("text")))
        if getattr(self, "labels_row", None) is not None:
            self.labels_row.check.setChecked(bool(values.get("labels", True)))

    # ---- remembered choices ----------------------------------------------------------------------------------------
    def restore(self, setting, dataset: bool = True) -> None:
        """Apply the last choices; ``setting(key, default, type)`` reads them (Panel.setting)."""
        spec = setting("dataset", "builtin:digits", str)
        if dataset and spec.startswith("builtin:") and self.dataset_combo.findData(spec) >= 0:
            self.set_dataset_spec(spec)
        self.size_spin.setValue(setting("image_size", self.size_spin.value(), int))
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(
            setting("preset", self.preset_combo.currentData(), str))))
        self.batch_spin.setValue(setting("batch_size", self.batch_spin.value(), int))
        self.lr_edit.setText(setting("lr", self.lr_edit.text(), str))
        self.steps_spin.setValue(setting("steps", self.steps_spin.value(), int))
        self.minutes_spin.setValue(setting("minutes", self.minutes_spin.value(), float))
        self.length.set_unit(setting("length_unit", "minutes", str))
        objective = setting("objective", "", str)
        self.objective_combo.setCurrentIndex(max(0, self.objective_combo.findData(objective)))
        for combo, key in ((self.device_combo, "device"), (self.precision_combo, "precision")):
            combo.setCurrentIndex(max(0, combo.findData(setting(key, "auto", str))))
        self.ema_spin.setValue(setting("ema_decay", self.ema_spin.value(), float))
        self.preview_spin.setValue(setting("preview_every", self.preview_spin.value(), int))
        self.save_every_spin.setValue(setting("save_every", self.save_every_spin.value(), int))

    def settings_values(self) -> dict:
        spec = self.spec()
        values = {"image_size": self.size_spin.value(), "preset": self.preset_combo.currentData(),
                  "batch_size": self.batch_spin.value(), "lr": self.lr_edit.text(), "steps": self.steps_spin.value(),
                  "minutes": self.minutes_spin.value(), "length_unit": self.length.unit(),
                  "objective": self.objective_combo.currentData(),
                  "device": self.device_combo.currentData(), "precision": self.precision_combo.currentData(),
                  "ema_decay": self.ema_spin.value(), "preview_every": self.preview_spin.value(),
                  "save_every": self.save_every_spin.value()}
        if spec and spec.startswith("builtin:"):
            values["dataset"] = spec
        return values
