"""The one place a checkpoint manifest is checked: every field by type and range, the first bad one named.

Each section (model, schedule, train, data, ...) has a table of field specs below; sections it does not list are
allowed (newer files) but must stay plain JSON. A field a table does not list is checked by its dataclass annotation
(``int | None`` ...) with a generic cap, so no manifest can ask for gigabytes through a field nobody thought of.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

from ..diffusion.schedule import KINDS, MAX_T
from ..nets.mlp import MLPConfig
from ..nets.networks import build_network
from ..nets.unet import UNetConfig
from ..limits import FLOAT_LIMITS, INT_LIMITS

MAX_PARAMETERS = 2_000_000_000
GENERIC_INT_CAP = 1 << 16


class Bad(ValueError):
    """A field that fails its spec; str() is "field: reason"."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


class Spec:
    def check(self, value: Any, name: str) -> None:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Int(Spec):
    lo: int
    hi: int

    def check(self, value, name):
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise Bad(f"{name}: must be a whole number in {self.lo:,}..{self.hi:,}, got {_show(value)}")


@dataclasses.dataclass(frozen=True)
class Float(Spec):
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def check(self, value, name):
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if ok:
            ok = (value > self.lo if self.lo_open else value >= self.lo) and \
                 (value < self.hi if self.hi_open else value <= self.hi)
        if not ok:
            interval = f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
            raise Bad(f"{name}: must be a finite number in {interval}, got {_show(value)}")


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
    def check(self, value, name):
        if not isinstance(value, bool):
            raise Bad(f"{name}: must be true or false, got {_show(value)}")


