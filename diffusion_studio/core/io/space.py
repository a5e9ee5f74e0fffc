"""The space diffusion runs in: pixels, or an autoencoder's scaled latents; encode/decode is the one seam.

A latent model is the ordinary UNet, trainer and samplers on tensors z = scale · E(x) of shape (c, H/f, W/f); only the
ends change: the dataset is encoded once (cached), and whatever is shown or written is decoded, x = D(z / scale).
The latent checkpoint embeds its autoencoder (weights, config, scale factor) with a fingerprint of them, so sampling
always decodes with the decoder the model was trained for, and any other one is refused.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

import torch

from ..errors import CheckpointError
from ..nets.autoencoder import Autoencoder
from .autoencoder_io import (
    GROUP, LoadedAutoencoder, build_autoencoder, check_config_and_scale, fingerprint, load_autoencoder,
)
from .checkpoint import Checkpoint

SECTION = "latent"


class PixelSpace:
    """Diffusion on the images themselves: encode and decode are the identity."""

    is_latent = False
    name = "pixels"
    clips_x0 = True  # images live in [−1, 1]: clipping x̂₀ there is the DDPM/DDIM default with guidance

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def describe(self) -> str:
        return "pixels"


class LatentSpace:
    """Diffusion on z = scale · E(x): ``encode`` maps images in [−1, 1] to scaled latents, ``decode`` maps back."""

    is_latent = True
    name = "latent"
    # Scaled latents have no [−1, 1] range (std ≈ 1, tails past ±3): clipping x̂₀ there would crush them, so latent
    # samplers never clip (as latent diffusion does); the decoder's output is clamped instead.
    clips_x0 = False

    def __init__(self, model: Autoencoder, scale_factor: float, fingerprint_: str, source: str = ""):
        self.model = model.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.fingerprint = fingerprint_
        self.source = source

    @classmethod
    def from_loaded(cls, ae: LoadedAutoencoder) -> "LatentSpace":
        return cls(ae.model, ae.scale_factor, ae.fingerprint, ae.source)

    @classmethod
    def load(cls, spec: str, device: str | torch.device = "cpu") -> "LatentSpace":
        return cls.from_loaded(load_autoencoder(spec, device))

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def latent_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.latent_channels, c.latent_size, c.latent_size

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x.to(self.device).float()) * self.scale_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] for scaled latents (any device in, the latents' device out)."""
        return self.model.decode(z.to(self.device).float() / self.scale_factor).clamp(-1, 1).to(z.device)

    def describe(self) -> str:
        c = self.config
        return (f"latent {c.latent_channels}x{c.latent_size}x{c.latent_size} of a {c.image_size}x{c.image_size}x"
                f"{c.image_channels} autoencoder (f = {c.factor}, scale {self.scale_factor:.4g}, "
                f"{self.fingerprint[:12]})")

    # ---- what a latent checkpoint stores -------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        return {"autoencoder": self.config.to_dict(), "scale_factor": self.scale_factor,
                "fingerprint": self.fingerprint, "source": self.source}

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {GROUP: {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}}


def is_latent_meta(meta: dict[str, Any]) -> bool:
    return isinstance(meta.get(SECTION), dict)


