"""RL after SFT on the embedded arithmetic task: LoRA vs NaRA, accuracy and reward on held-out
examples before and after diffu-GRPO (or wd1), over seeds.

    OMP_NUM_THREADS=1 python benchmarks/rl_embedded.py                 # 3 seeds, test split
    OMP_NUM_THREADS=1 python benchmarks/rl_embedded.py --seeds 0 --eval-split validation \\
        --methods lora --rl-set training.lr=3e-4 --output runs/rl_pilot  # tuning: validation only
    python benchmarks/rl_embedded.py --rl-recipe configs/rl/embedded_arithmetic_wd1.yaml
    python benchmarks/rl_embedded.py --reuse --eval-split validation  # the same adapters again

For each method and seed: `nara train demo` for --sft-steps updates (fewer than the demo's 500,
so that accuracy is far from its ceiling and RL has room), the greedy accuracy and reward of that
adapter on the first --limit examples of --eval-split, `nara rl` (the --rl-recipe) from it
(adapter.init_from, so the KL reference is the SFT adapter) for its training.max_steps updates,
and the accuracy and reward again. Accuracy is nara eval's exact scorer (the whole answer
``N is the answer.``); the reward is the recipe's (correctness plus the format term) on the same
greedy generations. Writes <output>/results_<split>.json, results_<split>.md (mean ± std over
seeds) and rewards.png (sampled reward per rollout during RL, mean over seeds and its moving average). Every
run folder is replaced (training.overwrite=true); --reuse trains nothing and evaluates the
adapters a previous run left in --output on --eval-split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASK = "embedded:arithmetic"


def evaluate(adapter: Path, split: str, limit: int, reward_section: Any) -> dict[str, float]:
    """Greedy accuracy (%), mean reward and share of answers in the format (%, when the recipe
    has a format reward) of ``adapter`` on the tiny model, over the first ``limit`` records of
    ``split``, with nara eval's sampler settings and scorer."""
    from nara.adapters import load_adapters
    from nara.commands._common import make_generate_fn
    from nara.evaluation import tasks
    from nara.models import load_model
    from nara.rl.rewards import build_rewards

    model, tokenizer, mask_id = load_model("tiny")
    model = load_adapters(model, adapter).eval()
    (task,) = tasks.resolve(TASK)
    records = tasks.load_task(task, None, split=split)[:limit]
    generate = make_generate_fn(model, tokenizer, mask_id)
    outputs = []
    for i in range(0, len(records), 50):
        outputs += generate([r.prompt for r in records[i : i + 50]], task.gen_length)
    correct = [tasks.score(task, r, o)[1] for r, o in zip(records, outputs)]
    prompts = [r.prompt for r in records]
    rewards, parts = build_rewards(reward_section, task)(prompts, outputs, records)
    found = {"accuracy": 100.0 * sum(correct) / len(correct), "reward": rewards.mean().item()}
    if "format" in parts:
        found["format"] = 100.0 * parts["format"].mean().item()
    return found


