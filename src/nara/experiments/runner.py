"""Run an experiment grid on one machine, sequentially and resumably, then report it.

Each run lives in ``<output>/<grid>/<task>/<method>/seed<S>/``: the trainer's files (config.yaml,
metrics.jsonl, final/ adapter), ``eval/`` (per-example predictions of the test split) and
``metrics.json``, written last. A run with ``metrics.json`` is finished and skipped; a run without
it continues from its newest checkpoint (``training.resume=latest``), or, if training finished,
goes straight to evaluation (which itself resumes per example). A grid with ``lr_sweep`` first
trains its sweep runs (each finished once its ``sweep.json`` is written; never scored on the test
split), chooses each method's rate by validation loss (:func:`select_lrs`), then runs every seed at
that rate; the sweep run at the chosen rate is the sweep seed's run, evaluated without retraining.

The report (``results.md``, ``results.json``) gives mean ± std over seeds (sample std, ddof 1)
of test accuracy and best validation loss per method and task, the trainable parameters of each
method, the paired (same-seed) accuracy difference of each method to LoRA, the sweep's validation
losses and chosen rates, and per task a noise profile of each method's first-seed adapter against
the base.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nara.experiments.grid import BASE, EVALUATION_SAMPLER_KEYS, Grid, RunSpec

METRICS = "metrics.json"
SWEEP = "sweep.json"  # a finished learning-rate sweep run: its validation loss, no test score
REFERENCE = "lora"  # the label paired differences are taken against


def _loaded_copy(base: tuple[Any, Any, int]) -> tuple[Any, Any, int]:
    """The base (model, tokenizer, mask id) with a fresh structural copy of the model."""
    from nara.evaluation.profile import shared_copy

    model, tokenizer, mask_token_id = base
    return shared_copy(model), tokenizer, mask_token_id


def load_base(grid: Grid) -> tuple[Any, Any, int]:
    """Load the grid's base model once (float32 on CPU, bfloat16 on GPU unless set)."""
    import torch

    from nara.models import load_model

    section = grid.recipe.get("model") or {}
    dtype = section.get("dtype", "auto")
    torch_dtype = None if dtype == "auto" else getattr(torch, dtype)
    if torch_dtype is None and torch.cuda.is_available():
        torch_dtype = torch.bfloat16
    device = "cuda" if torch.cuda.is_available() else None
    loaded = load_model(
        grid.model_name(),
        dtype=torch_dtype,
        device=device,
        trust_remote_code=bool(section.get("trust_remote_code", False)),
    )
    if loaded.tokenizer is None:
        raise ValueError(f"{grid.model_name()} ships no tokenizer; the grid trains on text")
    return loaded


def _evaluate(model: Any, tokenizer: Any, mask_token_id: int, run: RunSpec, grid: Grid) -> dict:
    from nara.commands._common import make_generate_fn
    from nara.evaluation.runner import run_eval
    from nara.runs import adapter_identity, model_identity

    ev = grid.evaluation
    # what decides the predictions: a resumed grid never scores rows of another adapter or setting
    identity = {"model": model_identity(grid.model_name()), "evaluation": dict(ev)}
    if not run.is_base:
        identity["adapter"] = adapter_identity(run.run_dir / "final")
    sampler = {key: ev.get(key) for key in EVALUATION_SAMPLER_KEYS}
    generate_fn = make_generate_fn(
        model.eval(), tokenizer, mask_token_id, steps=ev["steps"], **sampler
    )
    if ev["gen_length"]:
        fixed = generate_fn
        generate_fn = lambda prompts, _length: fixed(prompts, ev["gen_length"])  # noqa: E731
    name = grid.tasks[run.task]["eval"]  # embedded:<task> is both a data source and an eval task
    result = run_eval(
        None,
        None,
        name,
        output_dir=run.run_dir / "eval",
        limit=ev["limit"],
        batch_size=ev["batch_size"],
        generate_fn=generate_fn,
        progress=False,
        print_table=False,
        identity=identity,
    )
    return result["tasks"][name]