@dataclasses.dataclass(frozen=True)
class Str(Spec):
    max_len: int = 4096
    choices: tuple[str, ...] | None = None
    pattern: str | None = None

    def check(self, value, name):
        if not isinstance(value, str):
            raise Bad(f"{name}: must be a string, got {_show(value)}")
        if len(value) > self.max_len:
            raise Bad(f"{name}: longer than {self.max_len:,} characters")
        if self.choices is not None and value not in self.choices:
            raise Bad(f"{name}: must be one of {', '.join(self.choices)}, got {_show(value)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Bad(f"{name}: malformed, got {_show(value)}")


@dataclasses.dataclass(frozen=True)
class Optional(Spec):
    inner: Spec

    def check(self, value, name):
        if value is not None:
            self.inner.check(value, name)


@dataclasses.dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max_len: int
    min_len: int = 0

    def check(self, value, name):
        if not isinstance(value, list):
            raise Bad(f"{name}: must be a list, got {_show(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise Bad(f"{name}: must hold {self.min_len}..{self.max_len:,} items, got {len(value):,}")
        for i, v in enumerate(value):
            self.item.check(v, f"{name}[{i}]")


@dataclasses.dataclass(frozen=True)
class Obj(Spec):
    fields: dict = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()
    unknown: Spec | None = None      # spec for keys not in fields; None = refused
    max_keys: int = 1000

    def check(self, value, name):
        if not isinstance(value, dict):
            raise Bad(f"{name}: must be a JSON object, got {_show(value)}")
        if len(value) > self.max_keys:
            raise Bad(f"{name}: more than {self.max_keys} fields")
        for key in self.required:
            if key not in value:
                raise Bad(f"{name}: the field \"{key}\" is missing")
        for key, v in value.items():
            spec = self.fields.get(key, self.unknown)
            if spec is None:
                raise Bad(f"{name}: unknown field \"{str(key)[:60]}\"")
            spec.check(v, f"{name}.{key}")


@dataclasses.dataclass(frozen=True)
class PlainJSON(Spec):
    """Any JSON value, at most max_depth deep and max_items in all (strings ≤ 1 MB)."""

    max_depth: int = 8
    max_items: int = 100_000

    def check(self, value, name):
        budget = [self.max_items]

        def walk(v, depth, where):
            budget[0] -= 1
            if budget[0] < 0:
                raise Bad(f"{name}: too large (more than {self.max_items:,} values)")
            if depth > self.max_depth:
                raise Bad(f"{where}: nested more than {self.max_depth} deep")
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(x, depth + 1, f"{where}.{k}")
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    walk(x, depth + 1, f"{where}[{i}]")
            elif isinstance(v, str) and len(v) > 1 << 20:
                raise Bad(f"{where}: longer than 1 MB")
            elif isinstance(v, float) and not math.isfinite(v):
                raise Bad(f"{where}: must be finite, got {v}")

        walk(value, 0, name)


SCALAR = PlainJSON(max_depth=0)


# ---- the sections ---------------------------------------------------------------------------------------------------
MODEL_FIELDS: dict[str, Spec] = {
    "image_size": Int(2, 2048), "in_channels": Int(1, 64), "base_channels": Int(1, 1024),
    "channel_mults": ListOf(Int(1, 16), 8, 1), "num_res_blocks": Int(1, 16),
    "attn_resolutions": ListOf(Int(1, 2048), 16), "dropout": Float(0, 1, hi_open=True), "num_heads": Int(1, 256),
    "groups": Int(1, 1024), "num_classes": Optional(Int(1, 100_000)), "preset": Optional(Str(64)),
    "norm_eps": Float(0, 1, lo_open=True), "time_sin_first": Bool(), "time_freq_shift": Float(-1e6, 1e6),
    "downsample_padding": Int(0, 8), "prediction": Str(16), "text_encoder": Optional(Str(256)),
    "context_dim": Int(0, 8192), "cross_attn_resolutions": ListOf(Int(1, 2048), 16),
}
MLP_FIELDS: dict[str, Spec] = {
    "arch": Str(16, choices=("mlp",)), "dim": Int(1, 4096), "hidden": Int(1, 8192), "depth": Int(0, 64),
    "t_dim": Int(2, 4096), "num_classes": Optional(Int(1, 100_000)), "norm": Str(16, choices=("layernorm", "none")),
    "dropout": Float(0, 1, hi_open=True), "prediction": Str(16), "preset": Optional(Str(64)),
}
SCHEDULE_FIELDS: dict[str, Spec] = {
    "kind": Str(64), "T": Int(2, MAX_T), "params": Obj(unknown=Float(), max_keys=16),
    "betas": ListOf(Float(0, 1, lo_open=True, hi_open=True), MAX_T, 2),
}
TRAIN_FIELDS: dict[str, Spec] = {
    **{k: Int(lo, hi) for k, (lo, hi) in INT_LIMITS.items()},
    **{k: Float(lo, hi, lo_open, hi_open) for k, (lo, hi, lo_open, hi_open) in FLOAT_LIMITS.items()},
    "steps": Optional(Int(*INT_LIMITS["steps"])), "minutes": Optional(Float(*FLOAT_LIMITS["minutes"])),
    "grad_clip": Optional(Float(*FLOAT_LIMITS["grad_clip"])),
    "lr_schedule": Str(32), "device": Str(64), "precision": Str(16), "flip": Bool(), "channels_last": Optional(Bool()),
    "loss_weighting": Str(32), "compile": Bool(), "class_conditional": Bool(), "text": Bool(),
}  # every TrainConfig field (tests/test_architecture.py holds the two together); the ranges: core/limits.py
PARAM_GROUP = Obj({"lr": Float(0, 1), "initial_lr": Float(0, 1), "betas": ListOf(Float(0, 1, hi_open=True), 2, 2),
                   "eps": Float(0, 1, lo_open=True), "weight_decay": Float(0, 1e4),
                   "params": ListOf(Int(0, 1 << 20), 1 << 20)}, unknown=SCALAR)
SECTIONS: dict[str, Spec] = {
    "format": Str(64), "format_version": Int(0, 1 << 20), "step": Int(0, 10**12), "created": Str(64),
    "weights": Str(255), "sha256": Optional(Str(64, pattern=r"[0-9a-f]{64}")), "groups": ListOf(Str(64), 64),
    "elapsed_s": Optional(Float(0, 1e12)), "last_loss": Optional(Float()),
    "buckets": Optional(ListOf(Optional(Float()), 1000)),
    "optimizer": Obj({"param_groups": ListOf(PARAM_GROUP, 64)}, unknown=PlainJSON()),
    "data": Obj({"spec": Str(8192), "n": Int(0, 10**10), "size": Int(1, 1 << 16), "channels": Int(1, 64),
                 "name": Optional(Str(8192)), "class_names": Optional(ListOf(Str(1024), 100_000))},
                unknown=PlainJSON()),
    "exported": Obj({"from_weights": Str(16), "note": Str(1 << 16)}, unknown=PlainJSON()),
}
def _from_annotation(annotation: Any) -> Spec:
    text = str(annotation).replace(" ", "")
    optional = "None" in text.split("|")
    base = "|".join(t for t in text.split("|") if t != "None")
    inner: Spec = {"int": Int(0, GENERIC_INT_CAP), "float": Float(), "bool": Bool(), "str": Str(4096),
                   "tuple[int,...]": ListOf(Int(0, GENERIC_INT_CAP), 64),
                   "tuple[str,...]": ListOf(Str(4096), 1024)}.get(base, PlainJSON())
    return Optional(inner) if optional else inner


def dataclass_spec(cls: type, explicit: dict[str, Spec], strict: bool = True) -> Obj:
    """An Obj for a config dataclass: explicit specs where given, else one from each field's annotation."""
    fields = {f.name: explicit.get(f.name) or _from_annotation(f.type) for f in dataclasses.fields(cls)}
    fields.update({k: v for k, v in explicit.items() if k not in fields})
    return Obj(fields, unknown=None if strict else PlainJSON())


def check(value: Any, spec: Spec, name: str, fail: Callable[[str], Exception]) -> None:
    """Check one value, raising ``fail("name.field: reason")``."""
    try:
        spec.check(value, name)
    except Bad as e:
        raise fail(str(e)) from None
    except RecursionError:
        raise fail(f"{name}: nested too deeply") from None


def validate_manifest(meta: Any, fail: Callable[[str], Exception]) -> None:
    """Every field of a checkpoint manifest, by type and range; ``fail(reason)`` builds the exception to raise."""
    if not isinstance(meta, dict):
        raise fail("the manifest is not a JSON object")
    for key in ("model", "schedule"):
        if key not in meta:
            raise fail(f"the manifest has no \"{key}\" section")
    mlp = isinstance(meta["model"], dict) and meta["model"].get("arch") == "mlp"
    model = dataclass_spec(MLPConfig, MLP_FIELDS) if mlp else dataclass_spec(UNetConfig, MODEL_FIELDS)
    check(meta["model"], model, "model", fail)
    sched = Obj(SCHEDULE_FIELDS, required=("kind",))
    check(meta["schedule"], sched, "schedule", fail)
    kind = meta["schedule"]["kind"]
    if kind not in (*KINDS, "custom"):
        raise fail(f"schedule.kind: must be one of {', '.join((*KINDS, 'custom'))}, got {_show(kind)}")
    if "train" in meta:
        check(meta["train"], Obj(TRAIN_FIELDS, unknown=PlainJSON()), "train", fail)
    for key, value in meta.items():
        if key in ("model", "schedule", "train"):
            continue
        check(value, SECTIONS.get(key, PlainJSON()), key, fail)


def model_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of the network ``config`` describes, built on the meta device (no memory allocated)."""
    import torch

    with torch.device("meta"):
        model = build_network(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())
