"""Fréchet Inception Distance: Gaussian fits of feature sets, the Fréchet distance between them, cached real statistics."""
from __future__ import annotations

import json
import math
import os
import warnings
import weakref
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError

FIDSTATS_FORMAT = "diffusion-studio-fid-stats"


class FeatureExtractor(Protocol):
    """What FID needs from a network: images in [−1, 1] → (B, D) features. FeatureNet and FIDInceptionV3 are two."""

    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


class FIDWarning(UserWarning):
    """The FID is computed but less trustworthy than usual (too few samples for the feature dimension, say)."""


class FIDScore(float):
    """A float (the FID) that also carries the sample counts and any warnings, so a caller can say why it is shaky."""

    n_real: int
    n_fake: int
    dim: int
    warnings: tuple[str, ...]

    def __new__(cls, value: float, n_real: int = 0, n_fake: int = 0, dim: int = 0, notes: tuple[str, ...] = ()):
        obj = super().__new__(cls, value)
        obj.n_real, obj.n_fake, obj.dim, obj.warnings = n_real, n_fake, dim, tuple(notes)
        return obj

    @property
    def reliable(self) -> bool:
        return not self.warnings


# ---- statistics -----------------------------------------------------------------------------------------------------
def _as_float64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def rank_warning(n: int, dim: int) -> str | None:
    """The note to attach when n samples cannot give a full-rank covariance in dim dimensions."""
    if n <= dim:
        return (f"only {n} samples for {dim}-dimensional features: the covariance is rank-deficient and the FID is "
                f"biased upwards; use more than {dim} images (ideally ≥ {max(2048, 10 * dim)})")
    return None


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features → (μ (D,), Σ (D, D)) in float64, Σ the unbiased (N − 1) sample covariance.

    N ≤ D still works (the Fréchet distance below copes with singular Σ) but warns with FIDWarning.
    """
    f = _as_float64(features)
    if f.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {f.shape}")
    n, d = f.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples to fit a Gaussian, got {n}")
    if not np.isfinite(f).all():
        raise ValueError("features hold NaN or Inf values (did the generated images diverge?)")
    note = rank_warning(n, d)
    if note:
        warnings.warn(note, FIDWarning, stacklevel=2)
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (n - 1)
    return mu, sigma


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), in float64.

    The trace of (Σ1 Σ2)^½ is taken in the symmetric form Tr (√Σ1 Σ2 √Σ1)^½: Σ1 Σ2 is similar to √Σ1 Σ2 √Σ1, which is
    symmetric positive semi-definite, so its square root comes from an eigen-decomposition with real, non-negative
    eigenvalues (rounding negatives are clipped to 0). Unlike scipy's general sqrtm on the non-symmetric product, this
    needs no ε·I retry for near-singular covariances (N ≤ D) and never produces imaginary parts to discard.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"the means have different shapes: {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"the covariances must be {d}×{d}, got {s1.shape} and {s2.shape}")
    root1 = _psd_sqrt(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    # Rounding can leave −1e−12 for identical sets; a distance is never negative.
    return max(value, 0.0)


# ---- cached real-set statistics -------------------------------------------------------------------------------------
@dataclass(eq=False)  # arrays have no single truth value to compare by
class FIDStats:
    """μ, Σ of one image set under one feature extractor, with what is needed to know when they can be reused."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def from_features(cls, features: Any, extractor: str = "", meta: dict[str, Any] | None = None) -> FIDStats:
        mu, sigma = gaussian_stats(features)
        return cls(mu, sigma, int(_as_float64(features).shape[0]), extractor, dict(meta or {}))

    def _header(self) -> str:
        return json.dumps({"format": FIDSTATS_FORMAT, "n": self.n, "extractor": self.extractor, "meta": self.meta})

    def save(self, path: str | os.PathLike) -> Path:
        """Write .npz (numpy arrays + a JSON string, loadable with allow_pickle=False) or .safetensors, atomically."""
        from ..io.safeio import write_atomic

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".safetensors":
            from safetensors.numpy import save as np_st_save

            blob = np_st_save({"mu": self.mu, "sigma": self.sigma}, metadata={FIDSTATS_FORMAT: self._header()})
        elif p.suffix == ".npz":
            import io

            buf = io.BytesIO()
            np.savez(buf, mu=self.mu, sigma=self.sigma, header=np.array(self._header()))
            blob = buf.getvalue()
        else:
            raise ValueError(f"{p.name}: FID statistics are saved as .npz or .safetensors")
        write_atomic(p, blob)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> FIDStats:
        """Read statistics written by save (or pytorch-fid's mu/sigma .npz); never unpickles.

        Shapes and dtypes are read from the headers and checked (dimension ≤ MAX_FID_DIM, sizes matching the bytes
        present) before any array is read, so a small file cannot claim a huge covariance.
        """
        from ..errors import CheckpointError
        from ..io.safeio import open_regular

        p = Path(path)

        def error(where, reason):
            return ValueError(f"{Path(where).name}: {reason}")

        try:
            with open_regular(p, MAX_STATS_BYTES, error, "FID statistics file") as f:
                if p.suffix == ".safetensors":
                    arrays, header = _read_stats_safetensors(f, p)
                else:
                    arrays, header = _read_stats_npz(f.read(), p)
            info = json.loads(header)
            if not isinstance(info, dict):
                raise ValueError("its header is not a JSON object")
        except FileNotFoundError:
            raise ValueError(f"{p.name}: no such FID statistics file") from None
        except CheckpointError as e:
            raise ValueError(f"{p.name}: not a readable FID statistics file ({e.reason})") from None
        except (KeyError, ValueError, OSError, SafetensorError, zipfile.BadZipFile, RecursionError, EOFError,
                NotImplementedError, RuntimeError, zlib.error) as e:  # the last three: fuzzed zip headers
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            if text.startswith(f"{p.name}: "):  # already our own one-line message
                raise ValueError(text[:400]) from None
            raise ValueError(f"{p.name}: not a readable FID statistics file ({text[:100]})") from None
        mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{p.name}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f"{p.name}: mu or sigma holds NaN or infinite values")
        n = info.get("n", 0)
        n = n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**12 else 0
        meta = info.get("meta", {})
        return cls(mu, sigma, n, str(info.get("extractor", ""))[:1000], dict(meta) if isinstance(meta, dict) else {})


