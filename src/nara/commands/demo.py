"""Fine-tune LoRA and NaRA at equal rank on the embedded model and compare them with the base.

Trains the `demo` recipe (configs/demo.yaml) once per method, evaluates the base model and both
adapters on the task's test split, prints a table of accuracy and trainable parameters, and
writes results.json and results.png to --output. Sized to finish in under 15 minutes on 2 CPU
cores.

--output records the demo's fingerprint (recipe, methods, limit, model weights) in run.json. Run
again with the same settings, it reuses the finished parts of that same run and recomputes the
rest; with other settings it refuses, unless --overwrite (which recomputes everything).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from nara.commands.eval import positive_int

EXAMPLES = """examples:
  nara demo
  nara demo --output runs/demo --limit 200
  nara demo --recipe configs/demo.yaml --methods lora nara nara_c
  nara demo --set training.max_steps=50    # quicker, any recipe override
  nara demo --limit 50 --overwrite         # replace the run in runs/demo"""

# what a demo writes into --output besides each method's training folder (--overwrite removes
# these, so every method is trained and evaluated again)
OUTPUTS = ("results.json", "results.png", "base", "*/demo_row.json")
ROW_FILE = "demo_row.json"
SAMPLER = "nara.commands._common.make_generate_fn defaults (greedy), batch 32"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="demo", help="recipe file or name (default: demo)")
    parser.add_argument("--methods", nargs="+", default=["lora", "nara"], help="adapters to train")
    parser.add_argument("--output", default="runs/demo", help="folder for adapters and results")
    parser.add_argument("--limit", type=positive_int, default=200, help="test examples to evaluate")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every run"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --output holds instead of refusing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _method_config(
    recipe: Path, method: str, output: Path, overrides: list[str], overwrite: bool
) -> Any:
    """The recipe for ``method``: same rank and shared fields, method-only fields dropped;
    ``overwrite`` replaces a previous training run in its folder (one this demo owns)."""
    import yaml

    from nara.training.adapters import adapter_fields
    from nara.training.config import RecipeConfig, apply_overrides

    raw = apply_overrides(yaml.safe_load(recipe.read_text()) or {}, overrides)
    valid = {f.name for f in adapter_fields(method)}
    adapter = {k: v for k, v in (raw.get("adapter") or {}).items() if k in valid}
    raw["adapter"] = {"method": method, **adapter}
    raw["output_dir"] = str(output / method)
    if overwrite:
        raw.setdefault("training", {})["overwrite"] = True
    return RecipeConfig.from_dict(raw)


def _evaluate(
    model: Any,
    tokenizer: Any,
    mask_token_id: int,
    task: str,
    args: argparse.Namespace,
    out: Path,
    identity: dict[str, Any],
    overwrite: bool,
) -> float:
    from nara.commands._common import make_generate_fn
    from nara.evaluation.runner import run_eval

    generate_fn = make_generate_fn(model.eval(), tokenizer, mask_token_id)
    result = run_eval(
        None,
        None,
        f"embedded:{task}",
        output_dir=out,
        limit=args.limit,
        batch_size=32,
        generate_fn=generate_fn,
        progress=not args.no_progress,
        print_table=False,
        identity={**identity, "sampler": SAMPLER},
        overwrite=overwrite,
    )
    return result["average"]


def _method_row(
    recipe: Path, method: str, task: str, args: argparse.Namespace, output: Path, resumed: bool
) -> dict[str, Any]:
    """The table row of one adapter: reused when this same demo run finished it before,
    otherwise trained and evaluated afresh (replacing a half-done attempt of this run)."""
    row_file = output / method / ROW_FILE
    if resumed and row_file.is_file():
        return json.loads(row_file.read_text())
    row_file.unlink(missing_ok=True)
    config = _method_config(recipe, method, output, args.set, overwrite=args.overwrite or resumed)
    row = _train_and_eval(config, task, args, output)
    row_file.write_text(json.dumps(row, indent=2) + "\n")
    return row


