"""nara: noise-aware parameter-efficient fine-tuning for diffusion language models.

The public names below are imported lazily (PEP 562), so ``import nara`` and ``nara --help`` stay
fast and do not pull in torch or transformers until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # adapters
    "add_adapters": "nara.adapters",
    "noise_level": "nara.adapters",
    "save_adapters": "nara.adapters",
    "load_adapters": "nara.adapters",
    "trainable_parameters": "nara.adapters",
    "merge_adapters": "nara.adapters",
    "unmerge_adapters": "nara.adapters",
    "LoRAConfig": "nara.adapters",
    "DoRAConfig": "nara.adapters",
    "HiRAConfig": "nara.adapters",
    "NaRAConfig": "nara.adapters",
    "NaRADoRAConfig": "nara.adapters",
    "MultiLoRAConfig": "nara.adapters",
    "TLoRAConfig": "nara.adapters",
    "TrajectoryConfig": "nara.adapters",
    "PromptTuningConfig": "nara.adapters",
    "PTuningConfig": "nara.adapters",
    "BitFitConfig": "nara.adapters",
    "IA3Config": "nara.adapters",
    "BottleneckConfig": "nara.adapters",
    "PrefixTuningConfig": "nara.adapters",
    "FouRAConfig": "nara.adapters",
    "TrajectoryRouterConfig": "nara.adapters",
    "compose_trajectories": "nara.adapters",
    "route_context": "nara.adapters",
    "load_peft_adapters": "nara.adapters",
    "ParameterCount": "nara.adapters",
    # models
    "load_model": "nara.models",
    "LLaDAConfig": "nara.models",
    "LLaDAModelLM": "nara.models",
    "DreamConfig": "nara.models",
    "DreamModel": "nara.models",
    "MDLMConfig": "nara.models",
    "MDLMModel": "nara.models",
    # diffusion
    "masked_fraction": "nara.diffusion",
    "local_mask_density": "nara.diffusion",
    "sft_maskable": "nara.diffusion",
    "LossOutput": "nara.diffusion",
    "GenerationOutput": "nara.diffusion",
    "forward_process": "nara.diffusion",
    "diffusion_loss": "nara.diffusion",
    "generate": "nara.diffusion",
    "log_likelihood": "nara.diffusion",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nara' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
