"""A small CNN the app trains itself (on the dataset at hand) to give FID features and a classifier score offline."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ... import resources  # Qt-free: only knows where the shipped files lie
from ..io.checkpoint import PICKLE_SUFFIXES
from ..io.safeio import write_atomic
from ..errors import CheckpointError

FORMAT = "diffusion-studio-feature-net"
FORMAT_VERSION = 1
TASKS = ("classify", "rotation")
WEIGHTS_NAME, MANIFEST_NAME = "features.safetensors", "features.json"
_LUMA = (0.299, 0.587, 0.114)  # the data layer's RGB → grey weights, so a colour sample is seen as the data would be


@dataclass(frozen=True)
class FeatureNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 16
    width: int = 24
    feature_dim: int = 128
    task: str = "classify"  # "rotation": self-supervised, predicts which of 0/90/180/270° was applied

    def __post_init__(self):
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be ≥ 8, got {self.input_size}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.num_classes < 2 or self.width < 4 or self.feature_dim < 2:
            raise ValueError("num_classes ≥ 2, width ≥ 4 and feature_dim ≥ 2 are needed")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureNetConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _block(cin: int, cout: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: a sample's features must not depend on what else is in its batch.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.SiLU(),
    )


class FeatureNet(nn.Module):
    """3 conv blocks → global average pool → a feature_dim linear layer (the FID features) → a linear class head."""

    def __init__(self, config: FeatureNetConfig | None = None, class_names: list[str] | None = None):
        super().__init__()
        self.config = cfg = config or FeatureNetConfig()
        self.class_names = list(class_names) if class_names else [str(i) for i in range(cfg.num_classes)]
        w = cfg.width
        self.blocks = nn.ModuleList([_block(cfg.in_channels, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.embed = nn.Linear(4 * w, cfg.feature_dim)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)
        self.metrics: dict[str, Any] = {}

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    @property
    def is_classifier(self) -> bool:
        return self.config.task == "classify"

    @property
    def name(self) -> str:
        """Identifies these exact weights, so cached real statistics are never reused with another network."""
        blob = st_save({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()})
        return f"featurenet-{self.config.task}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Any (B, 1|3, H, W) in [−1, 1] → (B, in_channels, input_size, input_size)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.float()
        c, want = x.shape[1], self.config.in_channels
        if c == 3 and want == 1:
            x = (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif c == 1 and want == 3:
            x = x.expand(-1, 3, -1, -1)
        s = self.config.input_size
        if x.shape[-2:] != (s, s):
            shrinking = max(x.shape[-2:]) > s
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=shrinking)
        return x

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.avg_pool2d(x, 2, ceil_mode=True))
        return self.embed(x.mean(dim=(2, 3)))

    def _logits(self, x_prepared: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self._embed(x_prepared)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) FID features: the pre-activation penultimate layer (closer to Gaussian than post-ReLU)."""
        return self._embed(self.prepare(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


# ---- training -------------------------------------------------------------------------------------------------------
def _augment(x: torch.Tensor, gen: torch.Generator, rotate_deg: float) -> torch.Tensor:
    """Small random shifts, scalings, rotations and pixel noise: generated samples are never pixel-aligned or clean."""
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    angle = u(-rotate_deg, rotate_deg) * math.pi / 180
    scale = u(0.88, 1.12)
    shift = u(-0.12, 0.12), u(-0.12, 0.12)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    noisy = (torch.rand(b, generator=gen) < 0.5).float() * u(0.0, 0.15)
    return (x + noisy.view(b, 1, 1, 1).to(x) * torch.randn(x.shape, generator=gen).to(x)).clamp(-1.5, 1.5)


def _outliers(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Images that are no class: smooth noise at random scales, and real images cut into 4×4 tiles and shuffled
    (strokes kept, shape destroyed). Trained towards a uniform prediction (outlier exposure), they keep the
    classifier from being confident on the blobs a poor generator makes, which would inflate the classifier score."""
    b, c, h, w = x.shape
    half = b // 2
    res = [2, 3, 4, 6, 8][int(torch.randint(5, (1,), generator=gen))]
    z = torch.randn(half, c, res, res, generator=gen) * (0.3 + 1.2 * torch.rand(half, 1, 1, 1, generator=gen))
    z = z + (torch.rand(half, 1, 1, 1, generator=gen) * 1.5 - 1.0)
    smooth = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)
    t = max(2, h // 4)
    patches = F.unfold(x[half:], t, stride=t)  # (B, C·t·t, tiles)
    order = torch.argsort(torch.rand(b - half, patches.shape[-1], generator=gen), dim=1).to(x.device)
    patches = patches.gather(2, order[:, None, :].expand_as(patches))
    shuffled = x[half:].clone()
    side = (h // t) * t, (w // t) * t
    shuffled[:, :, :side[0], :side[1]] = F.fold(patches, side, t, stride=t)
    return torch.cat([smooth.to(x), shuffled])


def _rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k)])


@torch.no_grad()
def _accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor | None, device, batch_size: int = 512) -> float:
    net.eval()
    correct = total = 0
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device)
        if net.is_classifier:
            pred = net._logits(xb).argmax(1).cpu()
            correct += int((pred == y[s:s + batch_size]).sum())
            total += len(xb)
        else:
            for r in range(4):
                pred = net._logits(torch.rot90(xb, r, dims=(2, 3))).argmax(1).cpu()
                correct += int((pred == r).sum())
                total += len(xb)
    return correct / max(total, 1)


def train_feature_net(images: torch.Tensor, labels: torch.Tensor | None = None, epochs: int = 30, seed: int = 0,
                      augment: bool = True, device: str | torch.device = "cpu", *, input_size: int | None = None,
                      width: int = 24, feature_dim: int = 128, batch_size: int = 64, lr: float = 3e-3,
                      holdout: float = 0.15, class_names: list[str] | None = None, outliers: bool = True,
                      progress=None,
                      ) -> tuple[FeatureNet, dict[str, Any]]:
    """Train a FeatureNet on images (N, C, H, W) in [−1, 1]: a classifier when labels are given, otherwise a
    rotation predictor (self-supervised: which of 0/90/180/270° was applied; it has to recognise the objects'
    orientation, so its features describe shape and layout, and it needs no labels or extra data).

    A seeded `holdout` fraction is kept out of training; metrics["heldout_accuracy"] is measured on it. With
    `outliers`, a classifier also learns to be unsure on noise and scrambled images (see _outliers).
    progress(epoch, epochs, loss) is called after every epoch.
    """
    images = torch.as_tensor(images).float()
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    if n < 8:
        raise ValueError(f"need at least 8 images to train a feature network, got {n}")
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    task = "classify" if labels is not None else "rotation"
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"{labels.shape[0]} labels for {n} images")
        num_classes = max(int(labels.max()) + 1, len(class_names or []))
        if num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes; train without labels (rotation task) instead")
    else:
        num_classes, class_names = 4, ["0°", "90°", "180°", "270°"]
    size = input_size or max(8, min(32, images.shape[-1]))
    cfg = FeatureNetConfig(images.shape[1], num_classes, size, width, feature_dim, task)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(cfg, class_names)
    net.to(device)
    x_all = net.prepare(images)  # resized once: augmenting at the net's size is cheaper than at the data's
    perm = torch.randperm(n, generator=gen)
    n_hold = max(1, int(round(holdout * n))) if holdout > 0 else 0
    hold, train = perm[:n_hold], perm[n_hold:]
    y_all = labels if labels is not None else torch.zeros(n, dtype=torch.long)
    steps_per_epoch = max(1, math.ceil(len(train) / batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    t0, history = time.perf_counter(), []
    # Rotation prediction must not be taught that 90° is "a bit rotated": keep the augmentation's rotation small.
    rotate_deg = 12.0 if task == "classify" else 5.0
    for epoch in range(epochs):
        net.train()
        order = train[torch.randperm(len(train), generator=gen)]
        total = 0.0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            xb = x_all[idx]
            yb = y_all[idx]
            if augment:
                xb = _augment(xb, gen, rotate_deg)
            if task == "rotation":
                yb = torch.randint(4, (len(idx),), generator=gen)
                xb = _rotate(xb, yb)
            loss = F.cross_entropy(net._logits(xb.to(device)), yb.to(device), label_smoothing=0.05)
            if outliers and task == "classify":
                junk = _outliers(x_all[idx[: max(2, len(idx) // 4)]], gen).to(device)
                loss = loss - 0.5 * F.log_softmax(net._logits(junk), 1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(order))
        if progress is not None:
            progress(epoch + 1, epochs, history[-1])
    net.eval()
    metrics = {
        "task": task, "epochs": epochs, "seed": seed, "n_train": len(train), "n_heldout": n_hold,
        "heldout_accuracy": _accuracy(net, x_all[hold], y_all[hold], device) if n_hold else None,
        "train_accuracy": _accuracy(net, x_all[train], y_all[train], device),
        "final_loss": history[-1], "seconds": round(time.perf_counter() - t0, 2), "augment": augment,
        "outliers": outliers and task == "classify",
    }
    net.metrics = metrics
    return net.cpu(), metrics


# ---- classifier score -----------------------------------------------------------------------------------------------
@torch.no_grad()
def classifier_score(net: FeatureNet, images: Any, threshold: float = 0.8, batch_size: int = 256,
                     device: str | torch.device = "cpu") -> dict[str, Any]:
    """How recognisable generated samples are: the share classified with confidence > threshold and how evenly the
    classes are covered. counts_all is the argmax histogram over every sample, counts_confident over the confident
    ones; max_min_ratio (over counts_all) is inf when a class never appears.
    """
    if not net.is_classifier:
        raise ValueError("the classifier score needs a class-trained feature network (this one predicts rotations)")
    n = len(images)
    if n == 0:
        raise ValueError("no images to score")
    net.eval().to(device)
    probs = []
    for s in range(0, n, batch_size):
        stop = min(n, s + batch_size)
        xb = images[s:stop] if isinstance(images, torch.Tensor) else images.batch(torch.arange(s, stop))
        probs.append(torch.softmax(net.logits(xb.to(device)).float(), 1).cpu())
    p = torch.cat(probs)
    conf, pred = p.max(1)
    confident = conf > threshold
    k = net.config.num_classes
    counts_all = torch.bincount(pred, minlength=k)
    counts_conf = torch.bincount(pred[confident], minlength=k)

    def ratio(c: torch.Tensor) -> float:
        return float(c.max()) / float(c.min()) if int(c.min()) > 0 else math.inf

    return {
        "n": n, "threshold": threshold, "class_names": list(net.class_names),
        "confident_fraction": float(confident.float().mean()), "mean_confidence": float(conf.mean()),
        "counts_all": counts_all.tolist(), "counts_confident": counts_conf.tolist(),
        "classes_present": int((counts_conf > 0).sum()), "max_min_ratio": ratio(counts_all),
        "max_min_ratio_confident": ratio(counts_conf),
    }


def goal_met(score: dict[str, Any], min_confident: float = 0.9, max_ratio: float = 2.5) -> bool:
    """The bar for a shipped class-diverse model: ≥ 90 % confident, every class present, max/min count ratio ≤ 2.5."""
    return (score["confident_fraction"] >= min_confident and score["classes_present"] == len(score["counts_all"])
            and score["max_min_ratio"] <= max_ratio)


# ---- persistence ----------------------------------------------------------------------------------------------------
def save_feature_net(net: FeatureNet, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write DIR/features.safetensors (weights; the manifest is embedded in its header, so it alone is enough)
    and DIR/features.json (the same manifest, readable). Each file is replaced atomically; weights go first."""
    d = Path(path)
    if d.suffix in (".json", ".safetensors"):
        d = d.parent
    d.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(net.config),
                "class_names": net.class_names, "metrics": net.metrics, **(meta or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    blob = st_save(tensors, metadata={FORMAT: json.dumps(manifest)})
    write_atomic(d / WEIGHTS_NAME, blob)
    manifest.update(weights=WEIGHTS_NAME, sha256=hashlib.sha256(blob).hexdigest(), name=net.name)
    write_atomic(d / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str).encode())
    return d


def load_feature_net(path: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureNet:
    """A FeatureNet from its folder, its features.json or its .safetensors; never unpickles."""
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(p, "refused: a feature network is a safetensors file; for Inception weights "
                                 "(.pth) use --features inception:PATH")
    if p.is_dir():
        p = p / WEIGHTS_NAME
    elif p.suffix == ".json":
        p = p.with_name(WEIGHTS_NAME)
    from ..io.safeio import read_regular

    if not os.path.lexists(p):
        raise CheckpointError(p, "no such feature network file")
    blob = read_regular(p, MAX_FEATURE_BYTES, CheckpointError, "feature network")
    try:
        if len(blob) < 10 or blob[8:9] != b"{":
            raise ValueError("not a safetensors file")
        tensors = st_load(blob)  # checks the header's offsets against the bytes present
        header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
        extra = header.get("__metadata__") if isinstance(header, dict) else None
        raw = extra.get(FORMAT) if isinstance(extra, dict) else None
        manifest = json.loads(raw) if isinstance(raw, str) else None
    except RecursionError:
        raise CheckpointError(p, "not a readable safetensors file (its header is nested too deeply)") from None
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(p, f"not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(p, "not a Diffusion Studio feature network (no manifest in its header)")
    version = manifest.get("format_version", 0)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(p, f"written by a newer Diffusion Studio (format {manifest.get('format_version')})")
    from ..io.manifest import Int, ListOf, Obj, Optional, PlainJSON, Str, check

    fail = lambda reason: CheckpointError(p, reason)  # noqa: E731
    check(manifest.get("config"), Obj(FEATURE_FIELDS), "config", fail)
    check(manifest.get("class_names"), Optional(ListOf(Str(1024), 100_000)), "class_names", fail)
    check(manifest.get("metrics"), Optional(PlainJSON()), "metrics", fail)
    check(manifest.get("format_version", 0), Int(0, 1 << 20), "format_version", fail)
    try:
        config = FeatureNetConfig.from_dict(manifest["config"])
        with torch.device("meta"):  # shapes first: a config that asks for gigabytes allocates nothing
            expected = FeatureNet(config, manifest.get("class_names")).state_dict()
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(p, f"config: {e}") from None
    if set(expected) != set(tensors) or any(tensors[k].shape != expected[k].shape for k in expected):
        bad = sorted(set(expected) ^ set(tensors)) or [k for k in expected if tensors[k].shape != expected[k].shape]
        raise CheckpointError(p, f"weights do not match the config (first: {bad[0]})")
    net = FeatureNet(config, manifest.get("class_names"))
    net.load_state_dict(tensors)
    net.metrics = dict(manifest.get("metrics") or {})
    return net.to(device).eval()


MAX_FEATURE_BYTES = 1 << 30
FEATURE_FIELDS = {}  # filled below, once manifest's specs are importable without a cycle


def _feature_fields() -> None:
    from ..io.manifest import Int, Str

    FEATURE_FIELDS.update(in_channels=Int(1, 3), num_classes=Int(2, 100_000), input_size=Int(8, 1024),
                          width=Int(4, 1024), feature_dim=Int(2, 8192), task=Str(32, TASKS))


_feature_fields()


# ---- choosing an extractor ------------------------------------------------------------------------------------------
BUILTIN_FEATURES = {"digits": "models/digits-features", "mnist": "models/mnist-features",
                    "shapes": "models/shapes-features"}
# How each shipped network was made (run from the repository root); the error for a missing one quotes it.
BUILD_COMMANDS = {"digits": "diffusion-studio fid builtin:digits --train-features resources/models/digits-features "
                            "--size 16 --epochs 30 --seed 0",
                  "mnist": "diffusion-studio fid builtin:mnist --train-features resources/models/mnist-features "
                           "--size 28 --epochs 30 --seed 0",
                  "shapes": "diffusion-studio fid builtin:shapes --train-features resources/models/shapes-features "
                            "--size 32 --epochs 30 --seed 0"}


def builtin_feature_path(name: str) -> Path:
    """The folder of the shipped feature network ``name`` (may not exist)."""
    return resources.resources_dir() / BUILTIN_FEATURES[name]


def default_features_for(data_spec: str) -> str | None:
    """The feature network that fits a dataset spec out of the box (builtin:digits → its shipped net), else None."""
    key = str(data_spec).strip().lower()
    if key.startswith("builtin:") and key.partition(":")[2].strip() in BUILTIN_FEATURES:
        return "builtin:" + key.partition(":")[2].strip()
    return None


def load_feature_extractor(spec: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """builtin:digits (the shipped digits net), inception:PATH (FID Inception-v3 weights) or a FeatureNet's path."""
    text = os.fspath(spec).strip()
    if text.startswith("builtin:"):
        key = text.partition(":")[2].strip().lower()
        if key not in BUILTIN_FEATURES:
            raise ValueError(f"{text}: unknown built-in feature network (known: "
                             f"{', '.join('builtin:' + k for k in BUILTIN_FEATURES)})")
        path = builtin_feature_path(key)
        if not (path / WEIGHTS_NAME).is_file():
            raise CheckpointError(path, f"the shipped {key} feature network is missing; rebuild it with "
                                        f"`{BUILD_COMMANDS[key]}`")
        return load_feature_net(path, device)
    if text.startswith("inception:"):
        from .inception import load_inception
        return load_inception(Path(text.partition(":")[2].strip()).expanduser(), device)
    return load_feature_net(text, device)
