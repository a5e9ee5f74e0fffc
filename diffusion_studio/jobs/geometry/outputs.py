"""What a 2-D model's samples become on disk and in the app (Qt-free): the data's own units, a CSV, a scatter over
the data, and the particles' animation."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...core.io.models import LoadedModel

GIF_SIDE = 320


def data_of(loaded: LoadedModel, n: int = 2000):
    """The model's training points (a toy drawn again, a CSV read again) and labels, in data units; None when the
    data is not at hand any more (a CSV moved away)."""
    from ...data.errors import DataError
    from ...data.specs import load_points

    spec = str(loaded.checkpoint.meta.get("data", {}).get("spec", ""))
    try:
        ps, _ = load_points(spec, n=n)
    except (DataError, OSError, ValueError):
        return None
    return ps


def bounds(*clouds: np.ndarray, margin: float = 0.08) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around every given (N, 2) cloud, with a margin, square in data units."""
    pts = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in clouds if c is not None and len(c)])
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-9) * (1 + 2 * margin)
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


def scatter_png(path: Path, samples: np.ndarray, data: np.ndarray | None, title: str) -> Path:
    """Samples (orange) over the training data (grey), in the data's own units."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=2, c="#9a9a9a", alpha=0.5, lw=0, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, c="#ff7f0e", alpha=0.8, lw=0, label="samples")
    x0, x1, y0, y1 = bounds(samples, data)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8, markerscale=4)
    fig.tight_layout()
    from ...core.io.safeio import write_atomic

    write_atomic(path, lambda f: fig.savefig(f, format="png"), durable=False)
    return path


def particle_frames(clouds: list[np.ndarray], data: np.ndarray | None, side: int = GIF_SIDE) -> list[np.ndarray]:
    """One RGB uint8 picture per cloud: the particles (orange) over the data (grey), all in one frame of reference."""
    x0, x1, y0, y1 = bounds(*clouds, data)
    scale = (side - 1) / (x1 - x0)

    def pixels(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = np.round((pts[:, 0] - x0) * scale).astype(np.int64)
        py = np.round((y1 - pts[:, 1]) * scale).astype(np.int64)
        keep = (px >= 0) & (px < side) & (py >= 0) & (py < side)
        return px[keep], py[keep]

    base = np.full((side, side, 3), 255, np.uint8)
    if data is not None:
        px, py = pixels(np.asarray(data, dtype=np.float64))
        base[py, px] = (190, 190, 190)
    out = []
    for cloud in clouds:
        img = base.copy()
        px, py = pixels(np.asarray(cloud, dtype=np.float64))
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):  # 2×2 dots
            img[np.clip(py + dy, 0, side - 1), np.clip(px + dx, 0, side - 1)] = (230, 110, 20)
        out.append(img)
    return out


def to_data_units(loaded: LoadedModel, x: torch.Tensor) -> np.ndarray:
    return np.asarray(loaded.space.decode(x.detach().double().cpu()), dtype=np.float64).reshape(len(x), -1)


def frames_kept(n_steps: int, most: int = 60) -> set[int]:
    """Which steps an animation keeps: about ``most`` of them, evenly, the first and last always."""
    every = max(1, math.ceil(n_steps / most))
    return set(range(0, n_steps + 1, every)) | {n_steps}
