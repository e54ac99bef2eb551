"""The issue-17 baselines in the benchmark's tables: each row's adapter, and its trainable
parameters on LLaDA-8B's shapes against hand formulas (meta device: no weights, no timing)."""

from __future__ import annotations

import torch

from nara.adapters import add_adapters, trainable_parameters
from nara.benchmarking.models import NARA_METHODS, adapter_config, variant_builders
from nara.benchmarking.params import meta_model

NEW_ROWS = ("FouRA", "bottleneck", "prefix tuning", "BitFit", "(IA)3")
D, LAYERS, MLP = 4096, 32, 12288  # LLaDA-8B (its config's defaults)


def _trainable(name: str, rank: int) -> int:
    model = meta_model("8b", quick=False)
    with torch.device("meta"):
        add_adapters(model, adapter_config(name, rank, dropout=0.0))
    return trainable_parameters(model).trainable


def test_new_methods_are_rows_of_the_training_table():
    assert set(NEW_ROWS) <= set(NARA_METHODS) and set(NEW_ROWS) <= set(variant_builders(8, 0.0))
    assert adapter_config("prefix tuning", 16, 0.0).num_virtual_tokens == 16
    assert adapter_config("FouRA", 16, 0.0).target_modules == ["q_proj", "k_proj", "v_proj", "attn_out"]  # fmt: skip
    assert adapter_config("bottleneck", 16, 0.0).target_modules == ["attn_out", "ff_out"]


def test_parameter_counts_follow_each_design():
    r = 32
    # BitFit: one bias per output feature of q, k, v and the attention output
    assert _trainable("BitFit", r) == LAYERS * 4 * D
    # (IA)3: rescaling of keys and values (output side) and of the MLP output's input
    assert _trainable("(IA)3", r) == LAYERS * (D + D + MLP)
    # prefix tuning: r key and r value vectors per layer
    assert _trainable("prefix tuning", r) == LAYERS * 2 * r * D
    # bottleneck: down (r × d + r) and up (d × r + d) on the attention and MLP outputs
    assert _trainable("bottleneck", r) == LAYERS * 2 * (2 * r * D + r + D)
