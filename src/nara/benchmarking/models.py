"""The models and adapter variants the benchmarks compare: same base weights, same rank, same targets.

Sizes: ``tiny`` (the embedded model, or a random model of its shape when it is not built), ``mid``
(a random LLaDA of width 1024 and 8 layers) and ``8b`` (LLaDA-8B's shapes, parameter counts only,
on the meta device). Every variant of one size shares the base model's frozen weight tensors, so
ten variants of the mid-size model cost one copy of its weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from nara.adapters import (
    AdapterConfig,
    BitFitConfig,
    BottleneckConfig,
    DoRAConfig,
    FouRAConfig,
    HiRAConfig,
    IA3Config,
    LoRAConfig,
    MultiLoRAConfig,
    NaRAConfig,
    NaRADoRAConfig,
    PrefixTuningConfig,
    TLoRAConfig,
    add_adapters,
)
from nara.models import LLaDAConfig, LLaDAModelLM, tiny_config

TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out"]  # the paper's targets on LLaDA

# scripts/build_tiny.py's defaults: the shape of the embedded model
EMBEDDED_SHAPE = {
    "d_model": 192, "n_heads": 4, "n_kv_heads": 4, "n_layers": 5,
    "mlp_hidden_size": 512, "vocab_size": 1024, "embedding_size": 1024,
}  # fmt: skip
# the mid-size random model: LLaDA's 3× MLP, a small vocabulary so the head does not dominate
MID_SHAPE = {
    "d_model": 1024, "n_heads": 16, "n_kv_heads": 16, "n_layers": 8,
    "mlp_hidden_size": 3072, "vocab_size": 1024, "embedding_size": 1024,
}  # fmt: skip
QUICK_MID_SHAPE = {
    "d_model": 128, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2,
    "mlp_hidden_size": 384, "vocab_size": 256, "embedding_size": 256,
}  # fmt: skip

# nara's methods at one rank; each name is a row of the tables
NARA_METHODS: dict[str, type[AdapterConfig]] = {
    "nara LoRA": LoRAConfig,
    "DoRA": DoRAConfig,
    "HiRA": HiRAConfig,
    "NaRA": NaRAConfig,
    "NaRA-DoRA": NaRADoRAConfig,
    "Multi-LoRA": MultiLoRAConfig,
    "T-LoRA": TLoRAConfig,
    "FouRA": FouRAConfig,
    "bottleneck": BottleneckConfig,
    "prefix tuning": PrefixTuningConfig,
    "BitFit": BitFitConfig,
    "(IA)3": IA3Config,
}
# methods whose design fixes their modules keep their own targets (bottleneck: attention and MLP
# outputs; (IA)3: keys, values and the MLP output); BitFit's biases and (IA)3's vectors have no rank
OWN_TARGETS = ("bottleneck", "(IA)3")


def model_config(size: str, quick: bool = False) -> LLaDAConfig:
    """The LLaDA config of ``size`` ("tiny", "mid" or "8b"); --quick shrinks "mid"."""
    if size == "8b":
        return LLaDAConfig()  # the defaults are LLaDA-8B's
    shape = EMBEDDED_SHAPE if size == "tiny" else QUICK_MID_SHAPE if quick else MID_SHAPE
    vocab = shape["vocab_size"]
    ids = {"mask_token_id": vocab - 1, "eos_token_id": vocab - 2, "pad_token_id": vocab - 2}
    return tiny_config(**shape, **ids, rope_theta=10000.0, max_sequence_length=512)


def base_model(size: str, quick: bool = False) -> tuple[LLaDAModelLM, str]:
    """The base model of ``size`` in float32 train mode, and where it came from.

    "tiny" is the embedded model when it is built (``nara.load_model("tiny")``), else a random
    model of the embedded shape; "mid" is always random (speed does not depend on the values).
    """
    if size == "tiny":
        from nara.models import load_model

        try:
            model = load_model("tiny", dtype=torch.float32).model
            return model.train(), "embedded tiny model (nara.load_model('tiny'))"
        except FileNotFoundError:
            source = "random weights, shape of the embedded tiny model (not built here)"
    else:
        source = "random weights"
    torch.manual_seed(0)
    return LLaDAModelLM(model_config(size, quick)).train(), source


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules that shares its parameter and buffer tensors (no new weights).

    Adapters wrap the copy's layers; the frozen weights stay one tensor for every variant. Do not
    merge adapters into such a copy: merging writes into the shared weight.
    """
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def adapter_config(name: str, rank: int, dropout: float) -> AdapterConfig:
    """nara's config for method row ``name`` at rank ``rank`` on TARGETS (or the method's own,
    :data:`OWN_TARGETS`), alpha = 2·rank; prefix tuning learns ``rank`` virtual tokens."""
    config = NARA_METHODS[name]
    options = {"r": rank, "alpha": 2.0 * rank, "dropout": dropout}
    if name not in OWN_TARGETS:
        options["target_modules"] = TARGETS
    if config is PrefixTuningConfig:
        options["num_virtual_tokens"] = rank
    return config(**options)


def peft_lora(model: nn.Module, rank: int, dropout: float) -> nn.Module:
    """PEFT's LoRA on the same targets with the same rank, alpha and dropout."""
    import peft

    config = peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=TARGETS
    )
    return peft.get_peft_model(model, config)


def variant_builders(rank: int, dropout: float) -> dict[str, Callable[[nn.Module], nn.Module]]:
    """Row name → function that adapts a base model: PEFT LoRA and every nara method."""
    builders: dict[str, Callable[[nn.Module], nn.Module]] = {
        "PEFT LoRA": lambda m: peft_lora(m, rank, dropout)
    }
    for name in NARA_METHODS:
        builders[name] = lambda m, name=name: add_adapters(m, adapter_config(name, rank, dropout))
    return builders
