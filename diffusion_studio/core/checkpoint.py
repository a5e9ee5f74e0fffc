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
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .schedule import NoiseSchedule
from .unet import PRESETS, UNet, UNetConfig

FORMAT = "diffusion-studio-checkpoint"
FORMAT_VERSION = 1
_UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{Path(path).name}: {reason}" if path is not None else reason)


@dataclass
class Checkpoint:
    """A loaded checkpoint: its manifest and its tensors, grouped by prefix (model, ema, optim, rng)."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def model_config(self) -> UNetConfig:
        return UNetConfig.from_dict(self.meta["model"])

    @property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_dict(self.meta["schedule"])

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("data", {}).get("class_names")

    def build_model(self, device: str | torch.device = "cpu", use_ema: bool = True) -> UNet:
        """The network with the EMA weights (when present and use_ema) loaded, in eval mode."""
        model = UNet(self.model_config)
        group = "ema" if use_ema and "ema" in self.tensors else "model"
        _load_state(model, self.tensors[group], self.path, group)
        return model.to(device).eval()


# ---- writing --------------------------------------------------------------------------------------------------------
def _fsync_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; checkpoints are shared, so give it the usual 0666 minus the umask.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    started = time.time()
    mpath = manifest_path(path)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{g}.{k}": v.detach().to("cpu").contiguous() for g, d in tensors.items() for k, v in d.items()}
    step = int(meta.get("step", 0))
    stamp = _dt.datetime.now(_dt.timezone.utc)
    weights_name = f"{mpath.stem}-{step:07d}-{stamp.strftime('%Y%m%d%H%M%S%f')}.safetensors"
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": stamp.isoformat(timespec="seconds"),
                 **meta, "groups": sorted(tensors)}
    blob = st_save(flat, metadata={FORMAT: json.dumps(full_meta)})
    _fsync_write(mpath.parent / weights_name, blob)
    manifest = {**full_meta, "weights": weights_name, "sha256": hashlib.sha256(blob).hexdigest()}
    _fsync_write(mpath, json.dumps(manifest, indent=2).encode())
    prefix = f"{mpath.stem}-"
    for old in mpath.parent.glob(f"{mpath.stem}-*.safetensors"):
        rest = old.name[len(prefix):]
        if old.name != weights_name and rest[:7].isdigit() and rest[7:8] == "-":
            with contextlib.suppress(OSError):
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


def _read_manifest(mpath: Path) -> dict[str, Any]:
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(mpath, "no such checkpoint file") from None
    except OSError as e:
        raise CheckpointError(mpath, f"cannot read ({e.strerror or e})") from None
    _refuse_pickle(mpath)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(mpath, f"the manifest is not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(mpath, f"not a Diffusion Studio checkpoint manifest (no \"format\": \"{FORMAT}\")")
    return meta


def _validate_meta(meta: dict[str, Any], where: Path) -> None:
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(where, f"format_version must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(where, f"written by a newer Diffusion Studio (format {version})")
    for key in ("model", "schedule"):
        if key not in meta:
            raise CheckpointError(where, f"the manifest has no \"{key}\" section")
    preset = meta["model"].get("preset") if isinstance(meta["model"], dict) else None
    if preset is not None and preset not in PRESETS:
        raise CheckpointError(where, f"model.preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    try:
        UNetConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(where, f"model: {e}") from None
    try:
        NoiseSchedule.from_dict(meta["schedule"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(where, f"schedule: {e}") from None


def load_checkpoint(path: str | os.PathLike, groups: tuple[str, ...] | None = None) -> Checkpoint:
    """Read and validate a checkpoint (manifest .json, its folder, or a lone .safetensors). Never unpickles."""
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(p, "refused: this looks like a PyTorch/pickle file, which can run code when loaded; "
                                 "Diffusion Studio loads only safetensors + JSON checkpoints")
    if not p.exists() and not manifest_path(p).exists():  # "run" names run.json, as it does for save_checkpoint
        raise CheckpointError(p, "no such file or folder")
    embedded_only = p.suffix == ".safetensors"
    if embedded_only:
        wpath, meta, expected_sha = p, None, None
    else:
        mpath = manifest_path(p)
        meta = _read_manifest(mpath)
        if "weights" not in meta or "/" in str(meta["weights"]) or "\\" in str(meta["weights"]):
            raise CheckpointError(mpath, "the manifest does not name a weights file in its own folder")
        wpath, expected_sha = mpath.parent / meta["weights"], meta.get("sha256")
    try:
        blob = wpath.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(wpath, "the weights file named by the manifest is missing") from None
    except OSError as e:
        raise CheckpointError(wpath, f"cannot read ({e.strerror or e})") from None
    if len(blob) < 10 or blob[8:9] != b"{":  # a safetensors file is an 8-byte length, then a JSON header
        _refuse_pickle(wpath, blob[:16])
        raise CheckpointError(wpath, "not a safetensors file (truncated or another format)")
    if expected_sha and hashlib.sha256(blob).hexdigest() != expected_sha:
        raise CheckpointError(wpath, "the weights file is truncated or corrupted (SHA-256 does not match the manifest)")
    try:
        flat = st_load(blob)
        header_meta = _embedded_meta(blob)
    except (SafetensorError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise CheckpointError(wpath, f"not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
    if meta is None:
        if header_meta is None:
            raise CheckpointError(wpath, "this safetensors file carries no Diffusion Studio manifest")
        if not isinstance(header_meta, dict):
            raise CheckpointError(wpath, "the embedded manifest is not a JSON object")
        meta = header_meta
    # A bad setting in the manifest is the manifest's fault: name that file, not the weights it points to.
    _validate_meta(meta, wpath if embedded_only else mpath)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        g, _, name = key.partition(".")
        if groups is None or g in groups:
            grouped.setdefault(g, {})[name] = tensor
    if "model" not in grouped and "ema" not in grouped and (groups is None or {"model", "ema"} & set(groups)):
        raise CheckpointError(wpath, "the weights file holds no model weights")
    ckpt = Checkpoint(path=wpath if embedded_only else manifest_path(p), meta=meta, tensors=grouped)
    # Shapes are checked here, so a bad file fails before anything already loaded is replaced.
    for g in ("model", "ema"):
        if g in grouped:
            _load_state(UNet(ckpt.model_config), grouped[g], wpath, g, dry_run=True)
    return ckpt


def _embedded_meta(blob: bytes) -> dict[str, Any] | None:
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    raw = header.get("__metadata__", {}).get(FORMAT)
    return json.loads(raw) if raw else None


def _load_state(model: UNet, state: dict[str, torch.Tensor], path: Path, group: str, dry_run: bool = False) -> None:
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
