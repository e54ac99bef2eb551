"""The one table of adapter cases every method runs through, and small helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nara
from nara.adapters import inject

TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out"]

# (id, config): adding a method = one row here.
CASES = [
    ("lora", lambda: nara.LoRAConfig(r=4, target_modules=TARGETS)),
    ("dora", lambda: nara.DoRAConfig(r=4, target_modules=TARGETS)),
    ("hira", lambda: nara.HiRAConfig(r=4, target_modules=TARGETS)),
    ("nara", lambda: nara.NaRAConfig(r=4, target_modules=TARGETS)),
    (
        "nara_groups_both",
        lambda: nara.NaRAConfig(
            r=4,
            target_modules=TARGETS,
            input_mode="both",
            sharing={"qk": ["q_proj", "k_proj"], "vo": ["v_proj", "attn_out"]},
        ),
    ),
    (
        "nara_per_layer_sinusoidal",
        lambda: nara.NaRAConfig(
            r=4, target_modules=TARGETS, sharing="per_layer", embedding="sinusoidal"
        ),
    ),
    ("nara_learned", lambda: nara.NaRAConfig(r=4, target_modules=TARGETS, embedding="learned")),
    ("nara_raw_density", lambda: nara.NaRAConfig(r=4, embedding="raw", input_mode="density")),
    ("nara_c", lambda: nara.NaRAConfig(r=4, target_modules=TARGETS, input_mode="constant")),
    ("nara_dora", lambda: nara.NaRADoRAConfig(r=4, target_modules=TARGETS)),
    ("multi_lora", lambda: nara.MultiLoRAConfig(r=4, target_modules=TARGETS, num_bins=3)),
    ("t_lora", lambda: nara.TLoRAConfig(r=4, target_modules=TARGETS, r_min=1, power=1.5)),
    ("bitfit", lambda: nara.BitFitConfig()),
    ("ia3", lambda: nara.IA3Config()),
    ("bottleneck_series", lambda: nara.BottleneckConfig(r=4)),
    (
        "bottleneck_parallel_relu",
        lambda: nara.BottleneckConfig(r=4, variant="parallel", nonlinearity="relu"),
    ),
    ("foura", lambda: nara.FouRAConfig(r=4, target_modules=TARGETS)),
    ("foura_soft", lambda: nara.FouRAConfig(r=4, target_modules=TARGETS, gate="soft")),
]
CASE_PARAMS = [pytest.param(make, id=name) for name, make in CASES]

LAM = torch.tensor([0.05, 0.4, 0.75, 1.0])  # one per sample, hitting different bins/ranks
DENSITY = torch.tensor([0.1, 0.9, 0.5, 0.3])


def randomize(model: nn.Module, seed: int = 1, std: float = 0.3) -> None:
    """Move every adapter tensor away from its zero init, so updates are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in inject.adapter_parameters(model).values():
            fan_in = p.shape[-1] if p.dim() > 1 else 1  # keep outputs O(1) through wide layers
            p.add_(torch.randn(p.shape, generator=g) * std / fan_in**0.5)


def run(model: nn.Module, ids: torch.Tensor, lam=LAM, density=DENSITY) -> torch.Tensor:
    with nara.noise_level(model, lam, density):
        return model(ids)