def space_from_checkpoint(ckpt: Checkpoint, autoencoder: str | LoadedAutoencoder | None = None,
                          device: str | torch.device = "cpu") -> "PixelSpace | LatentSpace | PointSpace":
    """The space a checkpoint's model runs in: PixelSpace, the LatentSpace of its embedded autoencoder, or the
    PointSpace of a 2-D model (its data's standardisation).

    ``autoencoder`` (a spec or a loaded one), if given, must be the one the model was trained with: any other is
    refused with a one-line CheckpointError naming both fingerprints. Load the checkpoint with its "autoencoder"
    group (``load_checkpoint(path)`` or groups including "autoencoder").
    """
    meta = ckpt.meta
    if is_points_meta(meta):
        if autoencoder is not None:
            raise CheckpointError(ckpt.path, "this is a 2-D model; it takes no autoencoder")
        try:
            return PointSpace(Standardiser.from_dict(meta["data"].get("standardiser")))
        except (TypeError, ValueError) as e:
            raise CheckpointError(ckpt.path, f"data.standardiser: {e}") from None
    if not is_latent_meta(meta):
        if autoencoder is not None:
            raise CheckpointError(ckpt.path, "this is a pixel-space model; it takes no autoencoder")
        return PixelSpace()
    sec = meta[SECTION]
    stored_fp = sec.get("fingerprint")
    if not isinstance(stored_fp, str) or len(stored_fp) != 64:
        raise CheckpointError(ckpt.path, "latent.fingerprint: missing or not a SHA-256 hex digest")
    given = None
    if autoencoder is not None:
        given = autoencoder if isinstance(autoencoder, LoadedAutoencoder) else load_autoencoder(autoencoder, device)
        if given.fingerprint != stored_fp:
            raise CheckpointError(ckpt.path, f"trained with autoencoder {stored_fp[:12]} "
                                             f"({sec.get('source') or 'embedded'}), not {given.fingerprint[:12]} "
                                             f"({given.source}); refusing to decode with a different autoencoder")
    state = ckpt.tensors.get(GROUP)
    if state is None:
        if given is None:
            raise CheckpointError(ckpt.path, "a latent model without its embedded autoencoder; give the autoencoder "
                                             f"it was trained with ({sec.get('source') or stored_fp[:12]})")
        return LatentSpace.from_loaded(given)
    config, scale = check_config_and_scale(sec.get("autoencoder"), sec.get("scale_factor"), ckpt.path,
                                           field="latent.autoencoder")
    if fingerprint(config, state, scale) != stored_fp:
        raise CheckpointError(ckpt.path, "the embedded autoencoder does not match its fingerprint (corrupted or "
                                         "edited); refusing to decode with it")
    model = build_autoencoder(config, state, ckpt.path).to(device)
    return LatentSpace(model, scale, stored_fp, str(sec.get("source") or ""))


