"""The text parts of `train --text`: captions for the data and the text model's config (prompts: jobs/prompts.py)."""
from __future__ import annotations

from .common import CliError, UsageError, echo, one_line

MAX_LISTED_PROBLEMS = 20


def prepare_captions(ds) -> None:
    """Caption the dataset (one line per caption problem; the rest trains) and show a few of its captions."""
    from ..data.errors import DataError
    from ..jobs.runs import caption

    try:
        problems = caption(ds)
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
    """jobs/runs.text_model_config with the CLI's one-line errors."""
    from ..core.errors import EncoderMissing
    from ..jobs.runs import text_model_config as with_encoder

    try:
        return with_encoder(model_config, cross_attn)
    except EncoderMissing as e:
        raise CliError(f"argument --text: {e}") from None
    except ValueError as e:
        raise UsageError(f"argument --cross-attn: {str(e).split(': ', 1)[1]}") from None
