"""Diffusers folders (model_index.json, unet/, scheduler/) read as this project's UNet and NoiseSchedule, exactly.

Covers the DDPM-style ``UNet2DModel`` configs of google/ddpm-cifar10-32, -celebahq-256, -church-256, -bedroom-256 and
-cat-256: ResNet blocks with optional self-attention, sinusoidal time embedding, conv down/up-sampling. Weights come
only from .safetensors files (a .bin is a pickle and can run code); anything this UNet cannot reproduce exactly is
refused in one line that names the config key.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, read_header
from .manifest import (
    MAX_PARAMETERS, MODEL_FIELDS, Bad, Bool, Float, Int, ListOf, Optional, PlainJSON, Spec, Str, check, dataclass_spec,
)
from ..errors import CheckpointError
from ..diffusion.schedule import NoiseSchedule
from ..nets.unet import UNet, UNetConfig

WEIGHTS = "diffusion_pytorch_model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 16 << 30
DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}   # block type → has self-attention
UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")

# diffusers' own defaults for keys a config may leave out (UNet2DModel.__init__)
UNET_DEFAULTS: dict[str, Any] = dict(
    sample_size=None, in_channels=3, out_channels=3, center_input_sample=False, time_embedding_type="positional",
    time_embedding_dim=None, freq_shift=0, flip_sin_to_cos=True,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    mid_block_type="UNetMidBlock2D", up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(224, 448, 672, 896), layers_per_block=2, mid_block_scale_factor=1, downsample_padding=1,
    downsample_type="conv", upsample_type="conv", dropout=0.0, act_fn="silu", attention_head_dim=8,
    norm_num_groups=32, attn_norm_num_groups=None, norm_eps=1e-5, resnet_time_scale_shift="default",
    add_attention=True, class_embed_type=None, num_class_embeds=None, num_train_timesteps=None,
)
# keys whose value must be exactly this for the project's UNet to compute the same function
UNET_FIXED: dict[str, Any] = dict(
    center_input_sample=False, time_embedding_type="positional", mid_block_type="UNetMidBlock2D",
    mid_block_scale_factor=1, downsample_type="conv", upsample_type="conv", act_fn="silu",
    resnet_time_scale_shift="default", add_attention=True, class_embed_type=None, num_class_embeds=None,
)
SCHEDULER_DEFAULTS: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", trained_betas=None,
    variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0, prediction_type="epsilon",
    thresholding=False, rescale_betas_zero_snr=False,
)
VARIANCES = {"fixed_small": "beta_tilde", "fixed_large": "beta"}
# At most 128 x 128 positions may attend to each other: the score matrix of one head and image is then 1 GiB
# (float32); every published google/ddpm-* UNet attends at 16 x 16.
MAX_ATTENTION_SIDE = 128
WEIGHT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
_IMAGE_SIZE = (MODEL_FIELDS["image_size"].lo, MODEL_FIELDS["image_size"].hi)


class _Side(Spec):
    """sample_size: one side in pixels, or [side, side] (the manifest's image_size range)."""

    def check(self, value, name):
        side = Int(*_IMAGE_SIZE)
        if isinstance(value, list):
            ListOf(side, 2, 2).check(value, name)
            if value[0] != value[1]:
                raise Bad(f"{name}: needs one square side in pixels, got {value!r}")
        else:
            side.check(value, name)


STR = Str(64)
# every UNet2DModel key the converter reads, by type and range (our manifest's limits where they meet: model.*)
UNET_FIELDS: dict[str, Spec] = {
    "sample_size": _Side(), "in_channels": Int(1, 64), "out_channels": Int(1, 64), "center_input_sample": Bool(),
    "time_embedding_type": STR, "time_embedding_dim": Optional(Int(1, 1 << 16)), "freq_shift": Float(-1e6, 1e6),
    "flip_sin_to_cos": Bool(), "down_block_types": ListOf(STR, 8, 1), "mid_block_type": Optional(STR),
    "up_block_types": ListOf(STR, 8, 1), "block_out_channels": ListOf(Int(1, 4096), 8, 1),
    "layers_per_block": Int(1, 16), "mid_block_scale_factor": Float(-1e6, 1e6), "downsample_padding": Int(0, 1),
    "downsample_type": Optional(STR), "upsample_type": Optional(STR), "dropout": Float(0, 1, hi_open=True),
    "act_fn": STR, "attention_head_dim": Optional(Int(1, 4096)), "norm_num_groups": Int(1, 1024),
    "attn_norm_num_groups": Optional(Int(1, 1024)), "norm_eps": Float(0, 1, lo_open=True),
    "resnet_time_scale_shift": STR, "add_attention": Bool(), "class_embed_type": Optional(STR),
    "num_class_embeds": Optional(Int(0, 100_000)), "num_train_timesteps": Optional(Int(1, 10**6)),
}
SCHEDULER_FIELDS: dict[str, Spec] = {
    "num_train_timesteps": Int(2, 100_000), "beta_start": Float(0, 1), "beta_end": Float(0, 1),
    "beta_schedule": STR, "trained_betas": Optional(ListOf(Float(0, 1), 100_000)), "variance_type": Optional(STR),
    "clip_sample": Bool(), "clip_sample_range": Float(0, 1e6), "prediction_type": STR, "thresholding": Bool(),
    "rescale_betas_zero_snr": Bool(), "dynamic_thresholding_ratio": Float(), "sample_max_value": Float(),
    "steps_offset": Int(0, 100_000), "timestep_spacing": STR, "set_alpha_to_one": Bool(),
}
# our UNetConfig field → the diffusers key it comes from (for a message naming the key the user can edit)
FROM_KEYS = {"image_size": "sample_size", "in_channels": "in_channels", "base_channels": "block_out_channels",
             "channel_mults": "block_out_channels", "num_res_blocks": "layers_per_block",
             "attn_resolutions": "down_block_types", "dropout": "dropout", "num_heads": "attention_head_dim",
             "groups": "norm_num_groups", "norm_eps": "norm_eps", "time_sin_first": "flip_sin_to_cos",
             "time_freq_shift": "freq_shift", "downsample_padding": "downsample_padding"}


def _check_fields(c: dict[str, Any], fields: dict[str, Spec], where: Path, unknown: Spec | None) -> None:
    """Every key of a config by its spec (``unknown`` for keys the table does not list); keys starting with "_" are
    diffusers' own bookkeeping and need only be plain JSON."""
    fail = lambda reason: CheckpointError(where, reason)  # noqa: E731
    for key, value in c.items():
        spec = PlainJSON() if key.startswith("_") else fields.get(key, unknown)
        if spec is not None:
            check(value, spec, key, fail)


def diffusers_folder(path: str | Path) -> Path | None:
    """The folder when ``path`` is a diffusers pipeline folder (or its model_index.json), else None."""
    p = Path(path)
    try:
        if p.name == "model_index.json" and p.is_file():
            return p.parent
        if p.is_dir() and (p / "model_index.json").is_file() and not (p / "checkpoint.json").exists():
            return p
    except OSError:
        return None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    from .safeio import read_regular

    raw = read_regular(path, MAX_CONFIG_BYTES, CheckpointError, "config")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(path, f"not valid JSON ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise CheckpointError(path, "not a JSON object")
    return d


# ---- configs -------------------------------------------------------------------------------------------------------
def unet_config(c: dict[str, Any], where: Path) -> UNetConfig:
    """The UNetConfig that computes what diffusers' UNet2DModel with config ``c`` computes; CheckpointError if none."""
    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(where, f"{key}: {why}")

    cls = c.get("_class_name")
    if cls != "UNet2DModel":
        raise bad("_class_name", f"{cls!r} is not supported; only the DDPM-style UNet2DModel is "
                                 f"(no text- or class-conditional UNets)")
    unknown = sorted(k for k, v in c.items() if not k.startswith("_") and k not in UNET_DEFAULTS and v is not None)
    if unknown:
        raise bad(unknown[0], "is not a UNet2DModel setting this version understands")
    _check_fields({k: v for k, v in c.items() if k in UNET_FIELDS}, UNET_FIELDS, where, None)
    c = {**UNET_DEFAULTS, **{k: v for k, v in c.items() if not k.startswith("_")}}
    for key, want in UNET_FIXED.items():
        if c[key] != want:
            raise bad(key, f"{c[key]!r} is not supported (only {want!r})")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise bad("sample_size", f"needs one square side in pixels, got {c['sample_size']!r}")
    if c["in_channels"] not in (1, 3) or c["out_channels"] != c["in_channels"]:
        raise bad("out_channels" if c["in_channels"] in (1, 3) else "in_channels",
                  f"in {c['in_channels']!r} / out {c['out_channels']!r}: both must be 1 or both 3")
    boc = c["block_out_channels"]
    if (not isinstance(boc, (list, tuple)) or not boc or len(boc) > 8
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 4096 for v in boc)):
        raise bad("block_out_channels", f"must be 1 to 8 channel counts in 1..4096, got {boc!r}")
    if any(v % boc[0] for v in boc):
        raise bad("block_out_channels", f"every width must be a multiple of the first, {boc[0]}, got {list(boc)}")
    groups = c["norm_num_groups"]
    width = next((v for v in boc if v % groups), None)
    if width is not None:
        raise bad("norm_num_groups", f"{groups} does not divide the block width {width} (block_out_channels "
                                     f"{list(boc)})")
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    if len(down) != len(boc):
        raise bad("down_block_types", f"{len(down)} blocks for {len(boc)} block_out_channels")
    if len(up) != len(boc):
        raise bad("up_block_types", f"{len(up)} blocks for {len(boc)} block_out_channels")
    for key, types, known in (("down_block_types", down, DOWN_TYPES), ("up_block_types", up, UP_TYPES)):
        other = next((b for b in types if b not in known), None)
        if other is not None:
            raise bad(key, f"{other!r} is not supported (only {', '.join(known)})")
    attn_levels = [level for level, b in enumerate(down) if DOWN_TYPES[b]]
    for level in [*attn_levels, len(boc) - 1]:  # the middle block attends at the last level's size
        side = size // 2 ** level
        if side > MAX_ATTENTION_SIDE:
            key = "down_block_types" if level in attn_levels else "block_out_channels"
            raise bad(key, f"attention over {side}x{side} positions (sample_size {size} at level {level}) needs a "
                           f"{side * side:,}² score matrix; at most {MAX_ATTENTION_SIDE}x{MAX_ATTENTION_SIDE} "
                           f"positions may attend")
    if [UP_TYPES[b] for b in reversed(up)] != [DOWN_TYPES[b] for b in down]:
        raise bad("up_block_types", "attention must sit at the same levels as in down_block_types")
    if c["time_embedding_dim"] not in (None, 4 * boc[0]):
        raise bad("time_embedding_dim", f"must be 4 × block_out_channels[0] = {4 * boc[0]}, got "
                                        f"{c['time_embedding_dim']!r}")
    if c["attn_norm_num_groups"] not in (None, c["norm_num_groups"]):
        raise bad("attn_norm_num_groups", "must equal norm_num_groups")
    head_dim = c["attention_head_dim"]
    widths = [boc[level] for level in attn_levels] + [boc[-1]]  # the middle block always attends
    if head_dim is None:
        heads = 1  # one head as wide as the block, as diffusers does without attention_head_dim
    else:
        counts = {w // head_dim if isinstance(head_dim, int) and head_dim > 0 and w % head_dim == 0 else None
                  for w in widths}
        if None in counts or len(counts) != 1:
            raise bad("attention_head_dim", f"{head_dim!r} must divide every attending block's width {widths} "
                                            f"into the same number of heads")
        heads = counts.pop()
    layers = c["layers_per_block"]
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= 16:
        raise bad("layers_per_block", f"must be 1 to 16, got {layers!r}")
    if c["downsample_padding"] not in (0, 1):
        raise bad("downsample_padding", f"must be 0 or 1, got {c['downsample_padding']!r}")
    if not isinstance(c["flip_sin_to_cos"], bool):
        raise bad("flip_sin_to_cos", f"must be true or false, got {c['flip_sin_to_cos']!r}")
    values = dict(
        image_size=size, in_channels=c["in_channels"], base_channels=boc[0],
        channel_mults=tuple(v // boc[0] for v in boc), num_res_blocks=layers,
        attn_resolutions=tuple(size // 2 ** level for level in attn_levels), dropout=c["dropout"], num_heads=heads,
        groups=c["norm_num_groups"], num_classes=None, preset=None, norm_eps=c["norm_eps"],
        time_sin_first=not c["flip_sin_to_cos"], time_freq_shift=c["freq_shift"],
        downsample_padding=c["downsample_padding"],
    )
    names = {"groups": "norm_num_groups", "image_size": "sample_size", "num_heads": "attention_head_dim",
             "time_freq_shift": "freq_shift", "channel_mults": "block_out_channels", "dropout": "dropout",
             "norm_eps": "norm_eps"}
    try:
        cfg = UNetConfig(**values)
        cfg.validate()
    except (TypeError, ValueError) as e:
        field = str(e).partition(":")[0]
        raise bad(names.get(field, field), str(e).partition(":")[2].strip() or str(e)) from None
    # what `import` writes must pass our own manifest: the same limits, named by the diffusers key
    try:
        dataclass_spec(UNetConfig, MODEL_FIELDS).check(cfg.to_dict(), "model")
    except Bad as e:
        field, _, reason = str(e).partition(": ")
        ours = field.partition(".")[2].partition("[")[0]
        raise bad(FROM_KEYS.get(ours, ours), f"{reason} (as this project's {field})") from None
    n = _count(cfg)
    if n > MAX_PARAMETERS:
        raise bad("block_out_channels", f"this UNet has {n:,} parameters, more than the {MAX_PARAMETERS:,} "
                                        f"Diffusion Studio accepts")
    return cfg


def schedule_and_sampling(c: dict[str, Any], where: Path) -> tuple[NoiseSchedule, dict[str, Any]]:
    """The NoiseSchedule of a DDPMScheduler (or DDIMScheduler) config, and its sampling defaults (σ², clipping)."""
    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(where, f"{key}: {why}")

    cls = c.get("_class_name")
    if cls not in SCHEDULERS:
        raise bad("_class_name", f"{cls!r} is not supported (only {', '.join(SCHEDULERS)})")
    _check_fields(c, SCHEDULER_FIELDS, where, PlainJSON())
    c = {**SCHEDULER_DEFAULTS, **{k: v for k, v in c.items() if not k.startswith("_")}}
    for key in ("thresholding", "rescale_betas_zero_snr"):
        if c[key]:
            raise bad(key, "is not supported (only false)")
    if c["prediction_type"] != "epsilon":
        raise bad("prediction_type", f"{c['prediction_type']!r} is not supported (only 'epsilon')")
    variance = VARIANCES.get(c["variance_type"]) if cls == "DDPMScheduler" else "beta_tilde"
    if variance is None:
        raise bad("variance_type", f"{c['variance_type']!r} is not supported (only {', '.join(VARIANCES)})")
    if not isinstance(c["clip_sample"], bool):
        raise bad("clip_sample", f"must be true or false, got {c['clip_sample']!r}")
    if c["clip_sample"] and c["clip_sample_range"] != 1.0:
        raise bad("clip_sample_range", f"only 1.0 is supported (x̂_0 in [-1, 1]), got {c['clip_sample_range']!r}")
    T = c["num_train_timesteps"]
    if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= 100_000:
        raise bad("num_train_timesteps", f"must be a whole number in 2..100000, got {T!r}")
    kind = c["beta_schedule"]
    try:
        if c["trained_betas"] is not None:
            betas = c["trained_betas"]
            if not isinstance(betas, list) or len(betas) != T:
                raise bad("trained_betas", f"must list num_train_timesteps = {T} numbers")
            schedule = NoiseSchedule.from_betas(betas)
        elif kind == "linear":
            schedule = NoiseSchedule.create("linear", T, beta_start=c["beta_start"], beta_end=c["beta_end"])
        elif kind == "scaled_linear":  # linear in √β: the project's "quadratic"
            schedule = NoiseSchedule.create("quadratic", T, beta_start=c["beta_start"], beta_end=c["beta_end"])
        elif kind == "squaredcos_cap_v2":  # Nichol & Dhariwal's cosine with s = 0.008, β capped at 0.999
            schedule = NoiseSchedule.create("cosine", T)
        elif kind == "sigmoid":  # diffusers' own sigmoid (its ends are not exactly beta_start/beta_end)
            x = torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64))
            schedule = NoiseSchedule.from_betas(x * (c["beta_end"] - c["beta_start"]) + c["beta_start"])
        else:
            raise bad("beta_schedule", f"{kind!r} is not supported (linear, scaled_linear, squaredcos_cap_v2, "
                                       f"sigmoid, or trained_betas)")
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        key = "trained_betas" if c["trained_betas"] is not None else "beta_start/beta_end"
        raise bad(key, str(e)) from None
    return schedule, {"variance": variance, "clip_x0": bool(c["clip_sample"])}


# ---- weights -------------------------------------------------------------------------------------------------------
_RES = (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj"), ("norm2", "norm2"), ("conv2", "conv2"),
        ("skip", "conv_shortcut"))


def weight_sources(cfg: UNetConfig) -> dict[str, list[list[str]]]:
    """Our parameter name → the diffusers names it is built from: one part (copied) or three (q, k, v stacked),
    each part a list of accepted spellings (current names first, then the pre-0.14 query/key/value/proj_attn)."""
    out: dict[str, list[list[str]]] = {}

    def plain(ours: str, theirs: str) -> None:
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = [[f"{theirs}.{p}"]]

    def res(ours: str, theirs: str) -> None:
        for a, b in _RES:
            plain(f"{ours}.{a}", f"{theirs}.{b}")

    def attn(ours: str, theirs: str) -> None:
        plain(f"{ours}.norm", f"{theirs}.group_norm")
        for p in ("weight", "bias"):
            out[f"{ours}.qkv.{p}"] = [[f"{theirs}.to_{n}.{p}", f"{theirs}.{old}.{p}"]
                                      for n, old in (("q", "query"), ("k", "key"), ("v", "value"))]
            out[f"{ours}.proj.{p}"] = [[f"{theirs}.to_out.0.{p}", f"{theirs}.proj_attn.{p}"]]

    plain("time_mlp.0", "time_embedding.linear_1")
    plain("time_mlp.2", "time_embedding.linear_2")
    plain("inp", "conv_in")
    plain("out.0", "conv_norm_out")
    plain("out.2", "conv_out")
    k = 0
    for level in range(cfg.levels):
        has_attn = cfg.image_size // 2 ** level in cfg.attn_resolutions
        for j in range(cfg.num_res_blocks):
            res(f"down.{k}.0", f"down_blocks.{level}.resnets.{j}")
            if has_attn:
                attn(f"down.{k}.1", f"down_blocks.{level}.attentions.{j}")
            k += 1
        if level != cfg.levels - 1:
            plain(f"down.{k}.0.conv", f"down_blocks.{level}.downsamplers.0.conv")
            k += 1
    res("mid.0", "mid_block.resnets.0")
    attn("mid.1", "mid_block.attentions.0")
    res("mid.2", "mid_block.resnets.1")
    k = 0
    for u, level in enumerate(reversed(range(cfg.levels))):
        has_attn = cfg.image_size // 2 ** level in cfg.attn_resolutions
        for i in range(cfg.num_res_blocks + 1):
            res(f"up.{k}.0", f"up_blocks.{u}.resnets.{i}")
            if has_attn:
                attn(f"up.{k}.1", f"up_blocks.{u}.attentions.{i}")
            if level and i == cfg.num_res_blocks:
                plain(f"up.{k}.{2 if has_attn else 1}.conv", f"up_blocks.{u}.upsamplers.0.conv")
            k += 1
    return out


def _plan(cfg: UNetConfig, shapes: dict[str, tuple[int, ...]], where: Path) -> dict[str, list[str]]:
    """Our name → the file's tensor names to stack, with every shape checked before any data is read."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()}
    sources = weight_sources(cfg)
    plan: dict[str, list[str]] = {}
    for name, shape in expected.items():
        parts = sources.get(name)
        if parts is None:
            raise CheckpointError(where, f"internal: no diffusers source for {name}")
        chosen = []
        for spellings in parts:
            found = next((s for s in spellings if s in shapes), None)
            if found is None:
                raise CheckpointError(where, f"the weights lack {spellings[0]} (they do not match unet/config.json)")
            chosen.append(found)
        got = (sum(shapes[s][0] for s in chosen),) + tuple(shapes[chosen[0]][1:])
        squeeze = lambda s: tuple(s[:1]) + tuple(d for d in s[1:] if d != 1)  # noqa: E731 - 1×1 conv ≡ linear
        if squeeze(got) != squeeze(shape):
            raise CheckpointError(where, f"{chosen[0]} has shape {tuple(shapes[chosen[0]])}, unet/config.json "
                                         f"implies {shape if len(chosen) == 1 else (shape[0] // 3, *shape[1:])}")
        plan[name] = chosen
    used = {s for chosen in plan.values() for s in chosen}
    extra = sorted(set(shapes) - used)
    if extra:
        raise CheckpointError(where, f"unexpected weight {extra[0]} ({len(extra)} in all): the weights do not match "
                                     f"unet/config.json")
    return plan


def _weights_file(unet_dir: Path) -> Path:
    path = unet_dir / WEIGHTS
    if path.exists():
        return path
    variants = sorted(unet_dir.glob("diffusion_pytorch_model*.safetensors"))
    if variants and not any(v.name.endswith(".index.json") for v in unet_dir.iterdir()):
        return variants[0]  # e.g. diffusion_pytorch_model.fp16.safetensors
    if any(unet_dir.glob("*.safetensors.index.json")):
        raise CheckpointError(unet_dir, "sharded weights are not supported; save the UNet as one safetensors file")
    pickles = sorted(p.name for p in unet_dir.glob("*.bin")) + sorted(p.name for p in unet_dir.glob("*.ckpt"))
    if pickles:
        raise CheckpointError(unet_dir / pickles[0], "refused: .bin weights are pickles, which can run code when "
                                                     "loaded; convert the folder to safetensors first")
    raise CheckpointError(path, "no such file (the UNet's weights)")


def convert_weights(cfg: UNetConfig, path: Path) -> dict[str, torch.Tensor]:
    """The UNet2DModel weights in ``path`` renamed and reshaped into this project's UNet (float32).

    The header is checked first against the file's real size (no tensor reaches past its end, none is left over),
    the model (names and shapes) and the dtypes (float16, bfloat16, float32); only then is each tensor read, one at a
    time, so memory follows the model, not what the file claims."""
    from .safeio import open_regular

    with open_regular(path, MAX_WEIGHTS_BYTES, CheckpointError, "weights file") as f:
        header, start = read_header(f, path)
        shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        plan = _plan(cfg, shapes, path)
        for parts in plan.values():
            for s in parts:
                if header[s]["dtype"] not in WEIGHT_DTYPES:
                    raise CheckpointError(path, f"weight {s} is {header[s]['dtype']}; only float16, bfloat16 and "
                                                f"float32 weights are accepted")
        state = {}
        for name, parts in plan.items():
            t = torch.cat([_read_tensor(f, start, header[s], s, path).float() for s in parts])
            state[name] = t.reshape(_target_shape(cfg, name, t))
    bad = next((k for k, v in state.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(path, f"weight {plan[bad][0]} holds NaN or Inf values")
    return state


def _read_tensor(f, start: int, info: dict[str, Any], name: str, path: Path) -> torch.Tensor:
    a, b = info["data_offsets"]  # read_header checked: b - a is exactly the shape's bytes, within the file
    shape = tuple(int(d) for d in info["shape"])
    dtype = WEIGHT_DTYPES[info["dtype"]]
    if a == b:
        return torch.empty(shape, dtype=dtype)
    buf = bytearray(b - a)
    try:
        f.seek(start + a)
        got = f.readinto(buf)
    except OSError as e:
        raise CheckpointError(path, f"cannot read ({e.strerror or e})") from None
    if got != len(buf):
        raise CheckpointError(path, f"the weights file is truncated (tensor {name[:80]} ends past its end)")
    return torch.frombuffer(buf, dtype=dtype).reshape(shape)


def _target_shape(cfg: UNetConfig, name: str, t: torch.Tensor) -> tuple[int, ...]:
    # Attention projections are Linear layers in diffusers and 1×1 convolutions here.
    if name.endswith((".qkv.weight", ".proj.weight")) and t.ndim == 2:
        return (*t.shape, 1, 1)
    return tuple(t.shape)


# ---- the folder ----------------------------------------------------------------------------------------------------
def load_diffusers(folder: str | Path, groups: tuple[str, ...] | None = None) -> Checkpoint:
    """A diffusers DDPM pipeline folder as a Checkpoint (EMA group = the published weights), converted in memory."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    for key, value in index.items():
        if key.startswith("_") or key in ("unet", "scheduler") or value in (None, [None, None]):
            continue
        raise CheckpointError(folder / "model_index.json", f"{key}: a pipeline with a {key} is not supported "
                                                           f"(only a UNet2DModel and a scheduler)")
    unet_cfg_path = folder / "unet" / "config.json"
    sched_path = folder / "scheduler" / "scheduler_config.json"
    cfg = unet_config(_read_json(unet_cfg_path), unet_cfg_path)
    schedule, sampling = schedule_and_sampling(_read_json(sched_path), sched_path)
    wanted = groups is None or bool({"model", "ema"} & set(groups))
    tensors = {"ema": convert_weights(cfg, _weights_file(folder / "unet"))} if wanted else {}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "step": 0,
        "model": cfg.to_dict(), "schedule": schedule.to_dict(),
        "data": {"spec": f"diffusers:{folder.name}", "size": cfg.image_size, "channels": cfg.in_channels},
        "sampling": sampling,
        "source": {"format": "diffusers", "folder": folder.name, "parameters": _count(cfg)},
        "groups": sorted(tensors),
    }
    return Checkpoint(path=folder, meta=meta, tensors=tensors)


def _count(cfg: UNetConfig) -> int:
    with torch.device("meta"):
        return sum(math.prod(p.shape) for p in UNet(cfg).parameters())
