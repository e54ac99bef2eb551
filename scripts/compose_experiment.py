"""LoRA-Diffusion composition (issue 8): two tasks' trajectory modules, composed by a router.

    python scripts/compose_experiment.py                          # commonsense + programs, seeds 0 1
    python scripts/compose_experiment.py recipe.training.max_steps=2 evaluation.limit=4 --seeds 0 \\
        --output /tmp/compose_smoke                               # smoke test
    python scripts/compose_experiment.py --report                 # table from finished parts only

The default tasks are the two where this budget learns something on the tiny model (on
arithmetic a trajectory module stays at the base's ~2%, so interference there is unmeasurable).
Per seed, every part trained and scored with the per-run budget of the methods grid (its
``recipe`` and ``evaluation`` sections and its ``trajectory`` and ``lora`` methods, read from
configs/experiments/methods.yaml; trailing KEY=VALUE overrides go to that grid):

- ``module_<task>``: a trajectory module trained on one task (the methods grid's run);
- ``uniform``: both modules composed (``compose_trajectories``), the router untrained, i.e. each
  module's perturbation at weight 1/2 on every prompt — no training;
- ``router``: the same composition with its router trained on the mix of the tasks' training
  data (``data.source = embedded:a+embedded:b``) while the modules stay frozen;
- ``router_lr``: the same at learning rate ``--router-lr`` (only when given): the router reads
  the mean token embedding of the prompt, whose norm is small on the tiny model (~0.1), so at the
  recipe's learning rate its 120 steps can barely move the softmax away from uniform;
- ``lora_mix``: one LoRA trained on the same mix, rank ``--lora-rank`` (default 16: about the two
  modules' parameters together), for as many steps as the modules together (so it sees as many
  examples of each task as each module did).

Each part, and the base, is scored on the test split of every task (greedy decoding, as the
grid) and by its diffusion loss on the task's validation split (the first ``val_max_examples``
records) at fixed noise levels t ∈ {0.1, 0.3, 0.5, 0.7, 0.9} with the same masks for every
part, so losses are paired: interference shows there even when accuracy sits at the floor.
The router's mean softmax weight per module on each task's test prompts tells whether it routes. Everything
goes to ``<output>/seed<S>/<part>/`` (trainer files, ``final/`` adapter, ``on_<task>/eval/``
predictions and ``scores.json``, written last); re-running resumes. ``<output>/results.md`` and ``results.json``
hold the table: accuracy (%) per task, mean ± std over seeds (sample std).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = REPO / "configs" / "experiments" / "methods.yaml"
DEFAULT_TASKS = ("commonsense", "programs")
PROMPT_BATCH = 64
LOSS_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # noise times t of the paired validation loss
LOSS_BATCH = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of --config")
    p.add_argument("--config", type=Path, default=METHODS, help="grid whose budget to use")
    p.add_argument("--tasks", nargs=2, default=list(DEFAULT_TASKS), help="the two tasks")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--lora-rank", type=int, default=16, help="rank of the LoRA on the mix")
    p.add_argument("--router-lr", type=float, help="also train the router at this learning rate")
    p.add_argument("--output", type=Path, default=REPO / "results" / "compose")
    p.add_argument("--report", action="store_true", help="only rebuild results.md and exit")
    return p.parse_args(argv)


def load_setup(args: argparse.Namespace) -> Any:
    """The grid holding the budget, with the two tasks and the seeds of this experiment."""
    from nara.experiments.grid import load_grid

    pinned = [f"tasks=[{','.join(args.tasks)}]", f"seeds=[{','.join(map(str, args.seeds))}]"]
    grid = load_grid(args.config, [*args.overrides, *pinned])
    for label in ("trajectory", "lora"):
        if label not in grid.methods:
            raise ValueError(f"{args.config} has no '{label}' method; the experiment needs both")
    return grid


def part_recipes(
    grid: Any, seed: int, seed_dir: Path, lora_rank: int, router_lr: float | None = None
) -> dict[str, dict]:
    """The ``nara train`` recipe of every trained part of one seed, in training order."""
    tasks = list(grid.tasks)
    mix = {"source": "+".join(grid.tasks[t]["source"] for t in tasks), "recipe": {}}
    recipes = {
        f"module_{t}": grid.run_recipe(
            grid.methods["trajectory"], grid.tasks[t], seed, seed_dir / f"module_{t}"
        )
        for t in tasks
    }
    sources = [str(seed_dir / f"module_{t}" / "final") for t in tasks]
    router = {"method": "trajectory_router", "sources": sources}
    recipes["router"] = grid.run_recipe(router, mix, seed, seed_dir / "router")
    if router_lr is not None:
        recipes["router_lr"] = grid.run_recipe(router, mix, seed, seed_dir / "router_lr")
        recipes["router_lr"]["training"]["lr"] = router_lr
    lora = dict(grid.methods["lora"])
    shared_alpha = (grid.recipe.get("adapter") or {}).get("alpha", 16)
    scale = lora.get("alpha", shared_alpha) / lora.get("r", 8)  # keep LoRA's s = alpha / r
    lora.update(r=lora_rank, alpha=scale * lora_rank)
    recipe = grid.run_recipe(lora, mix, seed, seed_dir / "lora_mix")
    training = recipe["training"]
    for key in ("max_steps", "eval_every", "save_every"):
        if training.get(key):
            training[key] *= len(tasks)  # as many steps as the modules together
    recipes["lora_mix"] = recipe
    return recipes


def router_weights(model: Any, tokenizer: Any, prompts: list[str]) -> np.ndarray:
    """Mean softmax weight per composed module over ``prompts``, (M,), read from the router
    after a forward with the prompts' positions as the routing context."""
    import torch

    from nara.adapters import noise_level
    from nara.adapters.noise import find_hub
    from nara.adapters.trajectory import route_context
    from nara.data.collate import encode_prompt

    router = find_hub(model).conditioners["router"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    weights = []
    for start in range(0, len(prompts), PROMPT_BATCH):
        encoded = [encode_prompt(tokenizer, p) for p in prompts[start : start + PROMPT_BATCH]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)  # (B, P), left-padded
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = True
        with torch.no_grad(), noise_level(model, 1.0), route_context(model, mask):
            model(ids, attention_mask=mask.long())
            weights.append(router(None, None))  # (B, M), from this forward's prompt features
    return torch.cat(weights).mean(0).numpy()


def task_loss(
    model: Any, tokenizer: Any, mask_token_id: int, records: list, max_length: int
) -> float:
    """Mean diffusion loss per answer token of ``records`` over the noise times ``LOSS_LEVELS``,
    masks drawn from fixed seeds (batch, level): every model sees the same masked inputs."""
    import torch

    from nara.data.collate import Collator, encode_records
    from nara.diffusion import diffusion_loss

    encoded = encode_records(tokenizer, records, max_length=max_length)
    collate = Collator(tokenizer.eos_token_id)
    losses = []
    for start in range(0, len(encoded), LOSS_BATCH):
        batch = collate(encoded[start : start + LOSS_BATCH])
        size = batch["input_ids"].shape[0]
        for k, t in enumerate(LOSS_LEVELS):
            with torch.no_grad():
                out = diffusion_loss(
                    model,
                    batch["input_ids"],
                    batch["maskable"],
                    mask_token_id,
                    attention_mask=batch["attention_mask"],
                    t=torch.full((size,), t),
                    generator=torch.Generator().manual_seed(start * len(LOSS_LEVELS) + k),
                )
            losses.append(float(out.loss) * size)
    return sum(losses) / (len(encoded) * len(LOSS_LEVELS))


class Experiment:
    """The parts of one seed: trained (or loaded) once, then scored on every task."""

    def __init__(self, grid: Any, base: Any, seed: int, args: argparse.Namespace) -> None:
        self.grid, self.base, self.seed = grid, base, seed
        self.dir = args.output / f"seed{seed}"
        self.recipes = part_recipes(grid, seed, self.dir, args.lora_rank, args.router_lr)
        self.base_params = sum(p.numel() for p in base[0].parameters())

    def model(self, part: str) -> tuple[Any, float]:
        """The part's adapted model and its training seconds (0 when loaded or untrained)."""
        from nara.adapters.trajectory import compose_trajectories
        from nara.experiments.grid import RunSpec
        from nara.experiments.runner import _loaded_copy, _train

        if part == "base":
            return self.base[0], 0.0
        if part == "uniform":
            sources = self.recipes["router"]["adapter"]["sources"]
            return compose_trajectories(_loaded_copy(self.base)[0], sources), 0.0
        run = RunSpec("mix", part, self.seed, self.dir / part, self.recipes[part])
        model, facts = _train(run, self.base, progress=False)
        return model, facts["train_seconds"]

    def score(self, part: str, log: Any = print) -> dict[str, Any]:
        """Accuracy of the part on every task's test split, its validation loss per task, its
        parameters and, for a composition, the router's mean weights per task (cached)."""
        out = self.dir / part / "scores.json"
        if out.is_file():
            return json.loads(out.read_text())
        model, train_seconds = self.model(part)
        model.eval()
        result = self._accuracy(part, model, train_seconds, log)
        result["val_loss"] = self._val_loss(part, model, log)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def _val_loss(self, part: str, model: Any, log: Any) -> dict[str, float]:
        from nara.training.data import load_source

        tokenizer, mask_id = self.base[1], self.base[2]
        data = self.grid.recipe.get("data") or {}
        losses = {}
        for task, spec in self.grid.tasks.items():
            records = load_source(spec["source"], data.get("val_split", "validation"))
            records = records[: data.get("val_max_examples") or len(records)]
            loss = task_loss(model, tokenizer, mask_id, records, int(data.get("max_length", 512)))
            losses[task] = loss
            log(f"seed {self.seed} {part} validation loss on {task}: {loss:.4f}")
        return losses

    def _accuracy(self, part: str, model: Any, train_seconds: float, log: Any) -> dict[str, Any]:
        from nara.adapters import trainable_parameters
        from nara.experiments.grid import RunSpec
        from nara.experiments.runner import _evaluate
        from nara.training.data import load_source

        tokenizer, mask_id = self.base[1], self.base[2]
        trained = part not in ("base", "uniform")
        result: dict[str, Any] = {
            "part": part,
            "seed": self.seed,
            "trainable_params": trainable_parameters(model).trainable if trained else 0,
            "adapter_params": trainable_parameters(model).total - self.base_params,
            "train_seconds": train_seconds,
            "accuracy": {},
            "router_weights": {},
        }
        for task, spec in self.grid.tasks.items():
            where = self.dir / part / f"on_{task}"
            run = RunSpec(task, part, self.seed, where, None)
            t0 = time.perf_counter()
            summary = _evaluate(model, tokenizer, mask_id, run, self.grid)
            result["accuracy"][task] = summary["score"]
            log(f"seed {self.seed} {part} on {task}: {summary['score']:.2f} "
                f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
            if part in ("uniform", "router", "router_lr"):
                records = load_source(spec["source"], "test")  # the records scored above
                prompts = [r["prompt"] if isinstance(r, dict) else r.prompt for r in records]
                limit = self.grid.evaluation["limit"]
                weights = router_weights(model, tokenizer, prompts[:limit])
                result["router_weights"][task] = [round(float(w), 4) for w in weights]
        return result


PARTS_LABELS = {
    "base": "base model (no adapter)",
    "uniform": "composed, router untrained (uniform 1/2 each)",
    "router": "composed + router trained on the mix",
    "router_lr": "composed + router trained on the mix, lr {router_lr:g}",
    "lora_mix": "LoRA r{rank} trained on the mix",
}


def render(rows: list[dict[str, Any]], tasks: list[str], seeds: list[int], names: dict) -> str:
    """Markdown: accuracy (%) and validation loss per task, mean ± std over seeds, and the
    router's weights."""
    parts = list(dict.fromkeys(r["part"] for r in rows))
    done = sorted({r["seed"] for r in rows})
    lines = [
        f"Test accuracy (%), mean ± std over seeds {', '.join(map(str, done))} "
        f"(planned: {', '.join(map(str, seeds))}); greedy decoding, same budget per trained "
        "part as configs/experiments/methods.yaml.",
        "",
        "| part | trained params | adapter params | " + " | ".join(tasks) + " | avg |",
        "|---|---:|---:|" + "---:|" * (len(tasks) + 1),
    ]
    for part in parts:
        mine = [r for r in rows if r["part"] == part]
        accs = {t: [r["accuracy"][t] for r in mine] for t in tasks}
        cells = [_cell(accs[t]) for t in tasks]
        avg = _cell([float(np.mean([r["accuracy"][t] for t in tasks])) for r in mine])
        label = _label(part, names)
        lines.append(
            f"| {label} | {mine[0]['trainable_params']:,} | {mine[0]['adapter_params']:,} | "
            + " | ".join(cells)
            + f" | {avg} |"
        )
    lossy = [r for r in rows if r.get("val_loss")]
    if lossy:
        levels = ", ".join(f"{t:g}" for t in LOSS_LEVELS)
        lines += [
            "",
            f"Validation diffusion loss per answer token (same masks for every part at t ∈ "
            f"{{{levels}}}; lower is better), mean ± std over seeds.",
            "",
            "| part | " + " | ".join(tasks) + " |",
            "|---|" + "---:|" * len(tasks),
        ]
        for part in dict.fromkeys(r["part"] for r in lossy):
            mine = [r for r in lossy if r["part"] == part]
            cells = [_cell([r["val_loss"][t] for r in mine], 4) for t in tasks]
            lines.append(f"| {_label(part, names)} | " + " | ".join(cells) + " |")
    routed = [r for r in rows if r["router_weights"]]
    if routed:
        lines += [
            "",
            "Router: mean softmax weight on each module over each task's test prompts "
            "(mean over seeds).",
            "",
            "| part | prompts of | " + " | ".join(f"w(module_{t})" for t in tasks) + " |",
            "|---|---|" + "---:|" * len(tasks),
        ]
        for part in dict.fromkeys(r["part"] for r in routed):
            mine = [r for r in routed if r["part"] == part]
            for task in tasks:
                w = np.mean([r["router_weights"][task] for r in mine], axis=0)
                lines.append(
                    f"| {_label(part, names)} | {task} | "
                    + " | ".join(f"{x:.3f}" for x in w)
                    + " |"
                )
    return "\n".join(lines)


def _label(part: str, names: dict) -> str:
    """Table label of a part; ``names`` fills its settings (rank, router_lr)."""
    if part.startswith("module_"):
        return f"trajectory module trained on {part[len('module_') :]} only"
    return PARTS_LABELS[part].format(**names)


def _cell(values: list[float], digits: int = 2) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "–"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def parts(tasks: list[str]) -> list[str]:
    """Every part, in training and table order."""
    return ["base", *(f"module_{t}" for t in tasks), "uniform", "router", "router_lr", "lora_mix"]


def write_report(output: Path, tasks: list[str], args: argparse.Namespace) -> str:
    """Write ``results.md`` and ``results.json`` from the scored parts; returns the markdown."""
    rows = [json.loads(p.read_text()) for p in sorted(output.glob("seed*/*/scores.json"))]
    rows.sort(key=lambda r: (parts(tasks).index(r["part"]), r["seed"]))
    names = {"rank": args.lora_rank, "router_lr": args.router_lr}
    text = "# LoRA-Diffusion composition\n\n" + render(rows, tasks, args.seeds, names) + "\n"
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(text)
    (output / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    grid = load_setup(args)
    tasks = list(grid.tasks)
    if not args.report:
        from nara.experiments.runner import load_base

        base = load_base(grid)
        for seed in args.seeds:
            experiment = Experiment(grid, base, seed, args)
            for part in parts(tasks):
                if part in ("base", "uniform") or part in experiment.recipes:
                    experiment.score(part)
            write_report(args.output, tasks, args)  # a seed at a time
    print(write_report(args.output, tasks, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
