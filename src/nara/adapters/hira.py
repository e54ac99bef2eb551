"""HiRA (Huang et al., ICLR 2025): a high-rank Hadamard update ΔW = W ⊙ (s·B·A).

As in PEFT's HiRA: A Kaiming-uniform, B zero, dropout on the input of the update, and by default
no extra scale (``HiRAConfig.scale`` = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import AdapterConfig
from nara.adapters.layer import AdapterLayer, register


@register
class HiRALayer(AdapterLayer):
    method = "hira"
    reads_base_weight = True
    adapter_names = ("hira_A", "hira_B")

    def __init__(self, base: nn.Linear, config: AdapterConfig) -> None:
        super().__init__(base, config)
        self.hira_A = self._new(config.r, self.in_features)
        self.hira_B = self._new(self.out_features, config.r, zero=True)

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        delta = self.delta_weight(cond)  # (d_out, d_in)
        return out + F.linear(xd.to(delta.dtype), delta).to(out.dtype)

    def delta_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        return self.weight * (self.scaling * (self.hira_B @ self.hira_A))
