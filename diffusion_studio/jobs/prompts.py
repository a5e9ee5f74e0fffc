"""Prompts to a text model, for the app and `sample --prompt` alike: checked (words the encoder cannot represent, words
the model never saw in its captions), encoded once, and turned into the condition and negative condition that the
guided ε takes."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.nets.conditioning import Context
from ..core.nets.text import check_prompt, get_encoder


@dataclass(frozen=True)
class Prompted:
    """A prompt ready for sampling: ``condition``/``negative`` for ``n`` images, the prompt's word pieces (the
    attention maps' labels) and one-line notes for the user ("prompt: the model never saw 'dragon' ...")."""

    condition: Context | None = None
    negative: Context | None = None
    words: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self, n: int) -> "Prompted":
        """The same prompt for the first n images (a last, smaller batch)."""
        cut = lambda c: None if c is None else Context(*(t[:n] for t in c))  # noqa: E731
        return Prompted(cut(self.condition), cut(self.negative), self.words, self.notes)


NO_PROMPT = Prompted()


def model_kind(model_config) -> str:
    """'a text model', 'class-conditional' or 'unconditional', for messages."""
    if getattr(model_config, "text_encoder", None):
        return "a text model"
    return "class-conditional (use a class label)" if model_config.num_classes else "unconditional"


def encode_prompt(checkpoint, prompt: str | None, negative: str | None, n: int) -> Prompted:
    """The condition for ``prompt`` (and ``negative``, which takes ∅'s place in the guidance) for ``n`` images.

    ValueError "prompt: …" / "negative_prompt: …" (one line) for a prompt this model cannot take; EncoderMissing when
    the model's text encoder is not installed. No prompt: no condition.
    """
    mc = checkpoint.model_config
    if prompt is None:
        if negative is not None:
            raise ValueError("negative_prompt: needs a prompt")
        return NO_PROMPT
    if not mc.text_encoder:
        kind = model_kind(mc)
        raise ValueError(f"prompt: this model is {kind}; it was not trained on captions (train one with --text)")
    encoder = get_encoder(mc.text_encoder)
    known = checkpoint.meta.get("data", {}).get("caption_words")
    notes = check_prompt(prompt, encoder, known)
    if negative is not None:
        try:
            notes += [f"negative_prompt: {note.split(': ', 1)[1]}" for note in check_prompt(negative, encoder, known)]
        except ValueError as e:
            raise ValueError(f"negative_prompt: {str(e).split(': ', 1)[1]}") from None
    if not any(w for w in prompt.split() if not encoder.unknown_words(w)):
        raise ValueError(f"prompt: the encoder can represent none of {prompt!r}")
    emb = encoder.encode([prompt])
    neg = encoder.encode([negative]).context(n) if negative is not None else None
    return Prompted(emb.context(n), neg, emb.words[0], notes)
