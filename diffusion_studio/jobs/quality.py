"""Sample quality against the number of model evaluations, for the Sampling tab's quality plot and the bench alike:
each sampler at a few budgets, every one from the same x_T, scored by a classifier of the model's data (the share of
confidently recognised samples) and by FID against the real images, cached per model."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..core.diffusion.samplers import model_evals
from ..core.io.models import LoadedModel
from ..core.io.safeio import read_regular, write_atomic
from ..core.runtime.calibrate import cache_path
from .sampling import CLASS_GUIDANCE, SamplingJob, final_images

SAMPLERS = ("ddim", "euler", "heun", "dpm++2m", "unipc", "euler_a", "ddpm")
BUDGETS = (5, 10, 20, 50)          # model evaluations per sample; DDPM also at all T steps, the reference
REFERENCE = ("ddpm", None)          # steps None: every one of the model's T steps
CACHE_VERSION = 2  # 2: a class-conditional model's samples are one of each class, guided


@dataclass(frozen=True)
class Judge:
    """How a model's samples are scored: a classifier of its data and the real images for FID."""

    features: str   # a feature-net spec (builtin:digits …)
    data: str       # the real data's spec


@dataclass(frozen=True)
class QualityPoint:
    sampler: str
    steps: int
    evals: int
    confident: float        # share of samples the classifier gives softmax > 0.8
    fid: float
    seconds_per_sample: float
    n: int


def judge_for(loaded: LoadedModel) -> Judge | None:
    """The shipped classifier that fits the model's training data (builtin:digits, builtin:shapes …), or None."""
    from ..core.metrics.features import default_features_for

    spec = str(loaded.checkpoint.meta.get("data", {}).get("spec", ""))
    features = default_features_for(spec)
    return Judge(features, spec.strip().lower()) if features else None


def steps_for(sampler: str, evals: int) -> int:
    """The steps that spend ``evals`` model evaluations (Heun: 2N − 1 ≤ evals)."""
    return max(1, (evals + 1) // 2) if sampler == "heun" else evals


def plan(T: int, samplers=SAMPLERS, budgets=BUDGETS) -> list[tuple[str, int]]:
    """(sampler, steps) for every budget a sampler can spend on a T-step model, and DDPM at all T steps."""
    out = [(s, steps_for(s, e)) for s in samplers if s != "ddpm" for e in budgets if steps_for(s, e) <= T]
    if "ddpm" in samplers:
        out += [("ddpm", e) for e in budgets if 2 <= e < T] + [("ddpm", T)]
    return out


def _key(loaded: LoadedModel, judge: Judge, n: int, seed: int) -> str:
    sha = loaded.checkpoint.meta.get("sha256") or hashlib.sha256(
        json.dumps(loaded.checkpoint.meta.get("model", {}), sort_keys=True).encode()).hexdigest()
    return f"v{CACHE_VERSION}|{sha}|{judge.features}|{judge.data}|n{n}|seed{seed}"


def _cache_file() -> Path:
    return cache_path().parent / "sampler-quality.json"


def cached(loaded: LoadedModel, judge: Judge, n: int, seed: int) -> dict[str, QualityPoint]:
    """What an earlier run measured for this model (by its weights' SHA-256), judge, n and seed."""
    try:
        data = json.loads(read_regular(_cache_file(), 8 << 20))
        rows = data.get(_key(loaded, judge, n, seed), {})
        return {k: QualityPoint(**v) for k, v in rows.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # no cache, or one this version cannot read: measured again


def _remember(loaded: LoadedModel, judge: Judge, n: int, seed: int, point: QualityPoint) -> None:
    path = _cache_file()
    try:
        data = json.loads(read_regular(path, 8 << 20)) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data.setdefault(_key(loaded, judge, n, seed), {})[f"{point.sampler}-{point.steps}"] = dataclasses.asdict(point)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1).encode(), durable=False)
    except OSError:
        pass  # a cache that cannot be written costs a measurement next time, nothing else


def evaluate(loaded: LoadedModel, judge: Judge, runs: list[tuple[str, int]], n: int = 256, seed: int = 0,
             batch: int = 256, precision: str = "auto", use_cache: bool = True) -> Iterator[QualityPoint]:
    """One QualityPoint per (sampler, steps), cached ones first; samples in batches of ``batch`` from seeds
    seed, seed + 1 … (so every sampler starts from the same x_T)."""
    from ..core.metrics.features import classifier_score, load_feature_extractor
    from ..core.metrics.fid import FIDWarning, cached_stats, fid_from_stats, image_stats
    from ..data import load_dataset

    done = cached(loaded, judge, n, seed) if use_cache else {}
    todo = []
    for sampler, steps in runs:
        hit = done.get(f"{sampler}-{steps}")
        if hit is not None:
            yield hit
        else:
            todo.append((sampler, steps))
    if not todo:
        return
    # a class-conditional model draws as `diffusion-studio sample` does: one of each class in turn, guided
    labels = dict(label=-1, guidance=CLASS_GUIDANCE) if loaded.config.num_classes else {}
    net = load_feature_extractor(judge.features)
    real_data = load_dataset(judge.data, net.config.input_size, net.config.in_channels)
    real = cached_stats(real_data, net)
    for sampler, steps in todo:
        images, t0 = [], time.perf_counter()
        for k, start in enumerate(range(0, n, batch)):
            job = SamplingJob(sampler=sampler, steps=steps, n_images=min(batch, n - start), seed=seed + k,
                              clip_x0=False, first=start, **labels)
            images.append(final_images(loaded, job, precision))
        seconds = (time.perf_counter() - t0) / n
        x = torch.cat(images)  # the feature net resizes and converts channels itself
        score = classifier_score(net, x)
        with warnings.catch_warnings():  # few samples for the feature dimension: the plot's note says n
            warnings.simplefilter("ignore", FIDWarning)
            fid = float(fid_from_stats(real, image_stats(x, net)))
        point = QualityPoint(sampler, steps, model_evals(sampler, steps), score["confident_fraction"], fid, seconds, n)
        _remember(loaded, judge, n, seed, point)
        yield point

