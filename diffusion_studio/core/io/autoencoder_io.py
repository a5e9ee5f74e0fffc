"""Autoencoders on disk (safetensors + JSON, never unpickled), their content fingerprint, and `builtin:NAME` specs."""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from ..nets.autoencoder import Autoencoder, AutoencoderConfig
from .checkpoint import FORMAT, PICKLE_SUFFIXES, save_checkpoint
from ..errors import CheckpointError

AE_MANIFEST = "autoencoder.json"
KIND = "autoencoder"
GROUP = "autoencoder"
MAX_MANIFEST_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30


@dataclass
class LoadedAutoencoder:
    """A trained autoencoder ready to use: the network (eval mode), its latent scale factor and identity."""

    model: Autoencoder
    scale_factor: float
    fingerprint: str
    source: str                     # the spec it was loaded from (a path or builtin:NAME), for messages
    meta: dict[str, Any]

    @property
    def config(self) -> AutoencoderConfig:
        return self.model.config


def fingerprint(config: AutoencoderConfig, state: dict[str, torch.Tensor], scale_factor: float) -> str:
    """SHA-256 of what decides the decoder's output: the config, the scale factor and every weight's values.

    The same weights give the same fingerprint however and whenever they were saved (a file's own hash would not).
    """
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    h.update(repr(float(scale_factor)).encode())
    for name in sorted(state):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_autoencoder(path: str | os.PathLike, model: Autoencoder, scale_factor: float,
                     extra: dict[str, Any] | None = None) -> Path:
    """Write AE_DIR/autoencoder.json and its weights atomically; returns the manifest's path."""
    p = Path(path)
    mpath = p if p.suffix == ".json" else p / AE_MANIFEST
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    meta = {**(extra or {}), "kind": KIND, "autoencoder": model.config.to_dict(),
            "scale_factor": float(scale_factor), "fingerprint": fingerprint(model.config, state, scale_factor)}
    meta.setdefault("step", 0)
    return save_checkpoint(mpath, {GROUP: state}, meta)


def resolve_autoencoder_spec(spec: str | os.PathLike) -> Path:
    """``builtin:NAME`` → resources/models/NAME/autoencoder.json; a folder → its autoencoder.json; else the path."""
    from ...resources import BUILTIN_PREFIX, UnknownModelError, models_dir

    text = os.fspath(spec).strip()
    if text.lower().startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):].strip()
        root = models_dir()
        shipped = sorted(d.name for d in root.iterdir() if (d / AE_MANIFEST).is_file()) if root.is_dir() else []
        listing = ", ".join(f"builtin:{n}" for n in shipped) or "none are installed"
        if not name or "/" in name or "\\" in name or ".." in name or not (root / name / AE_MANIFEST).is_file():
            raise UnknownModelError(f"builtin:{name}: no such built-in autoencoder (available: {listing})")
        return root / name / AE_MANIFEST
    p = Path(text).expanduser()
    return p / AE_MANIFEST if p.is_dir() else p


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        from .safeio import read_regular  # regular files only, bounded: never hangs on a FIFO
    except ImportError:
        read_regular = None
    if read_regular is not None:
        return read_regular(path, limit, CheckpointError, what)
    if not path.is_file():
        raise CheckpointError(path, f"not a regular {what}")
    if path.stat().st_size > limit:
        raise CheckpointError(path, f"too large for a {what} (the limit is {limit:,} bytes)")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CheckpointError(path, f"cannot read ({e.strerror or e})") from None


def _parse_meta(raw: bytes, where: Path) -> dict[str, Any]:
    if raw[:1] == b"\x80" or raw[:4] == b"PK\x03\x04" or where.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(where, "refused: this looks like a PyTorch/pickle file, which can run code when loaded; "
                                     "Diffusion Studio loads only safetensors + JSON checkpoints")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(where, f"the manifest is not valid JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(where, f"not a Diffusion Studio manifest (no \"format\": \"{FORMAT}\")")
    if meta.get("kind") != KIND:
        hint = " (a diffusion model; give it as --model, not --autoencoder)" if "model" in meta else ""
        raise CheckpointError(where, f"not an autoencoder{hint}")
    return meta


def check_config_and_scale(section: Any, scale: Any, where: Path, field: str = "autoencoder"):
    """The stored config and scale factor, or a one-line CheckpointError naming the bad field."""
    try:
        config = AutoencoderConfig.from_dict(section)
    except (TypeError, ValueError) as e:
        raise CheckpointError(where, f"{field}: {e}") from None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise CheckpointError(where, f"scale_factor: must be a positive number, got {scale!r}"[:200])
    return config, float(scale)


def build_autoencoder(config: AutoencoderConfig, state: dict[str, torch.Tensor], where: Path) -> Autoencoder:
    """The network with ``state`` loaded after checking names, shapes and finiteness (CheckpointError otherwise)."""
    model = Autoencoder(config)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(where, f"autoencoder weights do not match its config ({what})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(where, f"autoencoder weight {k} has shape {tuple(v.shape)}, its config needs "
                                         f"{tuple(expected[k].shape)}")
        if not torch.isfinite(v).all():
            raise CheckpointError(where, f"autoencoder weight {k} holds NaN or Inf values")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().requires_grad_(False)


def load_autoencoder(spec: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedAutoencoder:
    """Read, check and build a saved autoencoder (AE_DIR, its autoencoder.json, or builtin:NAME). Never unpickles."""
    mpath = resolve_autoencoder_spec(spec)
    if not mpath.exists():
        raise CheckpointError(mpath, "no such autoencoder (expected a folder written by train-autoencoder, or its "
                                     "autoencoder.json)")
    meta = _parse_meta(_read(mpath, MAX_MANIFEST_BYTES, "manifest"), mpath)
    weights = meta.get("weights")
    if not isinstance(weights, str) or not weights or "/" in weights or "\\" in weights or weights in (".", ".."):
        raise CheckpointError(mpath, "the manifest does not name a weights file in its own folder")
    config, scale = check_config_and_scale(meta.get("autoencoder"), meta.get("scale_factor"), mpath)
    wpath = mpath.parent / weights
    if not wpath.exists():
        raise CheckpointError(wpath, "the weights file named by the manifest is missing")
    blob = _read(wpath, MAX_WEIGHTS_BYTES, "weights file")
    if isinstance(meta.get("sha256"), str) and hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointError(wpath, "the weights file is truncated or corrupted (SHA-256 does not match the manifest)")
    try:
        flat = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(wpath, f"not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
    prefix = f"{GROUP}."
    state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    model = build_autoencoder(config, state, wpath)
    fp = fingerprint(config, state, scale)
    return LoadedAutoencoder(model.to(device), scale, fp, os.fspath(spec), meta)
