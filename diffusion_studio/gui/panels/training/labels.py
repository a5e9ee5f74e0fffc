"""The Training form's "Condition on class labels" row: on by default, a new run conditions on its data's labels
when it has them (core/train/recipe.conditions_on_labels: labelled pixel images — builtin:digits, builtin:mnist, a
folder with one subfolder per class) and says so under the box; the Sampling tab then draws one of each class."""
from __future__ import annotations

from .checkrow import NotedCheck, attach

LABELLED = ("builtin:digits", "builtin:mnist")  # the built-in data sets that carry class labels


def labels_note(spec: str | None, on: bool) -> str:
    """One line under the box: what a run of ``spec`` will do with labels."""
    s = str(spec or "").strip()
    if not on:
        return "one model of all the images; samples have no class"
    if s in LABELLED or s.lower().startswith(("mnist:", "cifar10:")):
        return "10 classes: samples come one of each class in turn, guided (w = 2)"
    if s.startswith("builtin:") or not s:
        return "this data has no labels: the model is unconditional"
    return "a folder's subfolders are its classes (none: unconditional)"


class LabelsRow(NotedCheck):
    """A checkbox (on by default) and a grey line saying what it will do for the chosen data."""

    def __init__(self, parent=None):
        super().__init__("Condition on class labels", "labelsCheck", "labelsNote",
                         "Feed each image's class to the UNet (a learned embedding added to the time embedding); "
                         "10 % of the time it is dropped to the null class ∅, so sampling can use classifier-free "
                         "guidance ε_∅ + w(ε_y − ε_∅). Ignored for captions and latent runs", checked=True,
                         parent=parent)
        self.refresh()

    def refresh(self) -> None:
        self.note.setText(labels_note(self.spec, self.check.isChecked()))


def attach_labels_row(form) -> LabelsRow:
    """Thin call site for the Training form: the row goes under "Text" and follows the chosen data."""
    return attach(form, LabelsRow(), 2, "Labels", "labels_row")
