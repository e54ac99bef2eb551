"""Did LoRA-Diffusion's regularisers change the trained modules? Penalties of a finished grid.

    python scripts/trajectory_penalties.py                      # configs/experiments/trajectory.yaml
    python scripts/trajectory_penalties.py CONFIG KEY=VALUE...  # another grid, same overrides

For every finished trajectory run of the grid (``final/`` adapter), the unweighted penalties that
``trajectory_regularizer`` weighs — Σ‖A_kA_kᵀ − I‖²_F ("orthogonality") and Σ‖B_kA_k‖_*
("nuclear") over places and phases — and ‖ΔH‖ proxy Σ‖B_kA_k‖_F, mean ± std over seeds per
variant, next to its test accuracy and best validation loss. A regulariser that "does something"
moves its own penalty well below the unregularised reference's. Writes
``<grid root>/penalties.md`` and prints it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "experiments" / "trajectory.yaml"
COLUMNS = ("accuracy", "best_val_loss", "orthogonality", "nuclear", "frobenius")


def penalties(adapter_dir: Path, base: object) -> dict[str, float]:
    """The unweighted penalties and Σ‖B_kA_k‖_F of one saved trajectory adapter."""
    import torch

    from nara.adapters import load_adapters
    from nara.adapters.noise import find_hub
    from nara.adapters.trajectory import regularizer_terms
    from nara.evaluation.profile import shared_copy

    model = load_adapters(shared_copy(base), adapter_dir)
    for p in model.parameters():  # regularizer_terms skips frozen modules: count them all here
        p.requires_grad_(False)
    hub = find_hub(model)
    hub.trajectories.requires_grad_(True)
    with torch.no_grad():
        terms = {k: float(v) for k, v in regularizer_terms(model).items()}
        terms["frobenius"] = float(
            sum(
                torch.linalg.matrix_norm(b @ a)
                for task in hub.trajectories
                for module in task.values()
                for a, b in module.factors()
            )
        )
    return terms


def main(argv: list[str] | None = None) -> int:
    from nara.experiments.grid import load_grid
    from nara.experiments.runner import METRICS, load_base

    argv = list(sys.argv[1:] if argv is None else argv)
    path = Path(argv.pop(0)) if argv and "=" not in argv[0] else DEFAULT
    grid = load_grid(path, argv)
    model = load_base(grid)[0]
    rows: dict[str, list[dict[str, float]]] = {}
    for run in grid.runs():
        final = run.run_dir / "final"
        if run.is_base or not (run.run_dir / METRICS).is_file():
            continue
        if json.loads((final / "adapter_config.json").read_text())["method"] != "trajectory":
            continue
        metrics = json.loads((run.run_dir / METRICS).read_text())
        row = {"accuracy": metrics["accuracy"], "best_val_loss": metrics["best_val_loss"]}
        rows.setdefault(f"{run.task} · {run.label}", []).append({**row, **penalties(final, model)})
    lines = [
        f"# {grid.name}: regulariser penalties of the trained modules",
        "",
        "Unweighted Σ‖A_kA_kᵀ − I‖²_F (orthogonality), Σ‖B_kA_k‖_* (nuclear) and Σ‖B_kA_k‖_F "
        "over places and phases of each run's final adapter; mean ± std over seeds.",
        "",
        "| run | seeds | " + " | ".join(COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for label, runs in rows.items():
        cells = []
        for col in COLUMNS:
            values = np.array([r[col] for r in runs if r[col] is not None], dtype=float)
            std = f" ± {values.std(ddof=1):.4g}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.4g}{std}" if len(values) else "–")
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    grid.root.mkdir(parents=True, exist_ok=True)
    (grid.root / "penalties.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