MAX_FID_DIM = 8192                 # Inception's pool features are 2048-d; a 8192² float64 Σ is 512 MB
MAX_STATS_BYTES = 2 * MAX_FID_DIM * (MAX_FID_DIM + 1) * 8 + (1 << 20)


def _check_stats_shapes(shapes: dict[str, tuple[int, ...]], p: Path) -> None:
    if "mu" not in shapes or "sigma" not in shapes:
        raise ValueError(f"{p.name}: not a readable FID statistics file (mu and sigma are needed)")
    mu, sigma = shapes["mu"], shapes["sigma"]
    if len(mu) != 1 or not 1 <= mu[0] <= MAX_FID_DIM or tuple(sigma) != (mu[0], mu[0]):
        raise ValueError(f"{p.name}: mu {tuple(mu)} and sigma {tuple(sigma)} are not a D-vector and a D×D matrix "
                         f"with D ≤ {MAX_FID_DIM}")


def _read_stats_safetensors(f, p: Path) -> tuple[dict[str, np.ndarray], str]:
    from safetensors.numpy import load as np_st_load

    from ..io.checkpoint import read_header

    header, _ = read_header(f, p)
    _check_stats_shapes({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}, p)
    f.seek(0)
    arrays = np_st_load(f.read())
    meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
    return {k: arrays[k] for k in ("mu", "sigma")}, str(meta.get(FIDSTATS_FORMAT, "{}"))


def _read_stats_npz(data: bytes, p: Path) -> tuple[dict[str, np.ndarray], str]:
    """mu, sigma (and header) from an .npz, each member's .npy header checked against its size before reading."""
    import io

    from numpy.lib import format as npy

    zf = zipfile.ZipFile(io.BytesIO(data))
    members = {}
    for name in ("mu", "sigma", "header"):
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            if name == "header":
                continue
            raise ValueError(f"{p.name}: not a readable FID statistics file (no {name} array)") from None
        with zf.open(info) as m:
            version = npy.read_magic(m)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read(m, max_header_size=10000)
            offset = m.tell()
        if dtype.hasobject or dtype.kind not in ("f", "i", "u", "U") or (dtype.kind == "U") != (name == "header"):
            raise ValueError(f"{p.name}: {name} has the unsupported dtype {dtype}")
        count = math.prod(shape)
        if name == "header" and count * dtype.itemsize > (1 << 20):
            raise ValueError(f"{p.name}: the header is larger than 1 MB")
        if info.file_size != offset + count * dtype.itemsize:
            raise ValueError(f"{p.name}: {name} claims {count:,} values of {dtype}, but the archive member holds "
                             f"{info.file_size:,} bytes")
        members[name] = tuple(shape)
    _check_stats_shapes(members, p)
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("mu", "sigma")}
        header = str(z["header"]) if "header" in members else "{}"
    return arrays, header


# ---- from images ----------------------------------------------------------------------------------------------------
def _count(images: Any) -> int:
    return len(images)


