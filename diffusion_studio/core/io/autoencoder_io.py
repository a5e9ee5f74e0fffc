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
from .checkpoint import FORMAT, PICKLE_SUFFIXES, read_header, save_checkpoint
from .manifest import Float, Int, ListOf, Obj, check, parameter_count
from ..errors import CheckpointError

AE_MANIFEST = "autoencoder.json"
KIND = "autoencoder"
GROUP = "autoencoder"
MAX_MANIFEST_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30
# Four times Stable Diffusion's VAE (84M); 800 MB of float32. The widths below alone would allow billions.
MAX_PARAMETERS = 200_000_000
# Every AutoencoderConfig field, by type and range (the UNet manifest's limits where they overlap: image_size,
# base_channels, channel multipliers, groups); factor, channels and divisibility are then AutoencoderConfig.validate's.
CONFIG_FIELDS = {
    "image_size": Int(2, 2048), "image_channels": Int(1, 3), "factor": Int(2, 8), "latent_channels": Int(1, 64),
    "base_channels": Int(1, 1024), "channel_mults": ListOf(Int(1, 16), 3), "num_res_blocks": Int(0, 16),
    "groups": Int(1, 1024),
}
CONFIG_SPEC = Obj(CONFIG_FIELDS)
SCALE_SPEC = Float(0.0, 1e6, lo_open=True)
WEIGHT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
_DTYPE_NAMES = {v: k for k, v in WEIGHT_DTYPES.items()}


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
    """The stored config and scale factor, or a one-line CheckpointError naming the bad field: every field by type and
    range, then the network's size counted on the meta device (nothing allocated)."""
    fail = lambda reason: CheckpointError(where, reason)  # noqa: E731
    check(section, CONFIG_SPEC, field, fail)
    try:
        config = AutoencoderConfig.from_dict(section)
    except (TypeError, ValueError) as e:
        raise CheckpointError(where, f"{field}: {e}") from None
    n = parameter_count(expected_shapes(config))
    if n > MAX_PARAMETERS:
        raise CheckpointError(where, f"{field}: this config has {n:,} parameters, more than the {MAX_PARAMETERS:,} an "
                                     f"autoencoder may have (base_channels {config.base_channels}, channel_mults "
                                     f"{list(config.mults)}, num_res_blocks {config.num_res_blocks})")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise CheckpointError(where, f"scale_factor: must be a positive number, got {scale!r}"[:200])
    check(scale, SCALE_SPEC, "scale_factor", fail)
    return config, float(scale)


def expected_shapes(config: AutoencoderConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of the autoencoder ``config`` describes, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = Autoencoder(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights(config: AutoencoderConfig, found: dict[str, tuple[tuple[int, ...], str]], where: Path) -> None:
    """Names, shapes and dtypes (name → (shape, safetensors dtype)) against the config, before any weight is read."""
    expected = expected_shapes(config)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0][:80]}"
        raise CheckpointError(where, f"autoencoder weights do not match its config ({what}; {len(missing)} missing, "
                                     f"{len(extra)} unexpected)")
    for k, (shape, dtype) in found.items():
        if tuple(shape) != expected[k]:
            raise CheckpointError(where, f"autoencoder weight {k} has shape {tuple(shape)}, its config needs "
                                         f"{expected[k]}")
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(where, f"autoencoder weight {k} is {dtype}; only float16, bfloat16 and float32 "
                                         f"weights are accepted")


def build_autoencoder(config: AutoencoderConfig, state: dict[str, torch.Tensor], where: Path) -> Autoencoder:
    """The network with ``state`` loaded after checking names, shapes, dtypes (on the meta device, before anything is
    allocated) and finiteness; CheckpointError otherwise."""
    check_weights(config, {k: (tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype).replace("torch.", "")))
                           for k, v in state.items()}, where)
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(where, f"autoencoder weight {k} holds NaN or Inf values")
    model = Autoencoder(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().requires_grad_(False)


def _read_weights(wpath: Path, config: AutoencoderConfig) -> bytes:
    """The weights file's bytes, once its header (checked against the file's real size) fits ``config``."""
    from .safeio import open_regular

    with open_regular(wpath, MAX_WEIGHTS_BYTES, CheckpointError, "weights file") as f:
        header, _ = read_header(f, wpath)
        prefix = f"{GROUP}."
        found = {k[len(prefix):]: (tuple(v["shape"]), v["dtype"]) for k, v in header.items()
                 if k != "__metadata__" and k.startswith(prefix)}
        check_weights(config, found, wpath)
        f.seek(0)
        return f.read()


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
    blob = _read_weights(wpath, config)
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
