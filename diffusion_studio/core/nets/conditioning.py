"""What a condition does inside ε_θ: cross-attention to caption tokens, the pooled caption in the time embedding,
the learned null condition, and a recorder of per-word attention maps (DAAM-style)."""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Context(NamedTuple):
    """A batch of text conditions. A NamedTuple, so DDP and torch.compile pass it through as they do a tuple."""

    tokens: torch.Tensor  # (B, L, D) the encoder's per-token states, zero at padding
    mask: torch.Tensor    # (B, L) bool, True at real tokens
    pooled: torch.Tensor  # (B, D) the sentence vector
    null: torch.Tensor    # (B,) bool: rows that take the learned null condition ∅ instead (caption dropout, CFG)


def null_context(batch: int, dim: int, device=None) -> Context:
    return Context(torch.zeros(batch, 1, dim, device=device), torch.ones(batch, 1, dtype=torch.bool, device=device),
                   torch.zeros(batch, dim, device=device), torch.ones(batch, dtype=torch.bool, device=device))


def null_like(cond, num_classes: int | None = None):
    """∅ for a batch shaped like ``cond``: the null flag for a Context, the null class index for labels."""
    if isinstance(cond, Context):
        return cond._replace(null=torch.ones_like(cond.null))
    if num_classes is None:
        raise ValueError("null_like: class labels need the model's num_classes (its null class)")
    return torch.full_like(cond, num_classes)


def cat_conditions(a, b):
    """Two conditions stacked along the batch, as one doubled batch needs them."""
    if isinstance(a, Context):
        if not isinstance(b, Context):
            raise TypeError("cat_conditions: cannot stack a text condition with class labels")
        if a.tokens.shape[1] != b.tokens.shape[1]:  # different token lengths: pad the shorter with masked zeros
            n = max(a.tokens.shape[1], b.tokens.shape[1])
            a, b = _pad(a, n), _pad(b, n)
        return Context(*(torch.cat([x, y]) for x, y in zip(a, b)))
    return torch.cat([a, b])


def _pad(c: Context, n: int) -> Context:
    extra = n - c.tokens.shape[1]
    if not extra:
        return c
    return c._replace(tokens=F.pad(c.tokens, (0, 0, 0, extra)), mask=F.pad(c.mask, (0, extra), value=False))


def level_resolutions(config) -> tuple[int, ...]:
    """The grid side at each level of a UNetConfig, largest first: where attention blocks can sit."""
    return tuple(config.image_size >> k for k in range(config.levels))


def with_text(config, encoder: str, context_dim: int, fractions: tuple[int, ...] = (2, 4),
              resolutions: tuple[int, ...] | None = None):
    """A UNetConfig with text conditioning: cross-attention at image_size / f for each f in fractions, or at the
    given resolutions (each one of the config's level_resolutions; ValueError otherwise)."""
    if resolutions is None:
        res = tuple(sorted({max(1, config.image_size // f) for f in fractions}, reverse=True))
    else:
        levels = level_resolutions(config)
        wrong = [r for r in resolutions if r not in levels]
        if wrong or not resolutions:
            where = f"not at {', '.join(f'{r} px' for r in wrong)}" if wrong else "at least one of them"
            raise ValueError(f"cross-attention can sit at {', '.join(f'{r} px' for r in levels)} (the levels of "
                             f"this {config.image_size}-px UNet), {where}")
        res = tuple(sorted(set(resolutions), reverse=True))
    return dataclasses.replace(config, text_encoder=encoder, context_dim=int(context_dim), cross_attn_resolutions=res)


class TextConditioning(nn.Module):
    """Turns a Context into (addition to the time embedding, normalised tokens, mask), substituting ∅ where asked."""

    def __init__(self, context_dim: int, emb_dim: int):
        super().__init__()
        self.context_dim = context_dim
        self.null_token = nn.Parameter(torch.randn(context_dim) * 0.02)
        self.null_pooled = nn.Parameter(torch.zeros(context_dim))
        self.norm = nn.LayerNorm(context_dim)
        self.pooled_mlp = nn.Sequential(nn.Linear(context_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, ctx: Context | None, batch: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if ctx is None:
            ctx = null_context(batch, self.context_dim, device)
        if ctx.tokens.shape[-1] != self.context_dim:
            raise ValueError(f"text condition has {ctx.tokens.shape[-1]}-d tokens, the model needs {self.context_dim}")
        null = ctx.null.to(device=device, dtype=torch.bool)
        pooled = torch.where(null[:, None], self.null_pooled.to(ctx.pooled.dtype), ctx.pooled)
        tokens = torch.where(null[:, None, None], self.null_token.to(ctx.tokens.dtype), ctx.tokens)
        first = torch.zeros_like(ctx.mask)
        first[:, 0] = True
        mask = torch.where(null[:, None], first, ctx.mask)  # ∅ is one learned token: the rest is masked out
        return self.pooled_mlp(pooled), self.norm(tokens), mask


class CrossAttnBlock(nn.Module):
    """x + proj(softmax(q kᵀ/√d) v): queries from image features, keys and values from the caption's tokens."""

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity, like the other blocks
        nn.init.zeros_(self.proj.bias)
        self.record = False
        self.last_probs: torch.Tensor | None = None  # (B, H·W, L), head-averaged, when record is on

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x)).reshape(b, self.heads, d, h * w).transpose(-1, -2)  # (b, heads, hw, d)
        k, v = self.kv(tokens.to(q.dtype)).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        keep = mask[:, None, None, :]
        if self.record:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
            probs = scores.float().masked_fill(~keep, float("-inf")).softmax(-1)
            self.last_probs = probs.mean(1).detach()
            out = probs.to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class AttentionRecorder:
    """While active, every cross-attention block keeps its last attention weights; ``maps`` turns them into
    per-token maps at the image's size (each block's maps upsampled and averaged, as DAAM does)."""

    def __init__(self, model: nn.Module):
        self.blocks = [m for m in model.modules() if isinstance(m, CrossAttnBlock)]

    def __enter__(self) -> "AttentionRecorder":
        for blk in self.blocks:
            blk.record, blk.last_probs = True, None
        return self

    def __exit__(self, *exc) -> None:
        for blk in self.blocks:
            blk.record = False

    def maps(self, size: int, rows: int | None = None) -> torch.Tensor | None:
        """(B, L, size, size) weights of the last call, summing to 1 over tokens at every pixel; rows: keep the first
        ``rows`` (the conditional half of a guided batch). None before any call."""
        acc, n = None, 0
        for blk in self.blocks:
            p = blk.last_probs
            if p is None:
                continue
            p = p[:rows] if rows is not None else p
            b, hw, L = p.shape
            side = int(round(math.sqrt(hw)))
            m = p.transpose(1, 2).reshape(b, L, side, side)
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) if side != size else m
            if acc is not None and acc.shape[1] != L:
                continue
            acc = m if acc is None else acc + m
            n += 1
        return None if acc is None else (acc / n).cpu()
