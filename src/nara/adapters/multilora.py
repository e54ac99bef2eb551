"""Multi-LoRA: K independent LoRAs, one per noise bin; sample i uses bin ⌈λᵢ·K⌉ (λ = 0 → bin 1).

A mixed batch is routed in one pass: each sample's A and B are gathered, (B, r, d_in) and
(B, d_out, r), and applied with batched matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import MultiLoRAConfig
from nara.adapters.layer import AdapterLayer, register
from nara.adapters.noise import Conditioner

# λ arrives as float32: keep ⌈λ·K⌉ exact for fractions like 1/3 despite rounding.
_ROUNDING_SLACK = 1e-6


class NoiseBins(Conditioner):
    """λ (n,) → 0-based bin index (n,) = clamp(⌈λ·K⌉, 1, K) − 1."""

    def __init__(self, num_bins: int) -> None:
        super().__init__()
        self.num_bins = num_bins

    def forward(self, lam: torch.Tensor, density: torch.Tensor | None) -> torch.Tensor:
        bins = torch.ceil(lam.double() * self.num_bins - _ROUNDING_SLACK).long()
        return bins.clamp(1, self.num_bins) - 1


@register
class MultiLoRALayer(AdapterLayer):
    method = "multi_lora"
    adapter_names = ("lora_A", "lora_B")

    def __init__(self, base: nn.Linear, config: MultiLoRAConfig) -> None:
        super().__init__(base, config)
        k = config.num_bins
        self.lora_A = self._new(k, config.r, self.in_features)  # (K, r, d_in)
        self.lora_B = self._new(k, self.out_features, config.r, zero=True)  # (K, d_out, r)

    @classmethod
    def conditioners(
        cls, config: MultiLoRAConfig, names: list[str]
    ) -> tuple[dict[str, Conditioner], dict[str, str]]:
        return {"bins": NoiseBins(config.num_bins)}, dict.fromkeys(names, "bins")

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        a, b = self.lora_A[cond], self.lora_B[cond]  # (n, r, d_in), (n, d_out, r)
        xd = xd if xd.dtype == a.dtype else xd.to(a.dtype)
        if cond.shape[0] == 1:  # one bin for the whole batch
            up = F.linear(F.linear(xd, a[0]) * self.scaling, b[0])
        else:
            xb = xd.reshape(cond.shape[0], -1, xd.shape[-1])  # (B, T, d_in)
            h = torch.bmm(xb, a.mT) * self.scaling  # (B, T, r)
            up = torch.bmm(h, b.mT).view(*xd.shape[:-1], -1)  # (B, ..., d_out)
        return out + up.to(out.dtype)

    def delta_weight(self, cond: torch.Tensor) -> torch.Tensor:
        k = cond[0]
        return self.scaling * (self.lora_B[k] @ self.lora_A[k])
