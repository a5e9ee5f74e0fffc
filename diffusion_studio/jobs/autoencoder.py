"""The Autoencoder view's background jobs (Qt-free, run in GeneratorWorkers): train one, or look at a saved one."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..core.nets.autoencoder import AutoencoderConfig, psnr
from ..core.train.autoencoder import AETrainConfig, AutoencoderTrainer, evaluate_psnr, measure_scale
from ..data.convert import make_grid, to_uint8

PREVIEW_N = 8
HOLDOUT = 0.05
PROGRESS_EVERY_S = 0.25   # an AEProgress at most this often (and with every picture): the loss curve and the ETA


@dataclass(frozen=True)
class AEPicture:
    """What the view shows: originals over reconstructions, the latents' channels, and the numbers."""

    step: int
    total_steps: int | None
    originals: np.ndarray        # uint8 grid
    reconstructions: np.ndarray  # uint8 grid
    latents: np.ndarray          # grey uint8 grid: a row per image, a column per channel (z/3 after scaling)
    psnr: float                  # of these reconstructions, dB
    rec_loss: float | None = None
    images_per_s: float | None = None
    elapsed_s: float | None = None
    latent_shape: tuple[int, int, int] | None = None   # (channels, height, width) of one image's latent
    shown: int = 4                                      # how many images the latent grid has rows for


@dataclass(frozen=True)
class AEProgress:
    """One training step's numbers, for the loss curve and the time left (no pictures)."""

    step: int
    total_steps: int | None
    rec_loss: float
    elapsed_s: float
    eta_s: float | None
    images_per_s: float | None = None


@dataclass(frozen=True)
class AEResult:
    """A finished training: the EMA network, its measured scale factor and PSNRs, and what it was trained on."""

    model: Any
    scale_factor: float
    psnr_train: float
    psnr_heldout: float | None
    meta: dict


def latent_grid(z: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    n, c, h, w = z.shape
    tiles = (z.float().cpu() * scale / 3.0).clamp(-1, 1).reshape(n * c, 1, h, w)
    return to_uint8(make_grid(tiles, nrow=c, padding=1))


def picture(step, total, x, rec, z, scale, **kw) -> AEPicture:
    return AEPicture(step, total, to_uint8(make_grid(x.cpu(), nrow=4)),
                     to_uint8(make_grid(rec.cpu(), nrow=4)), latent_grid(z[:4], scale), psnr(rec, x), **kw,
                     latent_shape=tuple(int(s) for s in z.shape[1:]), shown=min(4, int(z.shape[0])))


class _Subset:
    def __init__(self, data, indices):
        self.data, self.indices = data, torch.as_tensor(list(indices), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, indices, device=None, generator=None, flip=False):
        return self.data.batch(self.indices[indices], device=device, generator=generator, flip=flip)


def train_job(spec: str, config: AutoencoderConfig, train: AETrainConfig, cancel=lambda: False) -> Iterator[Any]:
    """Load the data, train (yielding an AEProgress a few times a second and an AEPicture every preview), then measure
    and yield the AEResult."""
    from ..data import load_dataset

    ds = load_dataset(spec, config.image_size, None, cancel=cancel)  # the data's own channels
    config.image_channels = ds.channels
    n_hold = int(round(len(ds) * HOLDOUT)) if len(ds) >= 20 else 0
    train_set = _Subset(ds, range(len(ds) - n_hold))
    held = _Subset(ds, range(len(ds) - n_hold, len(ds))) if n_hold else None
    train.batch_size = min(train.batch_size, len(train_set))
    trainer = AutoencoderTrainer(config, train_set, train, data_info={"spec": spec, "n": len(train_set),
                                                                     "held_out": n_hold})
    last = 0.0
    for ev in trainer.run():
        now = time.monotonic()
        if ev.reconstructions is not None or now - last >= PROGRESS_EVERY_S or ev.done:
            last = now
            yield AEProgress(ev.step, ev.total_steps, float(ev.rec_loss), float(ev.elapsed_s),
                             None if ev.eta_s is None else float(ev.eta_s), ev.images_per_s)
        if ev.reconstructions is not None:
            yield picture(ev.step, ev.total_steps, ev.originals, ev.reconstructions, ev.latents, 1.0,
                          rec_loss=ev.rec_loss, images_per_s=ev.images_per_s, elapsed_s=ev.elapsed_s)
        if cancel():
            break
    model = trainer.ema
    scale = measure_scale(model, train_set)
    p_train = evaluate_psnr(model, _Subset(train_set, range(min(500, len(train_set)))))
    p_held = evaluate_psnr(model, held) if held is not None else None
    rec, z = trainer.reconstruct(trainer.preview_batch)
    yield picture(trainer.step, train.steps, trainer.preview_batch, rec, z, scale, elapsed_s=trainer.elapsed_s)
    meta = {"step": trainer.step, "data": trainer.data_info, "train": train.to_dict(), "elapsed_s": trainer.elapsed_s,
            "metrics": {"psnr_train_db": p_train, "psnr_heldout_db": p_held}}
    return AEResult(model, scale, p_train, p_held, meta)


def inspect_job(ae_spec: str, data_spec: str, cancel=lambda: False) -> Iterator[Any]:
    """Load a saved autoencoder and show it on the first images of ``data_spec`` at its size."""
    from ..core.io.autoencoder_io import load_autoencoder
    from ..data import load_dataset

    ae = load_autoencoder(ae_spec)
    c = ae.config
    ds = load_dataset(data_spec, c.image_size, c.image_channels, cancel=cancel)
    x = ds.batch(torch.arange(min(PREVIEW_N, len(ds))))
    with torch.no_grad():
        z = ae.model.encode(x)
        rec = ae.model.decode(z).clamp(-1, 1)
    yield picture(int(ae.meta.get("step", 0) or 0), None, x, rec, z, ae.scale_factor)
    return ae
