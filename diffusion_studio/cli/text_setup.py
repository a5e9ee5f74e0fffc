"""The text parts of `train --text`: captions for the data and the text model's config (prompts: jobs/prompts.py)."""
from __future__ import annotations

from .common import CliError, UsageError, echo, one_line

MAX_LISTED_PROBLEMS = 20


def prepare_captions(ds) -> None:
    """Caption the dataset (one line per caption problem; the rest trains) and show a few of its captions."""
    from ..data.captions import attach_captions
    from ..data.errors import DataError

    try:
        problems = attach_captions(ds)
    except DataError as e:
        raise UsageError(f"argument --text: {one_line(e)}") from None
    for line in problems[:MAX_LISTED_PROBLEMS]:
        echo(f"          caption problem: {line}")
    if len(problems) > MAX_LISTED_PROBLEMS:
        echo(f"          ... and {len(problems) - MAX_LISTED_PROBLEMS} more caption problems")
    distinct = sorted(set(c for c in ds.captions if c))
    shown = "; ".join(f'"{c}"' for c in distinct[:: max(1, len(distinct) // 4)][:4])
    echo(f"captions  {len(distinct)} distinct, e.g. {shown}")


def text_model_config(model_config, cross_attn: tuple[int, ...] | None = None):
    """The preset's config with cross-attention (at the preset's default resolutions, or at cross_attn) and the
    pooled caption, for the installed default encoder."""
    from ..core.nets.conditioning import with_text
    from ..core.nets.text import DEFAULT_ENCODER, get_encoder
    from ..core.errors import EncoderMissing

    try:
        encoder = get_encoder(DEFAULT_ENCODER)
    except EncoderMissing as e:
        raise CliError(f"argument --text: {e}") from None
    try:
        return with_text(model_config, encoder.name, encoder.dim, resolutions=cross_attn)
    except ValueError as e:
        raise UsageError(f"argument --cross-attn: {e}") from None


def add_caption_info(trainer) -> None:
    """Keep the example captions and words in the checkpoint when the data description is replaced (resume)."""
    table = getattr(trainer, "_text", None)
    if table is not None:
        trainer.data_info = {**trainer.data_info, **table.info()}
