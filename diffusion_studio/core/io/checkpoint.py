"""Checkpoints as data, never code: tensors in safetensors, everything else in a JSON manifest; atomic saves.

Layout: ``NAME.json`` (the manifest) names ``NAME-STEP.safetensors`` and its SHA-256. A save writes the new weights
file under a fresh name, then replaces the manifest with one rename, then removes weights files the manifest no longer
names. A save killed at any moment therefore leaves a manifest that names a complete weights file: the previous
checkpoint, or the new one. The manifest is also embedded in the safetensors header, so a lone weights file loads too.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..diffusion.schedule import NoiseSchedule
from ..errors import CheckpointError
from ..nets.mlp import MLP_PRESET
from ..nets.networks import ModelConfig, build_network, config_from_dict
from ..nets.unet import PRESETS
from .safeio import open_regular, read_regular, write_atomic

FORMAT = "diffusion-studio-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}


@dataclass
class Checkpoint:
    """A loaded checkpoint: its manifest and its tensors, grouped by prefix (model, ema, optim, rng)."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def model_config(self) -> ModelConfig:
        return config_from_dict(self.meta["model"])

    @property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_dict(self.meta["schedule"])

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("data", {}).get("class_names")

    def build_model(self, device: str | torch.device = "cpu", use_ema: bool = True) -> torch.nn.Module:
        """The network (a UNet, or the 2-D MLP) with the EMA weights (when present and use_ema) loaded, in eval mode."""
        model = build_network(self.model_config)
        group = "ema" if use_ema and "ema" in self.tensors else "model"
        _load_state(model, self.tensors[group], self.path, group)
        return model.to(device).eval()


# ---- writing --------------------------------------------------------------------------------------------------------
def manifest_path(path: str | os.PathLike) -> Path:
    """Where the manifest of a checkpoint named by ``path`` lives: NAME.json, or DIR/checkpoint.json for a folder."""
    p = Path(path)
    if p.is_dir():
        return p / "checkpoint.json"
    return p if p.suffix == ".json" else p.with_suffix(".json")


def save_checkpoint(
    path: str | os.PathLike,
    tensors: dict[str, dict[str, torch.Tensor]],
    meta: dict[str, Any],
) -> Path:
    """Write ``tensors`` (groups like model/ema/optim/rng of name → tensor) and the JSON ``meta`` atomically.

    Returns the manifest's path. ``meta`` must hold at least model (a UNetConfig dict), schedule and step.
    """
    from .runkind import KINDS, check_kind
    from .runlock import run_lock

    started = time.time()
    mpath = manifest_path(path)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    # One writer per folder: a second process (another `train`, the GUI, an `export`) gets a clear refusal here
    # instead of both deleting each other's weights. A process that holds the folder for a whole run re-enters.
    with run_lock(mpath.parent, "save a checkpoint"):
        if mpath.name in KINDS:
            check_kind(mpath.parent, mpath.name)
        return _save_locked(mpath, tensors, meta, started)


def _named_weights(folder: Path) -> set[str]:
    """Weights files named by any manifest in ``folder`` (small JSON files only; unreadable ones name nothing)."""

    names: set[str] = set()
    for m in folder.glob("*.json"):
        try:
            data = json.loads(read_regular(m, MAX_MANIFEST_BYTES))
        except (CheckpointError, ValueError, RecursionError):
            continue
        if isinstance(data, dict) and isinstance(data.get("weights"), str):
            names.add(data["weights"])
    return names