def decoded_psnr(space: LatentSpace, x: torch.Tensor) -> float:
    """PSNR (dB) of D(E(x)) against x, through this space's scaled round trip."""
    rec = space.decode(space.encode(x))
    mse = float(((rec.float().cpu() - x.float().cpu().clamp(-1, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def space_label(meta: dict[str, Any]) -> str:
    """A short description of a checkpoint's space for `info` and the GUI, from the manifest alone."""
    if is_points_meta(meta):
        std = meta["data"].get("standardiser") or {}
        show = lambda v: ", ".join(_num(x) for x in v) if isinstance(v, list) else "?"  # noqa: E731
        return f"2-D points, standardised per axis (mean {show(std.get('mean'))}; std {show(std.get('std'))})"
    if not is_latent_meta(meta):
        return "pixels"
    sec = meta[SECTION]
    ae = sec.get("autoencoder") if isinstance(sec.get("autoencoder"), dict) else {}
    fp = sec.get("fingerprint") if isinstance(sec.get("fingerprint"), str) else "?"
    return (f"latent (autoencoder {fp[:12]}, f = {ae.get('factor', '?')}, {ae.get('latent_channels', '?')} channels, "
            f"{ae.get('image_size', '?')}px, scale {_num(sec.get('scale_factor'))}, from {sec.get('source') or '?'})")


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


# ---- noising in latent space (the Forward view's lesson) ------------------------------------------------------------
def fit_image(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """An image (C, H, W) in [−1, 1] resized (area average, or nearest when enlarging) and converted to what an
    autoencoder takes: (channels, size, size)."""
    import torch.nn.functional as F

    x = x.float()
    if x.shape[0] != channels:
        x = x.mean(0, keepdim=True) if channels == 1 else x[:1].expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        mode = "area" if h >= size and w >= size else "nearest"
        x = F.interpolate(x[None], size=(size, size), mode=mode)[0]
    return x.clamp(-1, 1).contiguous()


class LatentNoising:
    """q(z_t | z_0) for one image's latent z_0 = scale · E(x_0), with one fixed ε: z_t and the decoder's picture of it.

    ``at(paper_t)`` is the paper's t (0 = z_0, T = almost pure noise).
    """

    def __init__(self, space: LatentSpace, image: torch.Tensor, schedule, seed: int = 0):
        c = space.config
        self.space, self.schedule = space, schedule
        self.x0 = fit_image(image, c.image_size, c.image_channels)
        self.z0 = space.encode(self.x0[None]).cpu()
        gen = torch.Generator().manual_seed(int(seed))
        self.eps = torch.randn(self.z0.shape, generator=gen)

    def z_t(self, paper_t: int) -> torch.Tensor:
        from ..diffusion.forward import q_sample

        if paper_t <= 0:
            return self.z0.clone()
        t = torch.tensor([min(paper_t, self.schedule.T) - 1])
        return q_sample(self.schedule, self.z0, t, self.eps)

    def at(self, paper_t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_t (1, c, h, w), D(z_t / scale) (1, C, H, W) in [−1, 1])."""
        z = self.z_t(paper_t)
        return z, self.space.decode(z).cpu()


# ---- points: standardised coordinates (the geometry lab) -----------------------------------------------------------
class Standardiser:
    """Per-axis (x − mean) / std fitted on the data, in float64; stored with a model so samples return to data units."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        m = np.asarray(mean, dtype=np.float64).reshape(-1)
        s = np.asarray(std, dtype=np.float64).reshape(-1)
        if m.shape != s.shape or not len(m):
            raise ValueError(f"mean and std must be equal-length vectors, got {m.shape} and {s.shape}")
        if not (np.isfinite(m).all() and np.isfinite(s).all() and (s > 0).all()):
            raise ValueError("mean must be finite and std finite and positive")
        self.mean, self.std = m, s

    @classmethod
    def fit(cls, points: Any) -> "Standardiser":
        """Mean and population std per axis; an axis with no spread keeps std 1 (it is only shifted)."""
        x = _as_float64(points)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least 2 points of shape (N, D) to fit, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("points must be finite")
        mean = x.mean(0)
        std = np.sqrt(((x - mean) ** 2).mean(0))
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean, std)

    def forward(self, x: Any):
        """(x − mean) / std: numpy in → float64 numpy out; a torch tensor keeps its dtype (the math is float64)."""
        return self._apply(x, lambda v: (v - self.mean) / self.std)

    def inverse(self, z: Any):
        """z · std + mean, the exact inverse of forward up to float64 rounding."""
        return self._apply(z, lambda v: v * self.std + self.mean)

    def _apply(self, x: Any, f):
        if type(x).__module__.startswith("torch"):
            import torch

            out = f(x.detach().to("cpu", torch.float64).numpy())
            return torch.from_numpy(out).to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float64)
        v = _as_float64(x)
        if v.shape[-1:] != self.mean.shape:
            raise ValueError(f"expected points with {len(self.mean)} coordinates, got shape {v.shape}")
        return f(v)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Standardiser":
        if not isinstance(d, dict) or set(d) != {"mean", "std"}:
            raise ValueError("standardiser must be a JSON object with exactly mean and std")
        return cls(d["mean"], d["std"])

    def __repr__(self) -> str:
        return f"Standardiser(mean={self.mean.tolist()}, std={self.std.tolist()})"


def _as_float64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


class PointSpace:
    """Diffusion on standardised points: encode = (x − mean)/std per axis, decode = back to the data's own units."""

    is_latent = False
    name = "points"
    clips_x0 = False  # standardised points have no [−1, 1] range

    def __init__(self, standardiser: Standardiser):
        self.standardiser = standardiser

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardiser.forward(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.standardiser.inverse(z)

    def describe(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.standardiser.mean)
        std = ", ".join(f"{v:.4g}" for v in self.standardiser.std)
        return f"points, standardised (mean {mean}; std {std})"


def is_points_meta(meta: dict[str, Any]) -> bool:
    data = meta.get("data")
    return isinstance(data, dict) and data.get("kind") == "points"
