"""A quantised frozen base (QLoRA): LLaDA or Dream loaded in 4 or 8 bits with bitsandbytes.

4 bits is NF4 with double quantisation and a bfloat16 compute dtype, the setting QLoRA users know:
the linears inside the blocks are stored in 4 bits and dequantised to bfloat16 for each matmul;
the embeddings, the output head and the norms are not quantised (they stay in the load dtype,
bfloat16 by default). 8 bits is bitsandbytes' LLM.int8(). The adapters train in float32 on top
(docs/memory.md has what each saves).

bitsandbytes is an optional dependency (``pip install 'nara-peft[qlora]'``). From
:data:`MIN_BITSANDBYTES` on it has a CPU backend for its 4- and 8-bit layers (forward and
backward), so a quantised base loads and trains on a CPU too (slowly: the weights are dequantised
for each product) as well as on a CUDA GPU; older releases quantise only on CUDA, and
transformers accepts none older. On a machine where it cannot run, asking for a quantised load is
an error naming what is missing, raised before any weight is read.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any

import torch
from packaging.version import Version

# the first release whose 4- and 8-bit layers run on a CPU, and transformers 5's minimum
MIN_BITSANDBYTES = "0.46.1"
INSTALL = f"pip install 'nara-peft[qlora]' (or pip install 'bitsandbytes>={MIN_BITSANDBYTES}')"


def require_bitsandbytes(what: str = "load_in_4bit") -> None:
    """Raise unless a bitsandbytes that can quantise on this machine is installed and imports.

    Raises:
        ImportError: bitsandbytes is not installed, is older than :data:`MIN_BITSANDBYTES`, or
            fails to import (its native library does not load here); each message names the
            package, the version found and the install command.
    """
    fallback = f"or train the base in bfloat16 (model.{what}=false, model.dtype=bfloat16)"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"model.{what}=true needs the bitsandbytes package, which is not installed here: "
            f"{INSTALL}; {fallback}"
        )
    found = importlib.metadata.version("bitsandbytes")
    if Version(found) < Version(MIN_BITSANDBYTES):
        raise ImportError(
            f"model.{what}=true needs bitsandbytes >= {MIN_BITSANDBYTES} (the first release whose "
            f"4- and 8-bit layers run on a CPU as well as CUDA, and the oldest transformers "
            f"accepts); bitsandbytes {found} is installed: {INSTALL}; {fallback}"
        )
    try:
        importlib.import_module("bitsandbytes")
    except Exception as error:  # its native library can fail to load on an unsupported platform
        raise ImportError(
            f"model.{what}=true: bitsandbytes {found} is installed but does not import on this "
            f"machine ({type(error).__name__}: {error}); reinstall it for this platform "
            f"({INSTALL}), {fallback}"
        ) from error


def quantized_device() -> str:
    """Where a quantised base loads when no device is given: the GPU if one is visible, else the
    CPU (bitsandbytes' layers need their weights on the device that runs them)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def quantization_config(load_in_4bit: bool = False, load_in_8bit: bool = False) -> Any:
    """transformers' ``BitsAndBytesConfig`` for the chosen precision, or None for neither.

    4 bits: NF4, double quantisation, bfloat16 compute. 8 bits: LLM.int8(). The output head is
    left unquantised (transformers' bitsandbytes loading skips the output embeddings).

    Raises:
        ValueError: both are set.
        ImportError: see :func:`require_bitsandbytes`.
    """
    if load_in_4bit and load_in_8bit:
        raise ValueError(
            "model.load_in_4bit and model.load_in_8bit are both true; choose one (4 bits: NF4, "
            "the QLoRA setting; 8 bits: LLM.int8())"
        )
    if not (load_in_4bit or load_in_8bit):
        return None
    require_bitsandbytes("load_in_4bit" if load_in_4bit else "load_in_8bit")
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def quantize_linears(model: torch.nn.Module, device: str | torch.device | None = None) -> Any:
    """Quantise ``model``'s linears in place to NF4 as ``load_in_4bit`` does at load time (double
    quantisation, bfloat16 compute; the output head is kept), for a model already in memory,
    such as a random-weight benchmark model too large to save and reload.

    The model should be in bfloat16; the quantised layers are placed on ``device`` (default: its
    current device), where bitsandbytes packs them. Returns the model.

    Raises:
        ImportError: see :func:`require_bitsandbytes`.
    """
    require_bitsandbytes("load_in_4bit")
    import bitsandbytes as bnb

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in list(model.named_modules()):
        if type(module) is not torch.nn.Linear or module is head:
            continue
        where = device if device is not None else module.weight.device
        layer = bnb.nn.Linear4bit(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            compute_dtype=torch.bfloat16,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(
            module.weight.data,  # packed to 4 bits when moved to its device below
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
        )
        if module.bias is not None:
            layer.bias = torch.nn.Parameter(module.bias.data, requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.to(where))
    return model
