"""``ideal:SPEC`` as a model: the ideal denoiser of a finite set (2-D points, or a small image set), opened like a
checkpoint so that the CLI, the samplers and the app sample with it — and it returns training points."""
from __future__ import annotations

from pathlib import Path

import torch

from ...core.diffusion.ideal import IdealDenoiser, IdealNet
from ...core.diffusion.schedule import NoiseSchedule
from ...core.io.checkpoint import Checkpoint
from ...core.io.models import LoadedModel

PREFIX = "ideal:"
MAX_VALUES = 50_000_000     # data values the denoiser keeps (float64: 400 MB); more is refused in one line


def is_ideal_spec(spec: object) -> bool:
    return str(spec).strip().lower().startswith(PREFIX)


def ideal_model(spec: str, device: str | torch.device = "cpu", schedule: NoiseSchedule | None = None,
                n_points: int = 2000) -> LoadedModel:
    """The ideal denoiser of the data ``ideal:SPEC`` names (toy:NAME, a .csv, or an image data spec), under the
    seeds' schedule unless given. ValueError (one line, naming the spec) for data that does not fit in memory."""
    from ...data.points import PointDataset
    from ...data.specs import is_points_spec, load_dataset, load_points
    from ...core.train.recipe import natural_size

    data_spec = str(spec).strip()[len(PREFIX):].strip()
    if not data_spec:
        raise ValueError(f"{spec}: give the data after 'ideal:', e.g. ideal:toy:8gaussians or ideal:builtin:digits")
    schedule = schedule or NoiseSchedule.create("linear", 1000)
    labels, class_names = None, None
    if is_points_spec(data_spec):
        points, _ = load_points(data_spec, n=n_points)
        ds = PointDataset(points, data_spec)
        data, labels, class_names = ds.points, ds.labels, ds.class_names
        info = ds.to_dict()
    else:
        images = load_dataset(data_spec, natural_size(data_spec))
        if len(images) * images.channels * images.size ** 2 > MAX_VALUES:
            raise ValueError(f"{spec}: {len(images):,} images of {images.size}×{images.size} are too many for the "
                             f"ideal denoiser, which keeps every value (at most {MAX_VALUES:,})")
        data = images.batch(torch.arange(len(images)))
        labels, class_names = images.labels, images.class_names
        info = {"spec": data_spec, "n": len(images), "size": images.size, "channels": images.channels}
    if labels is not None:
        info["class_names"] = list(class_names or [str(k) for k in range(int(labels.max()) + 1)])
    net = IdealNet(IdealDenoiser(data, schedule, labels=labels,
                                 num_classes=len(info["class_names"]) if labels is not None else None))
    meta = {"step": 0, "model": {"preset": "ideal"}, "schedule": schedule.to_dict(), "data": info}
    ckpt = Checkpoint(path=Path(data_spec), meta=meta, tensors={})
    return LoadedModel(name=f"ideal:{data_spec}", checkpoint=ckpt, model=net, device=torch.device(device))
