"""A quantised frozen base (QLoRA): LLaDA or Dream loaded in 4 or 8 bits with bitsandbytes.

4 bits is NF4 with double quantisation and a bfloat16 compute dtype, the setting QLoRA users know:
the linears inside the blocks are stored in 4 bits and dequantised to bfloat16 for each matmul;
the embeddings, the output head and the norms are not quantised (they stay in the load dtype,
bfloat16 by default). 8 bits is bitsandbytes' LLM.int8(). The adapters train in float32 on top
(docs/memory.md has what each saves).

bitsandbytes is an optional dependency (``pip install 'nara[qlora]'``) and its 4- and 8-bit
layers are exercised here on a CUDA GPU only; on a machine without either, asking for a quantised
load is a clear error that names what is missing, before any weight is read.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

INSTALL = "pip install 'nara[qlora]' (or pip install bitsandbytes)"


def require_bitsandbytes(what: str = "load_in_4bit") -> None:
    """Raise unless bitsandbytes is installed and a CUDA GPU is visible.

    Raises:
        ImportError: bitsandbytes is not installed (the message gives the install command).
        RuntimeError: no CUDA GPU (torch.cuda.is_available() is False); the message says which
            torch build this is and how to train without quantisation.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"model.{what}=true needs the bitsandbytes package, which is not installed here: "
            f"{INSTALL}; or train the base in bfloat16 (model.{what}=false, model.dtype=bfloat16)"
        )
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError(
            f"model.{what}=true needs a CUDA GPU: nara runs bitsandbytes' 4- and 8-bit layers on "
            f"CUDA only, and torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"{build}); run on a GPU machine, or set model.{what}=false and model.dtype=bfloat16"
        )


def quantization_config(load_in_4bit: bool = False, load_in_8bit: bool = False) -> Any:
    """transformers' ``BitsAndBytesConfig`` for the chosen precision, or None for neither.

    4 bits: NF4, double quantisation, bfloat16 compute. 8 bits: LLM.int8(). The output head is
    left unquantised (transformers' bitsandbytes loading skips the output embeddings).

    Raises:
        ValueError: both are set.
        ImportError, RuntimeError: see :func:`require_bitsandbytes`.
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