def _chunk(images: Any, start: int, stop: int) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images[start:stop].float()
    # ImageDataset-like: uint8 storage, batches handed out in [−1, 1].
    return images.batch(torch.arange(start, stop))


def extractor_name(extractor: Any) -> str:
    return str(getattr(extractor, "name", type(extractor).__name__))


@torch.no_grad()
def extract_features(extractor: Any, images: Any, batch_size: int = 256, device: str | torch.device = "cpu",
                     cancel=None) -> torch.Tensor:
    """Features (N, D) float64 on the CPU of images (a float (N, C, H, W) tensor in [−1, 1] or an ImageDataset)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
    n = _count(images)
    if n == 0:
        raise ValueError("no images to compute features of")
    was_training = getattr(extractor, "training", False)
    if isinstance(extractor, torch.nn.Module):
        extractor.to(device).eval()
    out = []
    try:
        for start in range(0, n, batch_size):
            if cancel is not None and cancel():
                raise InterruptedError("FID computation cancelled")
            x = _chunk(images, start, min(n, start + batch_size)).to(device)
            out.append(extractor.features(x).detach().to("cpu", torch.float64))
    finally:
        if was_training and hasattr(extractor, "train"):
            extractor.train()
    return torch.cat(out)


def image_stats(images: Any, extractor: Any, batch_size: int = 256, device: str | torch.device = "cpu",
                meta: dict[str, Any] | None = None) -> FIDStats:
    """FIDStats of an image set; warnings about too few samples are not raised here but kept for the score."""
    feats = extract_features(extractor, images, batch_size, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FIDWarning)
        return FIDStats.from_features(feats, extractor_name(extractor), meta)


def fid_from_stats(real: FIDStats, fake: FIDStats) -> FIDScore:
    if real.dim != fake.dim:
        raise ValueError(f"the statistics have different feature dimensions ({real.dim} and {fake.dim}): "
                         f"they were computed with different feature networks")
    if real.extractor and fake.extractor and real.extractor != fake.extractor:
        raise ValueError(f"the real statistics were computed with {real.extractor!r}, not {fake.extractor!r}")
    notes = []
    for which, s in (("real", real), ("generated", fake)):
        note = rank_warning(s.n, s.dim) if s.n else None
        if note:
            notes.append(f"{which}: {note}")
    value = frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    for note in notes:
        warnings.warn(note, FIDWarning, stacklevel=3)
    return FIDScore(value, real.n, fake.n, real.dim, tuple(notes))


def compute_fid(real: Any, fake: Any, extractor: Any, batch_size: int = 256,
                device: str | torch.device = "cpu") -> FIDScore:
    """FID between two image sets (float (N, C, H, W) tensors in [−1, 1], ImageDatasets or FIDStats).

    Returns an FIDScore (a float); too few samples for the feature dimension add a note to `.warnings` and a
    FIDWarning, never an exception.
    """
    stats = [s if isinstance(s, FIDStats) else image_stats(s, extractor, batch_size, device) for s in (real, fake)]
    return fid_from_stats(*stats)


# The periodic metric during training recomputes only the generated side; the real side is computed once per
# (dataset, extractor) pair. Weak keys: a dataset or network that is dropped takes its statistics with it.
_STATS_CACHE: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, FIDStats]]" = weakref.WeakKeyDictionary()


def cached_stats(dataset: Any, extractor: Any, batch_size: int = 256, device: str | torch.device = "cpu",
                 n_max: int | None = None, seed: int = 0) -> FIDStats:
    """The real statistics of dataset under extractor, computed on first use (on at most n_max images)."""
    per_dataset = _STATS_CACHE.setdefault(dataset, weakref.WeakKeyDictionary())
    stats = per_dataset.get(extractor)
    if stats is None or stats.meta.get("n_max") != n_max:
        images = dataset
        if n_max is not None and len(dataset) > n_max:
            idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n_max].sort().values
            images = dataset[idx] if isinstance(dataset, torch.Tensor) else dataset.batch(idx)
        stats = image_stats(images, extractor, batch_size, device, meta={"n_max": n_max})
        per_dataset[extractor] = stats
    return stats


def fid_against(dataset_or_stats: Any, fake_images: Any, extractor: Any, batch_size: int = 256,
                device: str | torch.device = "cpu", n_max: int | None = None) -> FIDScore:
    """FID of fake_images against a dataset (its statistics cached per extractor) or precomputed FIDStats."""
    if isinstance(dataset_or_stats, FIDStats):
        real = dataset_or_stats
    else:
        real = cached_stats(dataset_or_stats, extractor, batch_size, device, n_max)
    return fid_from_stats(real, image_stats(fake_images, extractor, batch_size, device))


def clear_stats_cache() -> None:
    _STATS_CACHE.clear()
