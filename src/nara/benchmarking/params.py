"""Parameter counts: every method's trainable tensors on the tiny, mid-size and LLaDA-8B shapes.

Models are built on the meta device (shapes, no memory), so the 8B count needs no weights.
"""

from __future__ import annotations

from typing import Any

import torch

from nara.adapters import add_adapters, trainable_parameters
from nara.benchmarking.models import (
    NARA_METHODS,
    adapter_config,
    model_config,
    peft_lora,
)
from nara.benchmarking.options import BenchOptions
from nara.models import LLaDAModelLM


def meta_model(size: str, quick: bool) -> LLaDAModelLM:
    """The model of ``size`` on the meta device: shapes only."""
    with torch.device("meta"):
        return LLaDAModelLM(model_config(size, quick))


def count_trainable(model: torch.nn.Module) -> int:
    """Elements of the tensors that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_suite(size: str, options: BenchOptions) -> dict[str, Any]:
    """Section 4: base size, each method's trainable count and NaRA's overhead over LoRA."""
    base = sum(p.numel() for p in meta_model(size, options.quick).parameters())
    rows: dict[str, dict[str, Any]] = {}
    peft_model = peft_lora(meta_model(size, options.quick), options.rank, options.dropout)
    counts = {"PEFT LoRA": count_trainable(peft_model)}
    for name in NARA_METHODS:
        model = meta_model(size, options.quick)
        with torch.device("meta"):  # the hypernetworks are built on meta too
            add_adapters(model, adapter_config(name, options.rank, options.dropout))
        counts[name] = trainable_parameters(model).trainable
    for name, n in counts.items():
        rows[name] = {"trainable": n, "percent_of_base": round(100 * n / base, 5)}
    extra = counts["NaRA"] - counts["nara LoRA"]
    return {
        "d_model": model_config(size, options.quick).d_model,
        "n_layers": model_config(size, options.quick).n_layers,
        "base_parameters": base,
        "rank": options.rank,
        "methods": rows,
        "nara_over_lora": extra,
        "nara_over_lora_percent_of_base": round(100 * extra / base, 5),
    }
