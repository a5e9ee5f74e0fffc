"""What a newcomer expects of a Training run (Qt-free, run in the worker or on small files): a batch fitted to a
small dataset, a preview at step 0, run folders named after data, model and space, the interrupted-run record, the
runs folder listed newest first (manifests only) and a plain word on a chosen file that is no checkpoint. The loss
log itself (metrics.jsonl, one format for the app and the CLI) is core/train/runlog.py."""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

CHECKPOINT_SUFFIXES = (".json", ".safetensors")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")  # the loader refuses these by name
MAX_LISTED_RUNS = 12        # run manifests the model lists read, newest first
MAX_SCANNED_ENTRIES = 2000  # folder entries looked at in the runs folder (a huge folder stays quick)
MAX_RUN_MANIFEST = 1 << 20  # a run's checkpoint.json is a few KB; a bigger one is not listed


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


def run_label(dataset_spec: str, preset: str, image_size: int, latent: bool = False, text: bool = False) -> str:
    """'digits-tiny-16px' for builtin:digits; a folder gives its own name; '-latent' and '-text' say a latent run
    and a run conditioned on captions ('shapes-tiny-32px-latent-text')."""
    spec = str(dataset_spec).strip()
    if spec.startswith("builtin:"):
        data = spec.split(":", 1)[1]
    elif ":" in spec and not Path(spec).exists():  # mnist:PATH, cifar10:PATH
        kind, _, rest = spec.partition(":")
        data = f"{kind}-{Path(rest).name}" if rest else kind
    else:
        data = Path(spec).name or spec
    label = f"{_slug(data)}-{_slug(preset, 12)}-{int(image_size)}px"
    return label + ("-latent" if latent else "") + ("-text" if text else "")


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


# ---- a file the user chose ------------------------------------------------------------------------------------------
def checkpoint_file_problem(path: str | Path) -> str | None:
    """One line on what is wrong with the file or folder the user chose as a checkpoint, naming it (None: go on).

    Checked before loading, so a chosen notes.txt is named itself, not the notes.json a loader would look for beside
    it. A pickle file (.pt …) goes on: the loader refuses it with its own reason."""
    p = Path(path).expanduser()
    if p.is_dir() or p.suffix.lower() in PICKLE_SUFFIXES:
        return None
    if not p.exists():
        return f"{p.name}: no such file or folder"
    if p.suffix not in CHECKPOINT_SUFFIXES:
        return (f"{p.name}: not a checkpoint (choose a run's checkpoint.json, its .safetensors weights or its "
                f"folder)")
    return None


# ---- the runs folder ------------------------------------------------------------------------------------------------
@dataclass
class RunEntry:
    """One run of the runs folder, from its checkpoint.json alone (no weights read)."""

    path: Path       # the run's checkpoint.json
    label: str       # e.g. "digits · tiny · 16 px · latent · text · step 1,355 · 7 Dec 21:05"
    step: int
    mtime: float


def _describe_run(path: Path, meta: dict, mtime: float) -> str:
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    latent = meta.get("latent") if isinstance(meta.get("latent"), dict) else None
    spec = str(data.get("spec") or "")
    name = data.get("name") or (spec.split(":", 1)[1] if spec.startswith("builtin:") else Path(spec).name) or \
        path.parent.name
    size = data.get("size") if isinstance(data.get("size"), int) else model.get("image_size")
    parts = [str(name)[:40], str(model.get("preset") or "custom")[:16]]
    if isinstance(size, int):
        parts.append(f"{size} px")
    if latent is not None:
        parts.append("latent")
    if train.get("text") or model.get("text_encoder"):
        parts.append("text")
    parts.append(f"step {meta['step']:,}")
    when = _dt.datetime.fromtimestamp(mtime)
    parts.append(f"{when.day} {when:%b %H:%M}")
    return " · ".join(parts)


def recent_runs(folder: str | Path, limit: int = MAX_LISTED_RUNS) -> list[RunEntry]:
    """The runs in ``folder`` (each a subfolder with a checkpoint.json), newest first, at most ``limit``.

    Reads only the small manifests of the newest ``limit`` candidates (by the manifest's modification time) and at
    most MAX_SCANNED_ENTRIES folder entries; anything unreadable, too big or not a diffusion checkpoint (an
    autoencoder's folder, a 2-D points model) is left out. Never raises for a missing or unreadable folder."""
    base = Path(folder).expanduser()
    found: list[tuple[float, Path]] = []
    try:
        with os.scandir(base) as it:
            for k, entry in enumerate(it):
                if k >= MAX_SCANNED_ENTRIES:
                    break
                manifest = Path(entry.path) / "checkpoint.json"
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    st = manifest.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_RUN_MANIFEST:
                    found.append((st.st_mtime, manifest))
    except OSError:
        return []
    found.sort(key=lambda x: x[0], reverse=True)
    runs: list[RunEntry] = []
    for mtime, manifest in found[: max(0, limit) * 2]:  # a few unreadable ones may be skipped
        if len(runs) >= limit:
            break
        try:
            meta = json.loads(manifest.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("format") != "diffusion-studio-checkpoint":
            continue
        step = meta.get("step")
        data = meta.get("data")
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(meta.get("model"), dict) or \
                (isinstance(data, dict) and data.get("kind") == "points"):
            continue
        runs.append(RunEntry(manifest, _describe_run(manifest, meta, mtime), step, mtime))
    return runs