def _save_locked(mpath: Path, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any],
                 started: float) -> Path:
    flat = {f"{g}.{k}": v.detach().to("cpu").contiguous() for g, d in tensors.items() for k, v in d.items()}
    step = int(meta.get("step", 0))
    stamp = _dt.datetime.now(_dt.timezone.utc)
    weights_name = f"{mpath.stem}-{step:07d}-{stamp.strftime('%Y%m%d%H%M%S%f')}.safetensors"
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": stamp.isoformat(timespec="seconds"),
                 **meta, "groups": sorted(tensors)}
    blob = st_save(flat, metadata={FORMAT: json.dumps(full_meta)})
    try:
        replaced_ns = os.stat(mpath).st_mtime_ns
    except OSError:
        replaced_ns = None
    write_atomic(mpath.parent / weights_name, blob)
    manifest = {**full_meta, "weights": weights_name, "sha256": hashlib.sha256(blob).hexdigest()}
    write_atomic(mpath, json.dumps(manifest, indent=2).encode())
    prefix = f"{mpath.stem}-"
    # Never deleted: weights any manifest in the folder names. Otherwise, with the folder locked, weights written
    # before this save began (leftovers of killed saves); without a working lock (a file system with no flock), only
    # weights older than the manifest this save replaced, so another writer's fresh file is never taken.
    from .runlock import exclusive

    cutoff_ns = int(started * 1e9) if exclusive(mpath.parent) else replaced_ns
    if cutoff_ns is not None:
        named = _named_weights(mpath.parent) | {weights_name}
        for old in mpath.parent.glob(f"{mpath.stem}-*.safetensors"):
            rest = old.name[len(prefix):]
            if old.name in named or not (rest[:7].isdigit() and rest[7:8] == "-"):
                continue
            with contextlib.suppress(OSError):
                if old.lstat().st_mtime_ns <= cutoff_ns:
                    old.unlink()
    # Temporary files of this checkpoint's earlier saves that were killed mid-write (SIGKILL, power loss): untouched
    # since before this save began, so no save is still writing them. Without this they pile up, one per crash.
    for tmp in (*mpath.parent.glob(f".{mpath.name}.*.tmp"), *mpath.parent.glob(f".{prefix}*.safetensors.*.tmp")):
        rest = tmp.name[len(prefix) + 1:]
        if tmp.name.startswith(f".{mpath.name}.") or (rest[:7].isdigit() and rest[7:8] == "-"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < started:
                    tmp.unlink()
    return mpath


# ---- reading --------------------------------------------------------------------------------------------------------
def _looks_like_pickle(head: bytes) -> bool:
    # Pickles start with the PROTO opcode 0x80; torch.save's zip archives with PK\x03\x04.
    return head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"


def _refuse_pickle(p: Path, head: bytes | None = None) -> None:
    if head is None:
        head = b""
        with contextlib.suppress(OSError):
            with open(p, "rb") as f:
                head = f.read(16)
    if p.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(head):
        raise CheckpointError(p, "refused: this looks like a PyTorch/pickle file, which can run code when loaded; "
                                 "Diffusion Studio loads only safetensors + JSON checkpoints")


MAX_MANIFEST_BYTES = 32 << 20         # a manifest is a few KB; a custom schedule of MAX_T betas is ~2 MB
MAX_HEADER_BYTES = 64 << 20           # a safetensors header: names, shapes and offsets of the tensors
MAX_WEIGHTS_BYTES = 32 << 30          # weights, EMA and Adam moments of a MAX_PARAMETERS model would not fit anyway
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def _parse_json(raw: bytes, where: Path, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(where, f"{what} is not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    except RecursionError:
        raise CheckpointError(where, f"{what} is nested too deeply to be a manifest") from None


def _read_manifest(mpath: Path) -> dict[str, Any]:

    raw = read_regular(mpath, MAX_MANIFEST_BYTES, CheckpointError, "manifest")
    _refuse_pickle(mpath, raw[:16])
    meta = _parse_json(raw, mpath, "the manifest")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(mpath, f"not a Diffusion Studio checkpoint manifest (no \"format\": \"{FORMAT}\")")
    return meta


def _validate_meta(meta: dict[str, Any], where: Path) -> None:
    from .manifest import validate_manifest

    fail = lambda reason: CheckpointError(where, reason)  # noqa: E731
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(where, f"format_version must be a whole number, got {version!r}"[:200])
    if version > FORMAT_VERSION:
        raise CheckpointError(where, f"written by a newer Diffusion Studio (format {version})")
    validate_manifest(meta, fail)
    preset = meta["model"].get("preset")
    known = (*PRESETS, MLP_PRESET)
    if preset is not None and preset not in known:
        raise CheckpointError(where, f"model.preset: unknown preset {preset!r} (known: {', '.join(known)})")
    try:
        config_from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(where, f"model: {e}") from None
    try:
        NoiseSchedule.from_dict(meta["schedule"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(where, f"schedule: {e}") from None


def read_header(f, wpath: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header of an open file (checked against its real size) and where the data starts."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8 or size < 10:
        _refuse_pickle(wpath, head)
        raise CheckpointError(wpath, "not a safetensors file (truncated or another format)")
    n = int.from_bytes(head, "little")
    if n > min(MAX_HEADER_BYTES, size - 8):
        _refuse_pickle(wpath, head)
        raise CheckpointError(wpath, f"not a safetensors file (its header claims {n:,} bytes, the file holds "
                                     f"{size - 8:,})")
    raw = f.read(n)
    if raw[:1] != b"{":
        _refuse_pickle(wpath, head + raw[:8])
        raise CheckpointError(wpath, "not a safetensors file (truncated or another format)")
    header = _parse_json(raw, wpath, "the safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(wpath, "not a readable safetensors file (the header is not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (a, b) = [int(d) for d in info["shape"]], info["data_offsets"]
            itemsize = _DTYPE_BYTES[info["dtype"]]
            ok = all(d >= 0 for d in shape) and isinstance(a, int) and isinstance(b, int) and 0 <= a <= b
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or b - a != math.prod(shape) * itemsize:
            raise CheckpointError(wpath, f"not a readable safetensors file (tensor {str(name)[:80]} is malformed)")
        end = max(end, b)
    if 8 + n + end != size:
        raise CheckpointError(wpath, f"the weights file is truncated or corrupted (its header describes "
                                     f"{8 + n + end:,} bytes, the file holds {size:,})")
    return header, 8 + n


def _check_shapes(header: dict[str, Any], meta: dict[str, Any], wpath: Path, where: Path) -> None:
    """Weight shapes against the model config, from the header alone: nothing is allocated for a wrong file."""
    from .manifest import MAX_PARAMETERS, model_shapes, parameter_count

    present = {k.partition(".")[0] for k in header if k != "__metadata__"}
    for group in ("model", "ema"):
        if group not in present:
            continue
        expected = model_shapes(config_from_dict(meta["model"]))
        n = parameter_count(expected)
        if n > MAX_PARAMETERS:
            raise CheckpointError(where, f"model: this config has {n:,} parameters, more than the "
                                         f"{MAX_PARAMETERS:,} Diffusion Studio accepts")
        found = {k.partition(".")[2]: tuple(v["shape"]) for k, v in header.items() if k.partition(".")[0] == group}
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        if missing or extra:
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            raise CheckpointError(wpath, f"{group} weights do not match the model config ({what}; "
                                         f"{len(missing)} missing, {len(extra)} unexpected)")
        for k, shape in found.items():
            if shape != tuple(expected[k]):
                raise CheckpointError(wpath, f"{group} weight {k} has shape {shape}, the model config needs "
                                             f"{tuple(expected[k])}")


def _read_weights(wpath: Path, meta: dict[str, Any] | None, mpath: Path | None,
                  expected_sha: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:

    with open_regular(wpath, MAX_WEIGHTS_BYTES, CheckpointError, "weights file") as f:
        header, _ = read_header(f, wpath)
        if meta is None:
            raw = header.get("__metadata__", {}).get(FORMAT) if isinstance(header.get("__metadata__"), dict) else None
            if not raw:
                raise CheckpointError(wpath, "this safetensors file carries no Diffusion Studio manifest")
            meta = _parse_json(raw.encode() if isinstance(raw, str) else b"", wpath, "the embedded manifest")
            if not isinstance(meta, dict):
                raise CheckpointError(wpath, "the embedded manifest is not a JSON object")
        # A bad setting in the manifest is the manifest's fault: name that file, not the weights it points to.
        where = mpath if mpath is not None else wpath
        _validate_meta(meta, where)
        _check_shapes(header, meta, wpath, where)
        f.seek(0)
        blob = f.read()
    if expected_sha and hashlib.sha256(blob).hexdigest() != expected_sha:
        raise CheckpointError(wpath, "the weights file is truncated or corrupted (SHA-256 does not match the manifest)")
    try:
        flat = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(wpath, f"not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
    return flat, meta


def load_checkpoint(path: str | os.PathLike, groups: tuple[str, ...] | None = None) -> Checkpoint:
    """Read and validate one of our checkpoints (manifest .json, its folder, or a lone .safetensors). Never unpickles.
    Any model a user names (builtin:NAME, a diffusers folder too): core/io/models.py's open_checkpoint.

    Every manifest field is checked, then the weight shapes (from the safetensors header) against the model config,
    before the weights are read: memory follows the real file, not what a manifest or header claims.
    """
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(p, "refused: this looks like a PyTorch/pickle file, which can run code when loaded; "
                                 "Diffusion Studio loads only safetensors + JSON checkpoints")
    if not p.exists() and not manifest_path(p).exists() and not p.is_symlink():
        raise CheckpointError(p, "no such file or folder")
    embedded_only = p.suffix == ".safetensors"
    for attempt in range(3):
        if embedded_only:
            wpath, meta, expected_sha, mpath = p, None, None, None
        else:
            mpath = manifest_path(p)
            meta = _read_manifest(mpath)
            weights = meta.get("weights")
            if not isinstance(weights, str) or not weights or "/" in weights or "\\" in weights or \
                    weights in (".", ".."):
                raise CheckpointError(mpath, "the manifest does not name a weights file in its own folder")
            sha = meta.get("sha256")
            wpath, expected_sha = mpath.parent / weights, sha if isinstance(sha, str) else None
        try:
            flat, meta = _read_weights(wpath, meta, mpath, expected_sha)
            break
        except CheckpointError as e:
            # A writer may have saved again between reading the manifest and opening its weights: read it anew.
            if e.reason != "no such file" or mpath is None:
                raise
            if attempt == 2:
                raise CheckpointError(wpath, "the weights file named by the manifest is missing") from None
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        g, _, name = key.partition(".")
        if groups is None or g in groups:
            grouped.setdefault(g, {})[name] = tensor
    if "model" not in grouped and "ema" not in grouped and (groups is None or {"model", "ema"} & set(groups)):
        raise CheckpointError(wpath, "the weights file holds no model weights")
    for g in ("model", "ema"):
        for k, v in grouped.get(g, {}).items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise CheckpointError(wpath, f"{g} weight {k} holds NaN or Inf values")
    return Checkpoint(path=wpath if embedded_only else manifest_path(p), meta=meta, tensors=grouped)


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, group: str, dry_run: bool = False) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(path, f"{group} weights do not match the model config ({what}; "
                                    f"{len(missing)} missing, {len(extra)} unexpected)")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(path, f"{group} weight {k} has shape {tuple(v.shape)}, "
                                        f"the model config needs {tuple(expected[k].shape)}")
        if not torch.isfinite(v).all():
            raise CheckpointError(path, f"{group} weight {k} holds NaN or Inf values")
    if not dry_run:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