def _train_and_eval(
    config: Any, task: str, args: argparse.Namespace, output: Path
) -> dict[str, Any]:
    from nara.adapters import trainable_parameters
    from nara.runs import adapter_identity, model_identity
    from nara.training.trainer import Trainer

    start = time.perf_counter()
    trainer = Trainer(config, show_progress=not args.no_progress)
    result = trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.accelerator.unwrap_model(trainer.model)
    count = trainable_parameters(model)
    method = config.adapter.method
    identity = {
        "model": model_identity(config.model.name),
        "adapter": adapter_identity(result.final_adapter),
    }
    accuracy = _evaluate(
        model,
        trainer.tokenizer,
        trainer.mask_token_id,
        task,
        args,
        output / method / "eval",
        identity,
        overwrite=True,  # the adapter was just trained: an earlier evaluation is not its own
    )
    return {
        "method": method,
        "accuracy": accuracy,
        "trainable_params": count.trainable,
        "trainable_percent": count.trainable_percent,
        "hypernetwork_params": count.hypernetwork,
        "best_val_loss": result.best_val_loss,
        "train_seconds": round(seconds, 1),
        "adapter": str(result.final_adapter),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | accuracy (%) | trainable params | % of model | best val loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        val = "-" if r.get("best_val_loss") is None else f"{r['best_val_loss']:.4f}"
        lines.append(
            f"| {r['method']} | {r['accuracy']:.1f} | {r['trainable_params']:,} | "
            f"{r['trainable_percent']:.3f} | {val} |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], output: Path, title: str) -> Path:
    """Accuracy per model (bars) and each adapter's validation-loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nara.training.metrics import read_metrics

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar([r["method"] for r in rows], [r["accuracy"] for r in rows], color="tab:blue")
    left.set_ylabel("test accuracy (%)")
    left.set_title(title)
    for r in rows[1:]:
        metrics = output / r["method"] / "metrics.jsonl"
        points = [m for m in read_metrics(metrics) if "val_loss" in m] if metrics.is_file() else []
        right.plot(
            [m["step"] for m in points], [m["val_loss"] for m in points], "o-", label=r["method"]
        )
    right.set_xlabel("update")
    right.set_ylabel("validation loss")
    right.legend()
    fig.tight_layout()
    path = output / "results.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fields(config: Any, args: argparse.Namespace, model: dict[str, Any]) -> dict[str, Any]:
    """The demo's fingerprint: what decides its numbers (not the folders or resume flags)."""
    recipe = config.to_dict()
    recipe.pop("output_dir")
    for key in ("resume", "overwrite"):
        recipe["training"].pop(key, None)
    return {"recipe": recipe, "methods": args.methods, "limit": args.limit, "model": model}


def run(args: argparse.Namespace) -> int:
    from nara.runs import RunLock, claim_run_folder, model_identity
    from nara.training.config import load_recipe
    from nara.training.recipes import resolve_recipe

    start = time.perf_counter()
    recipe = resolve_recipe(args.recipe)
    base_config = load_recipe(recipe, args.set)
    source = base_config.data.source
    if not source.startswith("embedded:"):
        raise ValueError(f"the demo evaluates an embedded task; the recipe trains on {source!r}")
    task = source.removeprefix("embedded:")
    output = Path(args.output)
    model_id = model_identity(base_config.model.name)
    with RunLock(output):
        resumed = claim_run_folder(
            output,
            _fields(base_config, args, model_id),
            kind="demo",
            outputs=OUTPUTS,
            overwrite=args.overwrite,
        )
        if resumed:
            print(f"continuing the same demo run in {output} (finished parts are reused)")
        rows, total = _all_rows(recipe, base_config, task, args, output, model_id, resumed)
        _report(rows, total, recipe, base_config, task, args, output, start)
    return 0


def _all_rows(
    recipe: Path,
    base_config: Any,
    task: str,
    args: argparse.Namespace,
    output: Path,
    model_id: dict[str, Any],
    resumed: bool,
) -> tuple[list[dict[str, Any]], int]:
    """(base row then one row per method, base parameter count)."""
    from nara.models import load_model

    model, tokenizer, mask_token_id = load_model(base_config.model.name)
    identity = {"model": model_id, "adapter": None}
    base_acc = _evaluate(
        model, tokenizer, mask_token_id, task, args, output / "base" / "eval", identity, False
    )
    total = sum(p.numel() for p in model.parameters())
    rows = [
        {"method": "base", "accuracy": base_acc, "trainable_params": 0, "trainable_percent": 0.0}
    ]
    del model
    for method in args.methods:
        rows.append(_method_row(recipe, method, task, args, output, resumed))
    return rows, total


def _report(
    rows: list[dict[str, Any]],
    total: int,
    recipe: Path,
    base_config: Any,
    task: str,
    args: argparse.Namespace,
    output: Path,
    start: float,
) -> None:
    """Print the table and write results.json and results.png."""
    table = _table(rows)
    plot = _plot(rows, output, f"embedded:{task}, rank {base_config.adapter.options.get('r')}")
    results = {
        "task": task,
        "recipe": str(recipe),
        "base_model": base_config.model.name,
        "base_params": total,
        "test_examples": args.limit,
        "rows": rows,
        "table": table,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nresults: {output / 'results.json'}, plot: {plot} ({results['wall_seconds']:.0f} s)")
