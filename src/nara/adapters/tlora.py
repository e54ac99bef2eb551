"""T-LoRA (Soboleva et al., 2025, from image diffusion): a LoRA whose active rank follows the noise.

rank(λ) = r_min + ⌊(1 − λ)^p · (r − r_min)⌋: higher noise → fewer ranks. Each sample masks the
rank space of its own update, so a mixed batch runs in one pass.
"""

from __future__ import annotations

import torch

from nara.adapters.config import TLoRAConfig
from nara.adapters.layer import register
from nara.adapters.lora import LoRALayer
from nara.adapters.noise import Conditioner

# λ arrives as float32: keep ⌊(1 − λ)^p·(r − r_min)⌋ exact for values like λ = 0.3 despite rounding.
_ROUNDING_SLACK = 1e-6


class RankMask(Conditioner):
    """λ (n,) → float mask (n, r) with ones on the first rank(λ) entries."""

    def __init__(self, r: int, r_min: int, power: float) -> None:
        super().__init__()
        self.r, self.r_min, self.power = r, r_min, power

    def forward(self, lam: torch.Tensor, density: torch.Tensor | None) -> torch.Tensor:
        extra = (1 - lam.double()).pow(self.power) * (self.r - self.r_min)
        rank = self.r_min + torch.floor(extra + _ROUNDING_SLACK).long()  # (n,)
        return (torch.arange(self.r, device=lam.device) < rank[:, None]).float()  # (n, r)


@register
class TLoRALayer(LoRALayer):
    method = "t_lora"

    @classmethod
    def conditioners(
        cls, config: TLoRAConfig, names: list[str]
    ) -> tuple[dict[str, Conditioner], dict[str, str]]:
        return {"rank": RankMask(config.r, config.r_min, config.power)}, dict.fromkeys(
            names, "rank"
        )

    def mix(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[0] == 1:
            return h * cond[0].to(h.dtype)
        hb = h.reshape(cond.shape[0], -1, h.shape[-1])  # (B, T, r)
        return (hb * cond[:, None, :].to(h.dtype)).view(h.shape)

    def mix_matrix(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed(cond)  # (n, r, r)
