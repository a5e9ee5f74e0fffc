"""What a newcomer expects of a Training run (Qt-free, run in the worker or on small files): a batch fitted to a
small dataset, a preview at step 0, run folders named after data and model, and the interrupted-run record. The loss
log itself (metrics.jsonl, one format for the app and the CLI) is core/train/runlog.py."""
from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator




@dataclass
class RunNote:
    """One line the panel shows under the run (e.g. the batch it chose)."""

    text: str


@dataclass
class StepPreview:
    """A preview grid made outside the trainer's own schedule (the one at the start of a run)."""

    step: int
    images: Any  # (n, C, H, W) tensor in [−1, 1]


# ---- the batch ------------------------------------------------------------------------------------------------------
def fit_batch(config, n_images: int, explicit: bool) -> str | None:
    """Cut a batch the user did not choose to the dataset's size; returns the line saying so (None: unchanged).

    A batch the user asked for is left alone, so the trainer refuses it with its own message naming the field.
    """
    if explicit or config.batch_size <= n_images:
        return None
    default, config.batch_size = config.batch_size, n_images
    return (f"Batch {n_images}: the whole dataset ({n_images:,} images), since the default batch of {default} is "
            f"larger. Set Batch to choose another.")


def first_preview(trainer, handle) -> Iterator[StepPreview]:
    """The preview at the run's first step (noise before training; the restored model on Continue)."""
    if trainer.config.preview_every <= 0:
        return
    with handle.stepping():
        images = trainer.preview()
    yield StepPreview(trainer.step, images)


# ---- run folders --------------------------------------------------------------------------------------------------
def _slug(text: str, limit: int = 24) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:limit].strip("-") or "data"


def run_label(dataset_spec: str, preset: str, image_size: int) -> str:
    """'digits-tiny-16px' for builtin:digits; a folder gives its own name."""
    spec = str(dataset_spec).strip()
    if spec.startswith("builtin:"):
        data = spec.split(":", 1)[1]
    elif ":" in spec and not Path(spec).exists():  # mnist:PATH, cifar10:PATH
        kind, _, rest = spec.partition(":")
        data = f"{kind}-{Path(rest).name}" if rest else kind
    else:
        data = Path(spec).name or spec
    return f"{_slug(data)}-{_slug(preset, 12)}-{int(image_size)}px"


def new_named_run_dir(base: Path, label: str, now: _dt.datetime | None = None) -> Path:
    """base/<YYYYmmdd-HHMMSS>-<label>, with -2, -3 … when two runs start in the same second."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        d = base / (f"{stamp}-{label}" if k == 1 else f"{stamp}-{label}-{k}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise ValueError(f"checkpoint folder: cannot create a new run folder in {base}")


# ---- an interrupted run ---------------------------------------------------------------------------------------------
def interrupted_run(record: str | None) -> tuple[Path, int, int | None] | None:
    """The manifest, step and total of a run recorded as interrupted, when its checkpoint is still there and has
    steps left; None otherwise. ``record`` is the JSON the panel saved in its settings."""
    if not record:
        return None
    try:
        d = json.loads(record)
        path = Path(d["checkpoint"])
        total = d.get("total")
        total = int(total) if total is not None else None
        manifest = json.loads(path.read_text("utf-8")) if path.is_file() and path.stat().st_size < (4 << 20) else None
    except (ValueError, KeyError, TypeError, OSError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("step"), int):
        return None
    step = manifest["step"]
    if total is not None and step >= total:
        return None
    return path, step, total


def interrupted_record(checkpoint: Path, step: int, total: int | None) -> str:
    return json.dumps({"checkpoint": str(checkpoint), "step": int(step), "total": total})
