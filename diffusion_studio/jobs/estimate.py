"""Big models on a CPU (a 256-px DDPM): one timed forward pass when the model loads, so the Sampling tab can say how
long a run will take before it starts."""
from __future__ import annotations

from ..core.runtime.estimate import describe, seconds_per_step, worth_estimating
from ..core.diffusion.eps import model_fn


def measure(loaded) -> None:
    """Time one ε_θ call on one image (in the loading worker); stored on the LoadedModel as ``step_s_per_image``."""
    cfg = loaded.model.config
    if not worth_estimating(getattr(cfg, "image_size", 0), loaded.device) or getattr(cfg, "text_encoder", None):
        return
    fn = model_fn(loaded.model, loaded.device, "fp32", schedule=loaded.schedule)
    shape = (1, *cfg.shape)
    loaded.step_s_per_image = seconds_per_step(fn, shape, loaded.schedule.T, loaded.device)


def note(loaded, job) -> str | None:
    """E.g. "DDIM-50 at 256x256: about 12m30s on this CPU (...)" for a measured model, else None."""
    per_image = getattr(loaded, "step_s_per_image", None)
    if per_image is None:
        return None
    return describe(job.sampler, job.steps, 1, per_image * job.n_images, loaded.model.config.image_size)
