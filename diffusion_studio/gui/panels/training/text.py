"""Training on captions: the form's "Condition on captions" row (with a few captions of the chosen data) and the
run-side steps (caption the data, give the model cross-attention) that the training worker calls."""
from __future__ import annotations

from pathlib import Path

from .checkrow import NotedCheck, attach

DIGIT_SPECS = ("builtin:digits", "builtin:mnist")  # captioned with digit words ("the digit seven", "7", …)
PREVIEW_CAPTIONS = 4
PREVIEW_FILES = 200  # a folder's preview reads the captions of its first files only: the form stays instant


def caption_preview(spec: str | None, n: int = PREVIEW_CAPTIONS) -> tuple[list[str], str]:
    """A few captions of the data ``spec`` and a one-line note (where they come from, or why there are none)."""
    from ....data.captions import DIGIT_WORDS, digit_caption, folder_captions
    from ....data.shapes import shape_caption

    s = str(spec or "").strip()
    if s == "builtin:shapes":
        return ([shape_caption("red", "star", "small", "left", "dark", 2), shape_caption("blue", "circle", "large",
                 "centre", "light", 0), shape_caption("white", "cross", "large", "top", "dark", 4),
                 shape_caption("yellow", "triangle", "small", "right", "dark", 1)][:n],
                "written from what each picture shows: colour, shape, size, place, background")
    if s in DIGIT_SPECS or s.lower().startswith("mnist:"):
        return [digit_caption(k, f) for k, f in ((7, 0), (3, 1), (5, 2), (2, 3))][:n], \
            f"digit words: \"the digit {DIGIT_WORDS[7]}\", \"7\", \"{DIGIT_WORDS[7]}\", \"a handwritten 7\""
    if s.startswith("builtin:") or not s:
        return [], "this data has no captions"
    root = Path(s).expanduser()
    if not root.is_dir():
        return [], "captions come from a folder's metadata.jsonl/.csv, NAME.txt files or subfolder names"
    from ....data.folder import scan_images

    sources = []
    for path in scan_images(root, on_error=lambda e: None):
        try:
            sources.append(path.relative_to(root).as_posix())
        except ValueError:
            continue
        if len(sources) >= PREVIEW_FILES:
            break
    caps, problems = folder_captions(root, sources)
    shown = [c for c in dict.fromkeys(caps) if c][:n]
    note = f"{len(problems)} caption problem(s), e.g. {problems[0]}" if problems else "from the folder's caption files"
    return shown, note if shown or problems else "no captions found (metadata.jsonl/.csv, NAME.txt, subfolders)"


class CaptionRow(NotedCheck):
    """A checkbox and, when it is on, a few of the chosen data's captions."""

    def __init__(self, parent=None):
        super().__init__("Condition on captions", "captionsCheck", "captionsLabel",
                         "Train a text-to-image model: each image's caption goes through the frozen text encoder "
                         "all-MiniLM-L6-v2 into the UNet's cross-attention (and, pooled, into the time embedding); "
                         "10 % of the time it is dropped to ∅ so sampling can use guidance", parent=parent)
        self.captions_label = self.note
        self.refresh()

    def refresh(self) -> None:
        if not self.check.isChecked():
            self.captions_label.hide()
            return
        caps, note = caption_preview(self.spec)
        quoted = "<br>".join(f"“{c}”" for c in caps)
        self.captions_label.setText(f"{quoted}<br><i>{note}</i>" if caps else f"<i>{note}</i>")
        self.captions_label.show()


def attach_caption_row(form) -> CaptionRow:
    """Thin call site for the Training form: the row goes under "Data" and follows the chosen data."""
    return attach(form, CaptionRow(), 1, "Text", "caption_row")
