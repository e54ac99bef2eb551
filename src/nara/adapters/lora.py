"""LoRA (Hu et al., 2021): ΔW = s·B·A, A (r, d_in) Kaiming-uniform, B (d_out, r) zero.

Also the low-rank core that NaRA, T-LoRA and DoRA build on: y += s·mix(x·Aᵀ)·Bᵀ, where ``mix``
is the identity here and C(λ) or a rank mask in the noise-aware subclasses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import AdapterConfig
from nara.adapters.layer import AdapterLayer, register


@register
class LoRALayer(AdapterLayer):
    method = "lora"
    adapter_names = ("lora_A", "lora_B")

    def __init__(self, base: nn.Linear, config: AdapterConfig) -> None:
        super().__init__(base, config)
        self.lora_A = self._new(config.r, self.in_features)
        self.lora_B = self._new(self.out_features, config.r, zero=True)

    def mix(self, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Act on the rank space h (B, ..., r); the identity for LoRA."""
        return h

    def mix_matrix(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """The r×r matrices (n, r, r) that ``mix`` applies, or None for the identity."""
        return None

    def low_rank(self, xd: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """s·mix(xd·Aᵀ)·Bᵀ: (B, ..., d_in) → (B, ..., d_out), in the adapter dtype."""
        a = self.lora_A
        h = F.linear(xd if xd.dtype == a.dtype else xd.to(a.dtype), a)  # (B, ..., r)
        h = self.mix(h, cond)
        if self.scaling != 1:
            h = h * self.scaling  # on the r-wide tensor: cheaper than on the output
        return F.linear(h, self.lora_B)  # (B, ..., d_out)

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        # not in place: for 3-D inputs `out` is a view, and autograd would add an as_strided copy
        return out + self.low_rank(xd, cond).to(out.dtype)

    def delta_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        m = self.mix_matrix(cond)
        b = self.lora_B if m is None else self.lora_B @ m[0]
        return self.scaling * (b @ self.lora_A)  # (d_out, d_in)
