"""The Training form's run length (minutes or steps) and objective choice, defaulting to core/train/recipe.py."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QSpinBox, QWidget

from ....core.train.recipe import RECIPE

# (label, prediction, loss weighting); the first is the recipe's own.
OBJECTIVES = (
    ("ε, Min-SNR-5 (recipe: faster)", "eps", "min_snr"),
    ("ε, uniform (seeds' L_simple)", "eps", "uniform"),
    ("v, Min-SNR-5", "v", "min_snr"),
    ("x₀, Min-SNR-5", "x0", "min_snr"),
)


class LengthField(QWidget):
    """M minutes of training time (the default: the learning rate warms up and decays over them) or N steps.

    Typing a number into either spin box selects its unit, so code and users that set steps get a step count.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setObjectName("minutesSpin")
        self.minutes_spin.setRange(0.1, 100_000.0)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setSingleStep(1.0)
        self.minutes_spin.setValue(float(RECIPE["minutes"]))
        self.minutes_spin.setToolTip("Minutes of training time (pauses do not count); the learning rate warms up, "
                                     "then decays over them, so a short run still ends well")
        self.steps_spin = QSpinBox()
        self.steps_spin.setObjectName("stepsSpin")
        self.steps_spin.setRange(1, 10_000_000)
        self.steps_spin.setSingleStep(100)
        self.steps_spin.setValue(2000)
        self.steps_spin.setToolTip("Total optimisation steps of the run (when continuing a checkpoint: the step to "
                                   "reach)")
        self.unit_combo = QComboBox()
        self.unit_combo.setObjectName("lengthUnitCombo")
        self.unit_combo.addItem("minutes", "minutes")
        self.unit_combo.addItem("steps", "steps")
        self.unit_combo.setToolTip("Train for a time budget (the recipe's default) or a number of steps")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.minutes_spin, 1)
        row.addWidget(self.steps_spin, 1)
        row.addWidget(self.unit_combo)
        self.unit_combo.currentIndexChanged.connect(self._show_unit)
        self.steps_spin.valueChanged.connect(lambda _: self.set_unit("steps"))
        self.minutes_spin.valueChanged.connect(lambda _: self.set_unit("minutes"))
        self._show_unit()

    def unit(self) -> str:
        return self.unit_combo.currentData()

    def set_unit(self, unit: str) -> None:
        self.unit_combo.setCurrentIndex(max(0, self.unit_combo.findData(unit)))

    def _show_unit(self) -> None:
        minutes = self.unit() == "minutes"
        self.minutes_spin.setVisible(minutes)
        self.steps_spin.setVisible(not minutes)

    def steps_and_minutes(self) -> tuple[int | None, float | None]:
        """(steps, None) or (None, minutes), as TrainConfig takes them."""
        if self.unit() == "minutes":
            return None, float(self.minutes_spin.value())
        return int(self.steps_spin.value()), None


def objective_combo() -> QComboBox:
    combo = QComboBox()
    combo.setObjectName("objectiveCombo")
    for label, prediction, weighting in OBJECTIVES:
        combo.addItem(label, f"{prediction},{weighting}")  # a string: Qt does not keep a Python tuple as item data
    combo.setToolTip("What ε_θ is trained to predict and how each t's loss counts. The recipe keeps the seeds' ε "
                     "target with Min-SNR-5 weights (Hang et al. 2023), which converges faster; 'uniform' is the "
                     "seeds' L_simple. Sampling converts any target to ε exactly.")
    return combo


def objective_choice(combo: QComboBox) -> tuple[str, str]:
    """(prediction, loss weighting) of the combo's current item."""
    prediction, _, weighting = str(combo.currentData() or "eps,min_snr").partition(",")
    return prediction, weighting


def select_objective(combo: QComboBox, prediction: str, weighting: str) -> None:
    """Select (prediction, weighting), adding it when the list does not offer it (a run made with the CLI)."""
    key = f"{prediction},{weighting}"
    i = combo.findData(key)
    if i < 0:
        symbol = {"eps": "ε", "x0": "x₀", "v": "v"}.get(prediction, prediction)
        combo.addItem(f"{symbol}, {'uniform' if weighting == 'uniform' else 'Min-SNR'}", key)
        i = combo.count() - 1
    combo.setCurrentIndex(i)


def objective_title(prediction: str, weighting: str, snr_gamma: float = 5.0) -> str:
    """What the loss curve plots, in Unicode: 'Min-SNR-5-weighted ‖ε − ε_θ(x_t, t)‖²'."""
    target = {"eps": ("ε", "ε_θ(x_t, t)"), "x0": ("x₀", "x̂₀(x_t, t)"), "v": ("v", "v_θ(x_t, t)")}
    a, b = target.get(prediction, target["eps"])
    mse = f"‖{a} − {b}‖²"
    if weighting == "uniform":
        return mse + (" (L_simple)" if prediction == "eps" else "")
    return f"Min-SNR-{snr_gamma:g}-weighted {mse}"
