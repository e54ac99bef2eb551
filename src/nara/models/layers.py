"""The layers nara's native families share: LLaDA and Dream (LLaMA-style blocks) and MDLM (a DiT).

Read top to bottom: RMSNorm → rotary embedding → bidirectional attention → the grouped-query
attention of a LLaMA-style layer → weight initialisation → the block loop and the forward's
output. Each family file (``llada.py``, ``dream.py``, ``mdlm.py``) declares its own modules under
its checkpoint's names and calls these for the computation they have in common, so one fix reaches
every family and their outputs stay those of one implementation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput


class RMSNorm(nn.Module):
    """Root-mean-square norm, normalised in float32 for stability: w · x / sqrt(mean(x²) + eps)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(
    seq_len: int, head_dim: int, theta: float, device: torch.device, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (T, D) of rotary embedding for positions start … start + T − 1, in
    float32, frequencies θ^(−2j/D). ``start`` > 0 when a KV cache feeds only part of a sequence.

    Recomputed per forward (a few thousand numbers): no buffer to carry through meta-device
    initialisation, dtype casts or device maps.
    """
    inv_freq = theta ** (
        -torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    )
    positions = torch.arange(start, start + seq_len, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D): frequency j drives dims j and j + D/2
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position in the rotate-half form, computed in float32."""
    x32 = x.float()
    first, second = x32.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def bidirectional_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention with no causal mask; padded keys are ignored.

    Args:
        q: (B, H, T, D). k, v: (B, H_kv, S, D) with H a multiple of H_kv; query head h reads
            key/value head h // (H / H_kv) (grouped-query attention). S = T except with a KV
            cache (queries of part of the sequence, keys of all of it).
        key_mask: bool (B, S), True at real tokens, or None when nothing is padded.

    Returns:
        (B, H, T, D).
    """
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)  # (B, H, T, D)
        v = v.repeat_interleave(group, dim=1)
    mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def grouped_query_attention(
    layer: nn.Module,
    h: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    key_mask: torch.Tensor | None,
    cached_kv: Any,
) -> torch.Tensor:
    """The attention of a LLaMA-style layer up to its output projection: project, rotate, splice
    in a KV cache, prepend a prefix, attend.

    ``layer`` holds the projections under the names both LLaMA-style checkpoints use
    (``q_proj``, ``k_proj``, ``v_proj``), the head counts ``n_heads`` and ``n_kv_heads``, and
    the ``kv_prefix`` hook: None or a callable (k, v, key_mask) -> (k, v, key_mask) run after
    the rotary embedding, by which prefix tuning (``nara.adapters.prefix``) prepends learned
    keys/values. It is LLaDA's block and Dream's attention module.

    Args:
        h: normed input (B, T, d).
        cos, sin: rotary tables (T, D).
        key_mask: bool (B, S), True at real tokens, or None.
        cached_kv: None, or a KV cache's splice (k, v) -> (k, v) that takes the fresh window's
            keys/values (B, H_kv, T, D) and returns the whole sequence's (B, H_kv, S, D).

    Returns:
        (B, T, H · D), the heads side by side, for the layer's output projection.
    """
    b, t, _ = h.shape
    q = layer.q_proj(h).view(b, t, layer.n_heads, -1).transpose(1, 2)  # (B, H, T, D)
    k = layer.k_proj(h).view(b, t, layer.n_kv_heads, -1).transpose(1, 2)  # (B, H_kv, T, D)
    v = layer.v_proj(h).view(b, t, layer.n_kv_heads, -1).transpose(1, 2)  # (B, H_kv, T, D)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if cached_kv is not None:  # the fresh window spliced into the whole sequence's K/V
        k, v = cached_kv(k, v)  # (B, H_kv, S, D)
    if layer.kv_prefix is not None:
        k, v, key_mask = layer.kv_prefix(k, v, key_mask)  # (B, H_kv, n + T, D)
    y = bidirectional_attention(q, k, v, key_mask)  # (B, H, T, D)
    return y.transpose(1, 2).reshape(b, t, -1)  # (B, T, H · D)


def init_weights(module: nn.Module, std: float) -> None:
    """LLaMA-style initialisation of one module (a ``PreTrainedModel._init_weights``): linear
    and embedding weights N(0, std²), biases 0, RMSNorm weights 1. Only random-weight models
    (tests, ``from_config``) see it; checkpoints overwrite it."""
    if isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, RMSNorm):
        init.ones_(module.weight)


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    args: tuple[Any, ...],
    kv_cache: Any,
    output_hidden_states: bool | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run x (B, T, d) through ``blocks`` in order, each called ``block(x, *args)`` and, with a
    KV cache (``nara.diffusion.cache.KVCache``), its layer's splice ``kv_cache.layer(i)`` last.

    Returns:
        The final hidden state (B, T, d), and with ``output_hidden_states`` the input of every
        block and the final output (else None).
    """
    hidden = [x] if output_hidden_states else None
    for i, block in enumerate(blocks):
        x = block(x, *args) if kv_cache is None else block(x, *args, kv_cache.layer(i))
        if hidden is not None:
            hidden.append(x)
    return x, tuple(hidden) if hidden is not None else None


def model_output(
    values: torch.Tensor,
    states: tuple[torch.Tensor, ...] | None,
    return_dict: bool | None,
    head: bool = True,
) -> MaskedLMOutput | BaseModelOutput | tuple[torch.Tensor, ...]:
    """A native family's forward output: logits (B, T, V) as ``logits``, or with ``head=False``
    the final hidden state (B, T, d) as ``last_hidden_state``; the per-block ``states`` when
    asked; a plain tuple with ``return_dict=False``."""
    if return_dict is False:
        return (values,) if states is None else (values, states)
    if head:
        return MaskedLMOutput(logits=values, hidden_states=states)
    return BaseModelOutput(last_hidden_state=values, hidden_states=states)
