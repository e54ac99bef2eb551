"""Experiment grids: methods × seeds × tasks (× ablations), run resumably and reported.

Names are imported lazily so that ``nara --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Grid": "nara.experiments.grid",
    "RunSpec": "nara.experiments.grid",
    "grid_from_dict": "nara.experiments.grid",
    "load_grid": "nara.experiments.grid",
    "load_mechanism": "nara.experiments.mechanism",
    "run_mechanism": "nara.experiments.mechanism",
    "parameter_counts": "nara.experiments.runner",
    "report": "nara.experiments.runner",
    "run_grid": "nara.experiments.runner",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nara.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
