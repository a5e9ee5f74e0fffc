"""ε_θ as the samplers call it: a trained UNet wrapped with eval mode, precision, memory layout and guidance."""
from __future__ import annotations

import torch

from ..nets.conditioning import Context
from ..runtime import calibrate
from ..runtime.device import autocast
from .objective import to_eps
from .guidance import guided
from ..nets.unet import UNet


def model_fn(model: UNet, device: torch.device | str = "cpu", precision: str = "fp32", condition=None,
             guidance: float = 1.0, negative=None, schedule=None, channels_last: bool | None = None):
    """ε_θ as the samplers want it: (x_t, t) → ε, in eval mode, optionally class-conditioned with classifier-free
    guidance ε = ε_∅ + w (ε_y − ε_∅).

    ``channels_last`` keeps the network's weights (converted in place, once; a layout change only) and its input in
    NHWC layout, so oneDNN's convolutions run without layout conversions. Which layout is faster depends on the CPU's
    kernels (NHWC 1.2× faster on an AMX Xeon, far slower on an AVX2-only EPYC), so by default a CPU uses the one it
    was measured to run faster (core/runtime/calibrate.py), a GPU NCHW. ε comes back in contiguous NCHW layout either way.

    ``condition``: class labels (B,) or a text Context (core/nets/conditioning.py); ``negative``: a condition of the
    same kind that replaces ∅ in the guidance (a negative prompt). Guidance: core/diffusion/guidance.py.

    A model trained to predict x₀ or v (``model.config.prediction``) has its output converted to ε exactly with its
    training ``schedule`` (required then), so every sampler honours the target the model was trained on.
    """
    device = torch.device(device)
    model.eval()
    prediction = getattr(model.config, "prediction", "eps")
    if prediction != "eps" and schedule is None:
        raise ValueError(f"model_fn: a model that predicts {prediction} needs its schedule to give ε")
    if channels_last is None:  # on a CPU, the layout this CPU measured faster for this model
        channels_last = device.type == "cpu" and calibrate.choose(model.config, 16, precision, "sample").channels_last
    nhwc = channels_last
    if nhwc and any(not p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.ndim == 4):
        model.to(memory_format=torch.channels_last)

    def net(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x, t, y).float().contiguous()

    cond = condition
    if cond is not None and not isinstance(cond, Context) and model.config.num_classes is None:
        cond = None  # labels for an unconditional model: ignored, as before
    cond, negative = _to(cond, device), _to(negative, device)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            out = guided(net, x, t, cond, guidance, negative, model.config.num_classes)
        if prediction == "eps":
            return out
        # Guidance combines outputs linearly and the conversion to ε is affine in the output: the order does not matter.
        return to_eps(prediction, out, x, *schedule.sqrt_alpha_bar_pair(t, x))

    return fn


def _to(cond, device):
    if cond is None:
        return None
    if isinstance(cond, Context):
        return Context(*(c.to(device) for c in cond))
    return cond.to(device)