def _train(run: RunSpec, base: tuple[Any, Any, int], progress: bool) -> tuple[Any, dict]:
    """Train (or resume) the run; returns the adapted model and training facts."""
    from nara.adapters import load_adapters
    from nara.training.config import RecipeConfig
    from nara.training.metrics import read_metrics
    from nara.training.trainer import Trainer

    final = run.run_dir / "final"
    start = time.perf_counter()
    trained_before = (final / "adapter_config.json").is_file()
    if trained_before:  # evaluation was interrupted, or this is a sweep run's adapter
        model = load_adapters(_loaded_copy(base)[0], final)
    else:
        trainer = Trainer(
            RecipeConfig.from_dict(run.recipe), loaded=_loaded_copy(base), show_progress=progress
        )
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model)
        shutil.rmtree(run.run_dir / "checkpoints", ignore_errors=True)  # final/ is kept
    records = read_metrics(run.run_dir / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    facts = {
        "steps": max((r["step"] for r in records), default=0),
        "final_train_loss": losses[-1] if losses else None,
        "best_val_loss": min(vals) if vals else None,
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    if trained_before and (run.run_dir / SWEEP).is_file():  # trained by the sweep: its time
        facts["train_seconds"] = json.loads((run.run_dir / SWEEP).read_text())["train_seconds"]
    return model, facts


def run_fields(run: RunSpec, grid: Grid) -> dict[str, Any]:
    """What decides a run's metrics: its recipe (None for the base) and the evaluation settings."""
    return {"recipe": None if run.is_base else run.recipe, "evaluation": dict(grid.evaluation)}


def check_finished(run: RunSpec, grid: Grid, record: str = METRICS) -> None:
    """Refuse to skip a finished run (``record``: its metrics.json, or a sweep run's sweep.json)
    whose recorded settings differ from the grid's now.

    Raises:
        RunFolderError: the run folder holds metrics of other settings (each differing field
            named), so reporting them would report another run's results.
    """
    from nara.runs import RunFolderError, canonical_json, differing_fields

    fields = run_fields(run, grid) if record == METRICS else {"recipe": run.recipe}
    saved = json.loads((run.run_dir / record).read_text()).get("run")
    diffs = differing_fields(saved or {}, json.loads(canonical_json(fields)))
    if saved is None or diffs:
        what = "; ".join(diffs) if saved else "no run record (an older nara)"
        raise RunFolderError(
            f"{run.run_dir} holds a finished run with other settings ({what}); give the grid "
            "another name (name=...) or output (output=...), or delete that folder to redo it"
        )


def run_one(run: RunSpec, grid: Grid, base: tuple[Any, Any, int], progress: bool = False) -> dict:
    """Train (unless base) and evaluate one run; writes and returns its ``metrics.json``."""
    from nara.adapters import trainable_parameters

    _, tokenizer, mask_token_id = base
    facts: dict[str, Any] = {"steps": 0, "train_seconds": 0.0, "best_val_loss": None}
    if run.is_base:
        model, params = base[0], 0
    else:
        model, facts = _train(run, base, progress)
        params = trainable_parameters(model).trainable
    start = time.perf_counter()
    summary = _evaluate(model, tokenizer, mask_token_id, run, grid)
    metrics = {
        "run": run_fields(run, grid),
        "task": run.task,
        "method": run.label,
        "seed": run.seed,
        "accuracy": summary["score"],
        "examples": summary["n"],
        "trainable_params": params,
        "lr": None if run.is_base else run.recipe["training"].get("lr"),
        **facts,
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_sweep_run(run: RunSpec, base: tuple[Any, Any, int], progress: bool = False) -> dict:
    """Train (or resume) one learning-rate sweep run and write its ``sweep.json``: the best
    validation loss the rate is chosen by. The test split is not touched."""
    _, facts = _train(run, base, progress)
    record = {"run": {"recipe": run.recipe}, "task": run.task, "method": run.label,
              "seed": run.seed, "lr": run.lr, **facts}  # fmt: skip
    (run.run_dir / SWEEP).write_text(json.dumps(record, indent=2) + "\n")
    return record


def sweep_records(grid: Grid, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The sweep.json of every finished sweep run, each checked against the grid's settings."""
    finished = [r for r in grid.sweep_runs(only) if (r.run_dir / SWEEP).is_file()]
    for run in finished:
        check_finished(run, grid, SWEEP)
    return [json.loads((r.run_dir / SWEEP).read_text()) for r in finished]


def select_lrs(grid: Grid, only: list[str] | None = None) -> dict[tuple[str, str], float]:
    """The chosen rate per ``(task, label)`` whose sweep has finished at every rate: the rate of
    the lowest best VALIDATION loss (ties: the earlier rate in ``lr_sweep.lrs``; a run without a
    finite validation loss, e.g. diverged, never wins). Test scores are never read.

    Raises:
        ValueError: every rate of a pair lacks a finite validation loss (nothing to choose by).
    """
    if not grid.lr_sweep:
        return {}
    rates = grid.lr_sweep["lrs"]
    by_pair: dict[tuple[str, str], dict[float, float]] = {}
    for rec in sweep_records(grid, only):
        val = rec.get("best_val_loss")
        val = float(val) if val is not None and np.isfinite(val) else float("inf")
        by_pair.setdefault((rec["task"], rec["method"]), {})[float(rec["lr"])] = val
    chosen = {}
    for pair, losses in by_pair.items():
        if len(losses) < len(rates):
            continue  # the sweep of this pair is unfinished
        best = min(rates, key=lambda lr: losses[lr])  # min keeps the first of equal losses
        if not np.isfinite(losses[best]):
            raise ValueError(
                f"lr_sweep of {pair[1]} on {pair[0]}: no rate in {rates} gave a finite "
                "validation loss; add smaller rates to lr_sweep.lrs"
            )
        chosen[pair] = best
    return chosen


def read_results(grid: Grid) -> list[dict[str, Any]]:
    """The metrics.json of every finished run of the grid (sweep grids: at the chosen rates),
    each checked against the grid's settings now (:func:`check_finished`), so a report never
    shows another run's results."""
    finished = [r for r in grid.runs(lrs=select_lrs(grid)) if (r.run_dir / METRICS).is_file()]
    for run in finished:
        check_finished(run, grid)
    return [json.loads((r.run_dir / METRICS).read_text()) for r in finished]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def aggregate(grid: Grid, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and task: accuracy and best validation loss over seeds, and parameters."""
    out: dict[str, Any] = {}
    for label in grid.labels():
        mine = [r for r in rows if r["method"] == label]
        if not mine:
            continue
        per_task = {}
        for task in grid.tasks:
            runs = [r for r in mine if r["task"] == task]
            acc = [r["accuracy"] for r in runs]
            val = [r["best_val_loss"] for r in runs if r.get("best_val_loss") is not None]
            per_task[task] = {"accuracy": acc, "val_loss": val, "seeds": [r["seed"] for r in runs]}
            if runs and runs[0].get("lr") is not None:
                per_task[task]["lr"] = runs[0]["lr"]
        out[label] = {"trainable_params": mine[0]["trainable_params"], "tasks": per_task}
    return out


def paired_differences(summary: dict[str, Any], label: str, task: str) -> list[float]:
    """Accuracy of ``label`` minus LoRA's on the same seed, for the seeds both have."""
    if REFERENCE not in summary or label == REFERENCE:
        return []
    mine, ref = summary[label]["tasks"][task], summary[REFERENCE]["tasks"][task]
    ref_by_seed = dict(zip(ref["seeds"], ref["accuracy"], strict=True))
    return [a - ref_by_seed[s] for s, a in zip(mine["seeds"], mine["accuracy"], strict=True)
            if s in ref_by_seed]  # fmt: skip


def render_sweep(grid: Grid, records: list[dict[str, Any]], chosen: dict) -> str:
    """Markdown: each method's best validation loss per swept rate, and the rate chosen."""
    rates = grid.lr_sweep["lrs"]
    lines = [
        f"Learning-rate sweep (seed {grid.lr_sweep['seed']}): best validation loss per rate; "
        "each method runs every seed at the rate of the lowest (validation only, never test).",
        "",
        "| task | method | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | chosen |",
        "|---|---|" + "---:|" * (len(rates) + 1),
    ]
    loss = {(r["task"], r["method"], float(r["lr"])): r.get("best_val_loss") for r in records}
    for task in grid.tasks:
        for label in grid.labels():
            if not any((task, label, lr) in loss for lr in rates):
                continue
            cells = [loss.get((task, label, lr)) for lr in rates]
            text = ["–" if v is None else f"{v:.4f}" for v in cells]
            pick = chosen.get((task, label))
            lines.append(f"| {task} | {label} | " + " | ".join(text)
                         + f" | {'–' if pick is None else f'{pick:g}'} |")  # fmt: skip
    return "\n".join(lines)


def render_table(grid: Grid, summary: dict[str, Any]) -> str:
    """Markdown: test accuracy (%), paired differences to LoRA and best validation loss, mean ±
    std over seeds; with a sweep, each cell's chosen rate."""
    tasks = list(grid.tasks)
    seeds = ", ".join(map(str, grid.seeds))
    lines = [
        f"Test accuracy (%), mean ± std over seeds {seeds} (base: one greedy run).",
        "",
        "| method | trainable params | " + " | ".join(tasks) + " | avg |",
        "|---|---:|" + "---:|" * (len(tasks) + 1),
    ]
    for label, entry in summary.items():
        cells = [_cell(entry["tasks"][t]["accuracy"], 2) for t in tasks]
        if grid.lr_sweep:
            cells = [c + (f" (lr {entry['tasks'][t]['lr']:g})" if "lr" in entry["tasks"][t] else "")
                     for c, t in zip(cells, tasks, strict=True)]  # fmt: skip
        means = [
            np.mean(entry["tasks"][t]["accuracy"]) for t in tasks if entry["tasks"][t]["accuracy"]
        ]
        avg = f"{np.mean(means):.2f}" if len(means) == len(tasks) else "–"
        lines.append(
            f"| {label} | {entry['trainable_params']:,} | " + " | ".join(cells) + f" | {avg} |"
        )
    if REFERENCE in summary and len(summary) > 2:
        lines += ["", f"Paired difference to {REFERENCE} (accuracy points, same seed), mean ± "
                  "std over the seeds both have.", ""]  # fmt: skip
        lines += ["| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
        for label in summary:
            if label not in (BASE, REFERENCE):
                diffs = [_cell(paired_differences(summary, label, t), 2) for t in tasks]
                lines.append(f"| {label} | " + " | ".join(diffs) + " |")
    lines += ["", "Best validation loss (diffusion loss per answer token), mean ± std.", ""]
    lines += ["| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for label, entry in summary.items():
        if label == "base" or not any(entry["tasks"][t]["val_loss"] for t in tasks):
            continue
        cells = [_cell(entry["tasks"][t]["val_loss"], 4) for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)  # fmt: skip


def profile_task(grid: Grid, task: str, base: tuple[Any, Any, int]) -> Path | None:
    """Noise profile of each method's first-seed adapter vs the base on the task's validation
    split; writes ``<task>/profile/profile.{json,png}`` (skipped when already there)."""
    from nara.evaluation.profile import noise_profile
    from nara.training.data import load_source

    cfg = grid.profile
    out = grid.root / task / "profile"
    adapters = {
        r.label: r.run_dir / "final"
        for r in grid.runs(lrs=select_lrs(grid))
        if r.task == task and not r.is_base and r.seed == grid.seeds[0]
        if (r.run_dir / "final" / "adapter_config.json").is_file()
    }
    done = out / "profile.json"
    if done.is_file() and set(json.loads(done.read_text())["gain"]) == set(adapters):
        return done
    model, tokenizer, mask_token_id = base
    data = grid.recipe.get("data") or {}
    records = load_source(grid.tasks[task]["source"], data.get("val_split", "validation"))
    result = noise_profile(
        model,
        tokenizer,
        records[: cfg["examples"]],
        adapters=adapters,
        mask_token_id=mask_token_id,
        bins=cfg["bins"],
        samples_per_bin=cfg["samples_per_bin"],
        seed=cfg["seed"],
        max_length=int(data.get("max_length", 512)),
    )
    json_path, _ = result.save(out, title=f"{grid.name} · {task} (seed {grid.seeds[0]})")
    (out / "profile.md").write_text(result.table() + "\n")
    return json_path


def report(grid: Grid) -> str:
    """Write ``results.md`` and ``results.json`` from the finished runs; returns the markdown."""
    summary = aggregate(grid, read_results(grid))
    table = render_table(grid, summary)
    if grid.lr_sweep:
        records, chosen = sweep_records(grid), select_lrs(grid)
        table += "\n\n" + render_sweep(grid, records, chosen)
        summary = {**summary, "lr_sweep": [{k: v for k, v in r.items() if k != "run"}
                                           for r in records]}  # fmt: skip
    profiles = [
        f"![{task}]({task}/profile/profile.png)"
        for task in grid.tasks
        if (grid.root / task / "profile" / "profile.png").is_file()
    ]
    text = f"# {grid.name}\n\n{table}\n"
    if profiles:
        text += "\nNoise profiles (loss gain over the base per λ bin):\n\n" + "\n".join(profiles)
    grid.root.mkdir(parents=True, exist_ok=True)
    (grid.root / "results.md").write_text(text + "\n")
    (grid.root / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return text


def run_grid(
    grid: Grid,
    *,
    only: list[str] | None = None,
    base: tuple[Any, Any, int] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> str:
    """Run every unfinished run of ``grid`` (or of the ``only`` methods), the profiles, the report.

    Args:
        grid: from :func:`nara.experiments.grid.load_grid`.
        only: method labels (or method names, for all their variants) to run.
        base: ``(model, tokenizer, mask_token_id)`` to use instead of loading the grid's model.
        progress: show the trainer's progress bar.
        log: where progress lines go.

    Returns:
        The markdown report.
    """
    grid.check_data(only)  # a missing data file stops the grid before the model loads
    base = base or load_base(grid)
    start = time.perf_counter()
    sweep = grid.sweep_runs(only)
    for i, run in enumerate(sweep, 1):
        where = f"[sweep {i}/{len(sweep)}] {run.task} {run.label} lr {run.lr:g} seed {run.seed}"
        if (run.run_dir / SWEEP).is_file():
            check_finished(run, grid, SWEEP)
            log(f"{where}: done, skipped")
            continue
        t0 = time.perf_counter()
        rec = train_sweep_run(run, base, progress)
        log(f"{where}: best val loss {rec['best_val_loss']}, {time.perf_counter() - t0:.1f} s")
    runs = grid.runs(only, lrs=select_lrs(grid, only))
    for i, run in enumerate(runs, 1):
        where = f"[{i}/{len(runs)}] {run.task} {run.label} seed {run.seed}"
        if (run.run_dir / METRICS).is_file():
            check_finished(run, grid)
            log(f"{where}: done, skipped")
            continue
        t0 = time.perf_counter()
        m = run_one(run, grid, base, progress)
        log(f"{where}: accuracy {m['accuracy']:.2f}, {time.perf_counter() - t0:.1f} s")
    if grid.profile["enabled"]:
        for task in dict.fromkeys(r.task for r in runs):
            log(f"profile {task}: {profile_task(grid, task, base)}")
    text = report(grid)
    log(f"grid {grid.name}: {len(runs)} runs in {time.perf_counter() - start:.1f} s")
    return text


def parameter_counts(grid: Grid, base: tuple[Any, Any, int]) -> dict[str, int]:
    """Trainable parameters of every method label on the base model (no training)."""
    from nara.adapters import add_adapters, trainable_parameters
    from nara.training.config import RecipeConfig

    counts = {}
    for run in grid.runs():
        if run.label in counts or run.task != next(iter(grid.tasks)):
            continue
        if run.is_base:
            counts[run.label] = 0
            continue
        model = add_adapters(
            _loaded_copy(base)[0], RecipeConfig.from_dict(run.recipe).adapter.build()
        )
        counts[run.label] = trainable_parameters(model).trainable
    return counts  # fmt: skip
