"""What a Training run keeps beside its checkpoint and what a newcomer expects of it (Qt-free, run in the worker or
on small files): a batch fitted to a small dataset, a preview at step 0, the loss log (metrics.jsonl, the CLI's
format) and its restoration on Continue, run folders named after data and model, and the interrupted-run record."""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

METRICS = "metrics.jsonl"
MAX_METRICS_BYTES = 256 << 20   # a log bigger than this was not written by a run of this app
DEFAULT_BATCH = 64


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


# ---- the loss log ---------------------------------------------------------------------------------------------------
class MetricsLog:
    """Appends one JSON line per step to RUN/metrics.jsonl (the keys the CLI writes), after dropping lines past the
    step the run starts from (a run that stopped after its last save logged steps it will redo)."""

    def __init__(self, folder: Path, start_step: int):
        self.path = Path(folder) / METRICS
        self._file = None
        try:
            if start_step > 0 and self.path.is_file():
                kept = [ln for ln in self._lines() if _step(ln) is not None and _step(ln) <= start_step]
                self.path.write_text("".join(kept), encoding="utf-8")
            self._file = open(self.path, "a" if start_step > 0 else "w", encoding="utf-8")
        except OSError:
            self._file = None  # the log is a convenience: a read-only folder must not stop training

    def _lines(self) -> list[str]:
        if self.path.stat().st_size > MAX_METRICS_BYTES:
            return []
        return [ln if ln.endswith("\n") else ln + "\n" for ln in self.path.read_text("utf-8", "replace").splitlines()]

    def add(self, ev) -> None:
        if self._file is None:
            return
        line = {"step": ev.step, "loss": ev.loss if math.isfinite(ev.loss) else None, "lr": ev.lr,
                "images_per_s": ev.images_per_s, "elapsed_s": ev.elapsed_s, "grad_norm": ev.grad_norm}
        try:
            self._file.write(json.dumps(line) + "\n")
            if ev.checkpoint is not None or ev.done:
                self._file.flush()
        except (OSError, ValueError):
            self.close()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


def _step(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def read_loss_history(path: Path, up_to_step: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) logged at steps ≤ ``up_to_step``, in order; lines that are not a step's record are skipped,
    and a file larger than any run of this app writes is not read (empty history)."""
    path = Path(path)
    steps: list[int] = []
    losses: list[float] = []
    try:
        if not path.is_file() or path.stat().st_size > MAX_METRICS_BYTES:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                step, loss = record.get("step"), record.get("loss")
                if (not isinstance(step, int) or isinstance(step, bool) or not 0 < step <= up_to_step
                        or not isinstance(loss, (int, float)) or isinstance(loss, bool)):
                    continue
                if steps and step <= steps[-1]:  # a log appended after a restart: the later lines win
                    while steps and step <= steps[-1]:
                        steps.pop()
                        losses.pop()
                steps.append(step)
                losses.append(float(loss))
    except OSError:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.asarray(steps, dtype=np.int64), np.asarray(losses, dtype=np.float64)


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
