"""Fine-tuning recipes: the validated recipe schema and the Accelerate training loop.

Names are imported lazily so that ``nara --help`` (which reads the schema) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "nara.training.config",
    "RecipeConfig": "nara.training.config",
    "load_recipe": "nara.training.config",
    "schema_help": "nara.training.config",
    "find_recipes": "nara.training.recipes",
    "resolve_recipe": "nara.training.recipes",
    "Trainer": "nara.training.trainer",
    "TrainResult": "nara.training.trainer",
    "train": "nara.training.trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nara.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
