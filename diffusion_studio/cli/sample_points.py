"""`sample` from a 2-D model: DIR/points.csv (x, y[, label] in the data's own units), DIR/points.png (the samples
over the data) and, with --gif, the particles flowing from noise to the data."""
from __future__ import annotations

import time
from pathlib import Path

from .common import CliError, echo, fmt_duration, plural


def sample_points(args, loaded, job, precision, out: Path, x_T=None) -> int:
    import dataclasses

    import numpy as np

    from ..data.convert import save_gif
    from ..data.points_csv import save_points_csv
    from ..jobs.geometry.outputs import data_of, frames_kept, particle_frames, scatter_png, to_data_units
    from ..jobs.sampling import frames

    job = dataclasses.replace(job, n_images=args.n)
    keep = frames_kept(job.steps) if args.gif is not None else set()
    clouds, last, t0 = [], None, time.perf_counter()
    for f in frames(loaded, job, precision, include_start=bool(keep), x_T=x_T):
        if f.step in keep:
            clouds.append(to_data_units(loaded, f.x))
        last = f
    assert last is not None and last.is_final
    points = to_data_units(loaded, last.x)
    if not np.isfinite(points).all():
        raise CliError(f"{loaded.path}: the samples are not finite, so the weights are damaged or diverged")
    took = time.perf_counter() - t0
    labels = None
    if job.label is not None and loaded.config.num_classes:
        labels = np.full(len(points), job.label, dtype=np.int64) if job.label >= 0 else \
            np.arange(len(points)) % loaded.config.num_classes
    names = loaded.checkpoint.class_names if labels is not None else None
    csv_path = out / "points.csv"
    save_points_csv(csv_path, points.astype(np.float32), labels, names)
    data = data_of(loaded)
    png = scatter_png(out / "points.png", points, None if data is None else data.points,
                      f"{loaded.name}: {plural(len(points), 'sample')}, {job.sampler} {job.steps} steps")
    echo(f"wrote {plural(len(points), 'point')} ({job.sampler}, {plural(job.steps, 'step')}, "
         f"{plural(job.model_evals, 'model evaluation')} each) to {csv_path} and {png.name} in {fmt_duration(took)}")
    if args.gif is not None:
        pictures = particle_frames(clouds, None if data is None else data.points)
        save_gif(pictures + [pictures[-1]] * 12, Path(args.gif).expanduser(), fps=12)
        echo(f"gif       {args.gif} ({len(clouds)} frames of the particles, x_T to x_0)")
    return 0
