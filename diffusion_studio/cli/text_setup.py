"""The text parts of `train --text` and `sample --prompt`: captions for the data, the text model's config, prompts."""
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
    from ..core.nets.text import DEFAULT_ENCODER, EncoderMissing, get_encoder

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


def prompt_condition(ckpt, prompt: str | None, negative: str | None, n: int):
    """(condition, negative condition, notes) for a prompt to a text model; one-line UsageError/CliError otherwise."""
    from ..core.nets.text import EncoderMissing, check_prompt, get_encoder

    mc = ckpt.model_config
    if prompt is None:
        if negative is not None:
            raise UsageError("argument --negative-prompt: needs --prompt")
        return None, None, []
    if not mc.text_encoder:
        kind = "class-conditional (use --label)" if mc.num_classes else "unconditional"
        raise UsageError(f"argument --prompt: this model is {kind}; it was not trained on captions "
                         f"(train one with --text)")
    try:
        encoder = get_encoder(mc.text_encoder)
    except EncoderMissing as e:
        raise CliError(f"argument --prompt: {e}") from None
    known = ckpt.meta.get("data", {}).get("caption_words")
    notes = []
    for flag, text in (("--prompt", prompt), ("--negative-prompt", negative)):
        if text is None:
            continue
        try:
            notes += [f"{flag}: {note.split(': ', 1)[1]}" for note in check_prompt(text, encoder, known)]
        except ValueError as e:
            raise UsageError(f"argument {flag}: {str(e).split(': ', 1)[1]}") from None
    if prompt.strip() and not any(w for w in prompt.split() if not encoder.unknown_words(w)):
        raise UsageError(f"argument --prompt: the encoder can represent none of {prompt!r}")
    cond = encoder.encode([prompt]).context(n)
    neg = encoder.encode([negative]).context(n) if negative is not None else None
    return cond, neg, notes


def batch_condition(cond, size: int):
    """The condition for a batch of ``size``: a class index becomes labels, a text Context keeps its first rows."""
    import torch

    from ..core.nets.conditioning import Context

    if cond is None:
        return None
    if isinstance(cond, Context):
        return Context(*(c[:size] for c in cond))
    return torch.full((size,), int(cond), dtype=torch.long)
