"""Resumable checkpoints: Accelerate's state (optimizer, scheduler, RNG, trainer counters) with
only the trainable weights, plus a ready-to-use adapter folder in each checkpoint.

Layout of ``output_dir``::

    checkpoints/step_0000040/   accelerate state + adapter/ + config.yaml
    best/                       adapter with the lowest validation loss (+ best.json)
    final/                      adapter at the end of training
    metrics.jsonl               one JSON object per logged update / evaluation
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    """Counters that locate a run in its data stream; saved with every checkpoint.

    Attributes:
        step: optimizer updates done.
        epoch: current epoch.
        batches_in_epoch: micro-batches this process consumed in the current epoch.
        micro_batches: micro-batches this process consumed in total (seeds the noise draws).
        best_val_loss, best_step: the best validation so far.
    """

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    micro_batches: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step_{step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders under ``output_dir``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``latest`` (None when there is none yet) or a folder.

    Raises:
        FileNotFoundError: if an explicit folder does not exist.
    """
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(
            f"training.resume={resume!r} is not a checkpoint folder; use 'latest' or a "
            f"{CHECKPOINTS}/step_* folder under an output_dir"
        )
    return path


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def keep_trainable_hook(
    models: list[torch.nn.Module], weights: list[dict[str, torch.Tensor]], _output_dir: str
) -> None:
    """Accelerate save hook: store only trainable weights (the frozen base is not state)."""
    for i, model in enumerate(models):
        if i < len(weights):
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in names}


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric records past ``step`` (written by a killed run after its last checkpoint)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))
