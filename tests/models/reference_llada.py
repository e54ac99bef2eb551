"""An independent LLaDA forward, written from docs/design.md §3 with plain torch ops on a state dict.

Shared by the model tests as the expectation: explicit softmax attention with a padding mask,
RoPE as an explicit rotation of each (j, j + D/2) pair, SwiGLU and RMSNorm spelled out.
"""

from __future__ import annotations

import math

import torch


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, theta: float, start: int = 0) -> torch.Tensor:
    """x (T, H, D): pair dim j with dim j + D/2 and rotate it by angle pos · θ^(−2j/D), the
    positions starting at ``start``."""
    t, _, d = x.shape
    half = d // 2
    pos = torch.arange(start, start + t, dtype=torch.float64)[:, None]  # (T, 1)
    out = torch.empty_like(x)
    for j in range(half):
        angle = pos * theta ** (-2.0 * j / d)
        c, s = torch.cos(angle), torch.sin(angle)
        a, b = x[:, :, j], x[:, :, j + half]  # (T, H)
        out[:, :, j] = a * c - b * s
        out[:, :, j + half] = b * c + a * s
    return out


def reference_logits(
    sd: dict[str, torch.Tensor],
    ids: torch.Tensor,
    *,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    theta: float,
    eps: float,
    real: torch.Tensor | None = None,
    prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (B, T, V) for ids (B, T); real: bool (B, T) marks non-padding keys.

    prefix: keys and values (L, H_kv, n, D) prepended in every layer (prefix tuning): the keys
    as given, the input at positions n, n + 1, ... after them.
    """
    p = "model.transformer."
    b, t = ids.shape
    real = torch.ones(b, t, dtype=torch.bool) if real is None else real
    n = 0 if prefix is None else prefix[0].shape[2]
    out = []
    for i in range(b):
        x = sd[p + "wte.weight"][ids[i]].double()  # (T, d)
        for layer in range(n_layers):
            w = {
                k[len(f"{p}blocks.{layer}.") :]: v.double()
                for k, v in sd.items()
                if k.startswith(f"{p}blocks.{layer}.")
            }
            h = _rms(x, w["attn_norm.weight"], eps)
            q = (h @ w["q_proj.weight"].T).view(t, n_heads, -1)
            k = (h @ w["k_proj.weight"].T).view(t, n_kv_heads, -1)
            v = (h @ w["v_proj.weight"].T).view(t, n_kv_heads, -1)
            q, k = _rope(q, theta, n), _rope(k, theta, n)
            keys_real = torch.cat([torch.ones(n, dtype=torch.bool), real[i]])  # (n + T,)
            if prefix is not None:
                k = torch.cat([prefix[0][layer].transpose(0, 1).double(), k])  # (n + T, H_kv, D)
                v = torch.cat([prefix[1][layer].transpose(0, 1).double(), v])
            d = q.shape[-1]
            heads = []
            for hq in range(n_heads):
                hk = hq // (n_heads // n_kv_heads)
                scores = q[:, hq] @ k[:, hk].T / math.sqrt(d)  # (T, n + T), no causal mask
                scores = scores.masked_fill(~keys_real[None, :], float("-inf"))
                probs = torch.exp(scores - scores.max(-1, keepdim=True).values)
                probs = probs / probs.sum(-1, keepdim=True)
                heads.append(probs @ v[:, hk])
            x = x + torch.cat(heads, -1) @ w["attn_out.weight"].T
            h = _rms(x, w["ff_norm.weight"], eps)
            gate = h @ w["ff_proj.weight"].T
            x = (
                x
                + ((gate * torch.sigmoid(gate)) * (h @ w["up_proj.weight"].T))
                @ w["ff_out.weight"].T
            )
        x = _rms(x, sd[p + "ln_f.weight"].double(), eps)
        out.append(x @ sd[p + "ff_out.weight"].double().T)
    return torch.stack(out)
