"""RL after SFT on the embedded arithmetic task: LoRA vs NaRA, test accuracy and reward before
and after diffu-GRPO (or wd1), over seeds.

    python benchmarks/rl_embedded.py                                   # 3 seeds, the defaults
    python benchmarks/rl_embedded.py --seeds 0 --sft-steps 60 --rl-steps 20 --limit 50
    python benchmarks/rl_embedded.py --rl-recipe configs/rl/embedded_arithmetic_wd1.yaml
    python benchmarks/rl_embedded.py --rl-set rl.beta=0     # no KL to the pre-SFT base

For each method and seed: `nara train demo` for --sft-steps updates, greedy test accuracy of
that adapter (nara eval's exact scorer, the first --limit test problems), `nara rl` from it
(adapter.init_from) for --rl-steps updates, and the accuracy again. The reward before/after is
the mean reward of the first and the last rollout (sampled at the recipe's temperature).
Writes <output>/results.json, results.md (mean ± std over seeds) and rewards.png (reward per
rollout, mean over seeds). Every run folder is replaced (training.overwrite=true).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def accuracy(adapter: Path, limit: int, output: Path) -> float:
    """Greedy test accuracy (%) of ``adapter`` on the tiny model, nara eval's way."""
    from nara.adapters import load_adapters
    from nara.commands._common import make_generate_fn
    from nara.evaluation.runner import run_eval
    from nara.models import load_model
    from nara.runs import adapter_identity

    model, tokenizer, mask_id = load_model("tiny")
    model = load_adapters(model, adapter).eval()
    result = run_eval(
        None,
        None,
        "embedded:arithmetic",
        output_dir=output,
        limit=limit,
        batch_size=32,
        generate_fn=make_generate_fn(model, tokenizer, mask_id),
        progress=False,
        print_table=False,
        identity={"adapter": adapter_identity(adapter)},
        overwrite=True,
    )
    return result["average"]


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
    sft = load_recipe(
        ROOT / "configs" / "demo.yaml",
        [*common, f"training.max_steps={args.sft_steps}", f"output_dir={out / 'sft'}"],
    )
    sft_adapter = Trainer(sft, show_progress=False).train().final_adapter
    before = accuracy(sft_adapter, args.limit, out / "eval_sft")
    rl = load_rl_recipe(
        args.rl_recipe,
        [
            *common,
            f"adapter.init_from={sft_adapter}",
            f"training.max_steps={args.rl_steps}",
            "training.save_every=none",
            f"output_dir={out / 'rl'}",
            *args.rl_set,
        ],
    )
    rl_adapter = RLTrainer(rl, show_progress=False).train().final_adapter
    after = accuracy(rl_adapter, args.limit, out / "eval_rl")
    rewards = [r["reward"] for r in read_metrics(out / "rl" / "metrics.jsonl") if "rollout" in r]
    row = {
        "method": method,
        "seed": seed,
        "accuracy_sft": before,
        "accuracy_rl": after,
        "reward_first": rewards[0],
        "reward_last": rewards[-1],
        "rewards": rewards,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps({k: v for k, v in row.items() if k != "rewards"}), flush=True)
    return row


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per method, mean ± std over seeds of accuracy and reward before/after."""
    keys = ("accuracy_sft", "accuracy_rl", "reward_first", "reward_last")
    lines = [
        "| method | seeds | accuracy after SFT (%) | accuracy after RL (%) "
        "| reward, first rollout | reward, last rollout |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        cells = [mean_std([r[k] for r in mine]) for k in keys]
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Reward per rollout, mean over seeds, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        curves = [r["rewards"] for r in rows if r["method"] == method]
        mean = [statistics.mean(step) for step in zip(*curves)]
        ax.plot(range(1, len(mean) + 1), mean, "o-", label=method)
    ax.set_xlabel("rollout")
    ax.set_ylabel("mean reward")
    ax.set_title("RL after SFT, embedded arithmetic")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "nara"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=150, help="SFT updates (demo recipe)")
    parser.add_argument("--rl-steps", type=int, default=40, help="RL updates (a multiple of μ)")
    parser.add_argument("--limit", type=int, default=200, help="test problems evaluated")
    parser.add_argument(
        "--rl-recipe", type=Path, default=ROOT / "configs" / "rl" / "embedded_arithmetic_grpo.yaml"
    )
    parser.add_argument(
        "--rl-set", nargs="*", default=[], metavar="KEY=VALUE", help="RL overrides, e.g. rl.beta=0"
    )
    parser.add_argument("--output", type=Path, default=Path("runs/rl_embedded"))
    args = parser.parse_args()
    rows = [one_run(m, s, args) for m in args.methods for s in args.seeds]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps({"args": vars(args) | {"rl_recipe": str(args.rl_recipe), "output": str(args.output)}, "rows": rows}, indent=2) + "\n")  # fmt: skip
    (args.output / "results.md").write_text(table(rows) + "\n")
    plot(rows, args.output / "rewards.png")
    print(table(rows))


if __name__ == "__main__":
    main()