def one_run(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """SFT, evaluate, RL from the SFT adapter, evaluate: one method and seed."""
    from nara.rl.config import load_rl_recipe
    from nara.rl.trainer import RLTrainer
    from nara.training.config import load_recipe
    from nara.training.metrics import read_metrics
    from nara.training.trainer import Trainer

    out = args.output / method / f"seed{seed}"
    common = [f"adapter.method={method}", f"training.seed={seed}", "training.overwrite=true"]
    start = time.perf_counter()
    sft_adapter, rl_adapter = out / "sft" / "final", out / "rl" / "final"
    if not args.reuse:
        sft = load_recipe(
            ROOT / "configs" / "demo.yaml",
            [
                *common,
                f"training.max_steps={args.sft_steps}",
                "training.eval_every=none",
                "training.save_every=none",
                f"output_dir={out / 'sft'}",
            ],
        )
        sft_adapter = Trainer(sft, show_progress=False).train().final_adapter
    sft_seconds = time.perf_counter() - start
    rl = load_rl_recipe(
        args.rl_recipe,
        [
            *common,
            f"adapter.init_from={sft_adapter}",
            "training.save_every=none",
            f"output_dir={out / 'rl'}",
            *args.rl_set,
        ],
    )
    before = evaluate(sft_adapter, args.eval_split, args.limit, rl.rewards)
    rl_start = time.perf_counter()
    if not args.reuse:
        rl_adapter = RLTrainer(rl, show_progress=False).train().final_adapter
    rl_seconds = time.perf_counter() - rl_start
    after = evaluate(rl_adapter, args.eval_split, args.limit, rl.rewards)
    rollouts = [r for r in read_metrics(out / "rl" / "metrics.jsonl") if "rollout" in r]
    row = {
        "method": method,
        "seed": seed,
        "accuracy_sft": before["accuracy"],
        "accuracy_rl": after["accuracy"],
        "reward_sft": before["reward"],
        "reward_rl": after["reward"],
        "format_sft": before.get("format"),
        "format_rl": after.get("format"),
        "rewards": [r["reward"] for r in rollouts],
        "kl": [r.get("kl") for r in rollouts],
        "sft_seconds": round(sft_seconds, 1),
        "rl_seconds": round(rl_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps({k: v for k, v in row.items() if k not in ("rewards", "kl")}), flush=True)
    return row


def mean_std(values: list[float], digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def table(rows: list[dict[str, Any]], split: str) -> str:
    """Markdown: per method, mean ± std over seeds of accuracy and reward before/after RL, and
    of the change each seed's RL made."""
    lines = [
        f"| method | seeds | {split} accuracy after SFT (%) | after RL (%) | change (points) "
        "| reward after SFT | after RL | in format after SFT / RL (%) "
        "| mean sampled reward, first / last 5 rollouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        first = mean_std([statistics.mean(r["rewards"][:5]) for r in mine], 2)
        last = mean_std([statistics.mean(r["rewards"][-5:]) for r in mine], 2)
        formats = "n/a"
        if all(r["format_sft"] is not None for r in mine):
            formats = " / ".join(
                mean_std([r[k] for r in mine], 1) for k in ("format_sft", "format_rl")
            )
        cells = [
            mean_std([r["accuracy_sft"] for r in mine], 1),
            mean_std([r["accuracy_rl"] for r in mine], 1),
            mean_std([r["accuracy_rl"] - r["accuracy_sft"] for r in mine], 1),
            mean_std([r["reward_sft"] for r in mine], 3),
            mean_std([r["reward_rl"] for r in mine], 3),
            formats,
            f"{first} / {last}",
        ]
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, window: int = 10) -> None:
    """Sampled reward per rollout, mean over seeds: each rollout (thin) and its moving average
    over ``window`` rollouts (bold), one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        curves = [r["rewards"] for r in rows if r["method"] == method]
        mean = [statistics.mean(v) for v in zip(*curves)]
        steps = range(1, len(mean) + 1)
        line = ax.plot(steps, mean, lw=0.8, alpha=0.35)[0]
        smooth = [statistics.mean(mean[max(0, i - window + 1) : i + 1]) for i in range(len(mean))]
        label = f"{method}: mean of {len(curves)} seeds, moving average of {window}"
        ax.plot(steps, smooth, lw=2.2, color=line.get_color(), label=label)
    ax.set_xlabel("rollout (2 updates each)")
    ax.set_ylabel("mean reward of the rollout's completions")
    ax.set_title("diffu-GRPO after SFT, embedded arithmetic (train prompts, sampled)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "nara"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=100, help="SFT updates (demo recipe)")
    parser.add_argument("--limit", type=int, default=200, help="examples evaluated")
    parser.add_argument(
        "--eval-split",
        default="test",
        choices=["validation", "test"],
        help="validation for tuning the RL settings, test for the reported figures",
    )
    parser.add_argument(
        "--rl-recipe", type=Path, default=ROOT / "configs" / "rl" / "embedded_arithmetic_grpo.yaml"
    )
    parser.add_argument(
        "--rl-set", nargs="*", default=[], metavar="KEY=VALUE", help="RL overrides, e.g. rl.beta=0"
    )
    parser.add_argument("--output", type=Path, default=Path("runs/rl_embedded"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="train nothing: evaluate the SFT and RL adapters already in --output on --eval-split",
    )
    args = parser.parse_args()
    rows = [one_run(m, s, args) for m in args.methods for s in args.seeds]
    args.output.mkdir(parents=True, exist_ok=True)
    recipe = args.rl_recipe.resolve()
    shown = recipe.relative_to(ROOT) if recipe.is_relative_to(ROOT) else recipe
    settings = vars(args) | {"rl_recipe": str(shown), "output": str(args.output)}
    results = {"args": settings, "rows": rows}
    name = f"results_{args.eval_split}"
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / f"{name}.md").write_text(table(rows, args.eval_split) + "\n")
    plot(rows, args.output / "rewards.png")
    print(table(rows, args.eval_split))


if __name__ == "__main__":
    main()
