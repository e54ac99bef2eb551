"""NaRA (Wang, Zhuang, Huang, Zhang, ICML 2026): ΔW(λ) = s·B·C(λ)·A, one C per sample.

The layer computes ((x̃·Aᵀ) ⊗ C(λ)ᵀ)·Bᵀ·s with a batched matmul, reading C (n, r, r) from the
NoiseHub, which runs each hypernetwork once per forward pass. NaRA-DoRA is DoRA on this update.
"""

from __future__ import annotations

import torch

from nara.adapters.config import NaRAConfig
from nara.adapters.dora import DoRALayer
from nara.adapters.hyper import make_mixer
from nara.adapters.layer import matches, register
from nara.adapters.lora import LoRALayer
from nara.adapters.noise import Conditioner


def sharing_groups(config: NaRAConfig, names: list[str]) -> dict[str, str]:
    """Target module name → hypernetwork key, following ``config.sharing``.

    Raises ValueError if a target is in no group or in several.
    """
    if config.sharing == "global":
        return dict.fromkeys(names, "global")
    if config.sharing == "per_layer":
        return {name: name.replace(".", "__") for name in names}
    keys = {}
    for name in names:
        hits = [
            g for g, entries in config.sharing.items() if any(matches(name, e) for e in entries)
        ]
        if len(hits) != 1:
            where = "no sharing group" if not hits else f"several sharing groups {hits}"
            raise ValueError(
                f"adapted module {name!r} is in {where}; list it (or its last name) in exactly "
                f"one group of NaRAConfig.sharing={config.sharing!r}"
            )
        keys[name] = hits[0]
    return keys


@register
class NaRALayer(LoRALayer):
    method = "nara"

    @classmethod
    def conditioners(
        cls, config: NaRAConfig, names: list[str]
    ) -> tuple[dict[str, Conditioner], dict[str, str]]:
        keys = sharing_groups(config, names)
        return {key: make_mixer(config) for key in dict.fromkeys(keys.values())}, keys

    def mix(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[0] == 1:  # one λ for the whole batch
            return h @ cond[0].mT
        hb = h.reshape(cond.shape[0], -1, h.shape[-1])  # (B, T, r)
        return torch.bmm(hb, cond.mT).view(h.shape)

    def mix_matrix(self, cond: torch.Tensor) -> torch.Tensor:
        return cond


@register
class NaRADoRALayer(DoRALayer, NaRALayer):
    method = "nara_dora"
