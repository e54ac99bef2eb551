"""Shared test fixtures: a tiny in-code transformer with LLaDA's module names."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class TinyBlock(nn.Module):
    """Pre-norm block with LLaDA's projection names (q_proj ... attn_out, ff_proj/up_proj/ff_out)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.attn_out = nn.Linear(d, d)
        self.ff_proj, self.up_proj = nn.Linear(d, 2 * d), nn.Linear(d, 2 * d)
        self.ff_out = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)  # (B, T, d)
        att = F.scaled_dot_product_attention(self.q_proj(h), self.k_proj(h), self.v_proj(h))
        x = x + self.attn_out(att)
        return x + self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))


class TinyLM(nn.Module):
    """ids (B, T) → logits (B, T, V); head at ``transformer.ff_out`` like LLaDA's."""

    def __init__(self, d: int = 16, layers: int = 2, vocab: int = 32) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab, d),
                "blocks": nn.ModuleList(TinyBlock(d) for _ in range(layers)),
                "ff_out": nn.Linear(d, vocab),
            }
        )
        self.checkpointing = False  # run each block under torch.utils.checkpoint

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.transformer["wte"](ids)
        for block in self.transformer["blocks"]:
            x = checkpoint(block, x, use_reentrant=False) if self.checkpointing else block(x)
        return self.transformer["ff_out"](x)


@pytest.fixture
def tiny_lm() -> Callable[..., TinyLM]:
    """Factory: ``tiny_lm(seed=0, **sizes)`` gives the same weights for the same seed."""

    def make(seed: int = 0, **sizes: int) -> TinyLM:
        torch.manual_seed(seed)
        return TinyLM(**sizes)

    return make
