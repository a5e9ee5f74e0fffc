"""The run side of training on captions (Qt-free, in the training worker): caption the data, give the model
cross-attention to the text encoder's tokens."""
from __future__ import annotations

import dataclasses


def caption_notes(config, data) -> list[str]:
    """Caption the data of a text run (the rest trains when some captions are broken): one note per problem."""
    if not getattr(config, "text", False):
        return []
    from ..data.captions import attach_captions

    problems = attach_captions(data)
    if len(problems) > 5:
        problems = problems[:5] + [f"… and {len(problems) - 5} more caption problems"]
    return [f"caption problem: {p}" for p in problems]


def text_model_config(config, model_config):
    """The run's UNet config with cross-attention to the default encoder's tokens, for a text run."""
    if not getattr(config, "text", False):
        return model_config
    from ..core.nets.conditioning import with_text
    from ..core.nets.text import DEFAULT_ENCODER, get_encoder

    enc = get_encoder(DEFAULT_ENCODER)
    return with_text(dataclasses.replace(model_config), enc.name, enc.dim)
