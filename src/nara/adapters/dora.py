"""DoRA (Liu et al., 2024): W' = m·(W + ΔW)/‖W + ΔW‖, the norm per output row and detached.

Follows PEFT's LoRA-with-``use_dora`` forward so outputs match it: with g = m/‖W + ΔW‖,
y = base(x) + (g − 1)·(x̃·Wᵀ) + g·s·B·A·x̃, where x̃ is the dropped-out input (x̃ = x without
dropout, then x̃·Wᵀ is the base output minus bias). The low-rank part comes from the parent
layer, so the same code is NaRA-DoRA when that part is NaRA's ΔW(λ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nara.adapters.config import AdapterConfig
from nara.adapters.layer import per_sample, register
from nara.adapters.lora import LoRALayer


@register
class DoRALayer(LoRALayer):
    method = "dora"
    reads_base_weight = True
    adapter_names = (*LoRALayer.adapter_names, "magnitude")

    def __init__(self, base: nn.Linear, config: AdapterConfig) -> None:
        super().__init__(base, config)
        self.magnitude = nn.Parameter(self.weight_norm(None))  # ‖W‖ per row: B = 0 at init

    @torch.no_grad()
    def weight_norm(self, cond: torch.Tensor | None) -> torch.Tensor:
        """‖W + ΔW‖ per output row, float32 and detached: (d_out,) or (n, d_out) per sample.

        Expands ‖W_j + b_j·A‖² = ‖W_j‖² + 2·b_j·(A·W_jᵀ) + b_j·(A·Aᵀ)·b_jᵀ with b = s·B·C, so a
        per-sample C costs O(n·d_out·r²) instead of materialising n full weights.
        """
        w, a = self.weight.float(), self.lora_A.float()
        m = self.mix_matrix(cond)
        b = self.scaling * (self.lora_B.float() if m is None else self.lora_B.float() @ m.float())
        cross = (b * (w @ a.T)).sum(-1)  # (..., d_out)
        quad = ((b @ (a @ a.T)) * b).sum(-1)  # (..., d_out)
        return (w.square().sum(-1) + 2 * cross + quad).clamp_min(0).sqrt()

    def adapt(
        self, x: torch.Tensor, xd: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        g = self.magnitude / self.weight_norm(cond)  # (d_out,) or (n, d_out)
        if g.dim() == 2:
            g = per_sample(g, out)
        if xd is x:
            base = out if self.bias is None else out - self.bias  # x·Wᵀ
        else:
            base = F.linear(xd, self.weight)
        return out + ((g - 1) * base + g * self.low_rank(xd, cond)).to(out.dtype)

    def merged_weight(self, cond: torch.Tensor | None) -> torch.Tensor:
        g = self.magnitude / self.weight_norm(cond).view(-1)  # (d_out,)
        return g[:, None] * (self.weight + self.delta_weight(cond))
