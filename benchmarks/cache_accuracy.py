"""Accuracy of cached decoding: trained LoRA and NaRA adapters, cache × threshold, over seeds.

    python benchmarks/cache_accuracy.py          # tiny: about 6 min of CPU time (1 thread)
    python benchmarks/cache_accuracy.py --model build/tiny-v2/model --json /tmp/acc.json
    python benchmarks/cache_accuracy.py --steps 20 --limit 16 --seeds 0   # a smoke test

For every method and seed, the `demo` recipe (configs/demo.yaml; --set overrides it) trains an
adapter on the embedded task's train split with ``training.seed`` = the seed, then the test split
is decoded greedily with every cache (none, prefix, dual) × threshold (none = one token per step,
or 0.9) setting: ``--gen-length`` answer positions in blocks of ``--block-length``, EOS stopping
on, batches of ``--batch-size`` left-padded prompts. The table gives exact-match accuracy (mean
± sample std over seeds), its change from uncached decoding at the same threshold (paired by
seed), the share of examples whose generated text is the one uncached decoding gives (same
adapter and threshold: the direct measure of what the cache changes), and decoding speed: answer
positions per second of generation (EOS stopping included, scoring excluded), mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nara.benchmarking.timing import machine_info

CACHES = (None, "prefix", "dual")


def _threshold(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _cache(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _label(value: object) -> str:
    return "none" if value is None else str(value)


def train_adapter(args: argparse.Namespace, method: str, seed: int, root: Path) -> Any:
    """Train the demo recipe's ``method`` adapter with ``seed``; the Trainer (model inside)."""
    from nara.commands.demo import _method_config
    from nara.training.trainer import Trainer

    recipe = Path(__file__).parents[1] / "configs" / "demo.yaml"
    overrides = [
        f"model.name={args.model}",
        f"data.source=embedded:{args.task}",
        f"training.max_steps={args.steps}",
        f"training.seed={seed}",
        f"training.eval_every={args.steps}",
        f"training.save_every={args.steps}",
        *args.set,
    ]
    config = _method_config(recipe, method, root / f"seed{seed}", overrides, overwrite=True)
    trainer = Trainer(config, show_progress=False)
    trainer.train()
    return trainer


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    mask_token_id: int,
    args: argparse.Namespace,
    cache: str | None,
    threshold: float | None,
    out: Path,
) -> dict[str, float]:
    """Accuracy (%) on the test split, answer positions per second of generation, and the
    generated text of every example (by id)."""
    from nara.evaluation.runner import GenerationSettings, make_generate_fn, run_eval

    settings = GenerationSettings(
        gen_length=args.gen_length,
        block_length=args.block_length,
        threshold=threshold,
        cache=cache,
    )
    generate = make_generate_fn(model, tokenizer, mask_token_id=mask_token_id, settings=settings)
    seconds = [0.0]

    def timed(prompts: list[str], gen_length: int) -> list[str]:
        start = time.perf_counter()
        texts = generate(prompts, gen_length)
        seconds[0] += time.perf_counter() - start
        return texts

    result = run_eval(
        None,
        None,
        f"embedded:{args.task}",
        output_dir=out,
        limit=args.limit,
        batch_size=args.batch_size,
        generate_fn=timed,
        progress=False,
        print_table=False,
        identity={"cache": _label(cache), "threshold": _label(threshold)},
        overwrite=True,
    )
    lines = (out / f"embedded:{args.task}.jsonl").read_text().splitlines()
    return {
        "accuracy": float(result["average"]),
        "tokens_per_s": args.limit * args.gen_length / seconds[0],
        "seconds": seconds[0],
        "generations": {r["id"]: r["generation"] for r in map(json.loads, lines)},
    }


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def table(rows: list[dict[str, Any]], thresholds: list[float | None]) -> str:
    """Markdown: per method, threshold and cache, accuracy and its paired change, tokens/s."""
    lines = [
        "| method | threshold | cache | accuracy (%) | Δ vs none (points) | same answer (%) "
        "| tokens/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        for threshold in thresholds:
            cell = [r for r in rows if r["method"] == method and r["threshold"] == threshold]
            plain = {r["seed"]: r["accuracy"] for r in cell if r["cache"] is None}
            for cache in CACHES:
                got = [r for r in cell if r["cache"] == cache]
                if not got:
                    continue
                acc = [r["accuracy"] for r in got]
                delta = [r["accuracy"] - plain[r["seed"]] for r in got if r["seed"] in plain]
                same = [r["same_as_uncached"] for r in got if r["same_as_uncached"] is not None]
                speed = statistics.fmean(r["tokens_per_s"] for r in got)
                lines.append(
                    f"| {method} | {_label(threshold)} | {_label(cache)} | {_mean_std(acc)} | "
                    f"{_mean_std(delta) if delta else '-'} | {_mean_std(same) if same else '-'} "
                    f"| {speed:.1f} |"
                )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a LLaDA folder")
    parser.add_argument("--task", default="arithmetic", help="embedded task")
    parser.add_argument("--methods", nargs="+", default=["lora", "nara"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150, help="adapter training updates")
    parser.add_argument("--limit", type=int, default=64, help="test examples")
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--block-length", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--caches", nargs="+", type=_cache, default=list(CACHES), help="none prefix dual"
    )
    parser.add_argument("--thresholds", nargs="+", type=_threshold, default=[None, 0.9])
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", help="folder for adapters and predictions (default: a temp)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows here")
    args = parser.parse_args()
    unknown = [c for c in args.caches if c not in CACHES]
    if unknown:
        parser.error(f"--caches takes none, prefix, dual; got {unknown}")
    torch.set_num_threads(args.threads)
    machine = machine_info(torch.device("cpu"))
    print(json.dumps(machine), flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.output or tmp)
        for seed in args.seeds:
            for method in args.methods:
                start = time.perf_counter()
                trainer = train_adapter(args, method, seed, root / method)
                model = trainer.accelerator.unwrap_model(trainer.model).eval()
                trained = time.perf_counter() - start
                for threshold in args.thresholds:
                    uncached = None
                    for cache in args.caches:
                        out = root / method / f"seed{seed}" / f"eval-{cache}-{threshold}"
                        result = evaluate(
                            model, trainer.tokenizer, trainer.mask_token_id, args, cache,
                            threshold, out,
                        )  # fmt: skip
                        texts = result.pop("generations")
                        uncached = texts if cache is None else uncached
                        same = None if cache is None or uncached is None else 100 * statistics.fmean(
                            texts[i] == uncached[i] for i in texts
                        )  # fmt: skip
                        row = {"method": method, "seed": seed, "threshold": threshold,
                               "cache": cache, **result, "same_as_uncached": same,
                               "train_seconds": round(trained, 1)}  # fmt: skip
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    print(table(rows, args.thresholds))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "output")}
        Path(args.json).write_text(
            json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
