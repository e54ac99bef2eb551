"""The benchmark's targets (issue 6) and its tables, printed as Markdown."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """A goal on one figure of the results: ``value(section result) op limit``."""

    label: str
    section: str
    value: Callable[[dict[str, Any]], float]
    op: str  # "<=" or ">="
    limit: float
    sizes: tuple[str, ...] | None = None  # None: every size measured


TARGETS = (
    Target("NaRA step / floor", "training", lambda r: r["variants"]["NaRA"]["vs_floor"], "<=", 1.10),
    Target("nara LoRA step / PEFT LoRA", "training", lambda r: r["variants"]["nara LoRA"]["vs_peft_lora"], "<=", 1.00),
    Target("NaRA step / nara LoRA", "training", lambda r: r["variants"]["NaRA"]["vs_nara_lora"], "<=", 1.03),
    Target("NaRA sampling / LoRA unmerged", "sampling", lambda r: r["variants"]["NaRA"]["vs_lora_unmerged"], "<=", 1.05),
    Target("NaRA batched / one at a time (samples/s)", "batching", lambda r: r["speedup"], ">=", 4.0),
    Target("NaRA params over LoRA, % of base", "parameters", lambda r: r["nara_over_lora_percent_of_base"], "<=", 0.01, ("8b",)),
)  # fmt: skip

_OPS = {"<=": operator.le, ">=": operator.ge}


TIMED_SECTIONS = ("training", "batching", "sampling")  # what a --quick run cannot judge


def evaluate_targets(results: dict[str, Any], *, quick: bool = False) -> list[dict[str, Any]]:
    """One row per target and measured size: value, limit and whether it passes. A ``quick``
    run (small shapes, two rounds: a smoke test) judges only the targets that are no timing."""
    rows = []
    for target in TARGETS:
        if quick and target.section in TIMED_SECTIONS:
            continue
        for size, result in results.get(target.section, {}).items():
            if target.sizes is not None and size not in target.sizes:
                continue
            try:
                value = target.value(result)
            except KeyError:  # a variant left out with --methods
                continue
            passed = _OPS[target.op](value, target.limit)
            rows.append(
                {
                    "target": target.label,
                    "size": size,
                    "value": value,
                    "limit": f"{target.op} {target.limit:g}",
                    "pass": bool(passed),
                }
            )
    return rows


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _shape(r: dict[str, Any]) -> str:
    return (
        f"d_model {r['d_model']}, {r['n_layers']} layers, MLP {r['mlp_hidden_size']}, vocab "
        f"{r['vocab_size']}, {r['parameters'] / 1e6:.1f} M parameters ({r['model']})"
    )


def training_table(size: str, r: dict[str, Any]) -> str:
    head = (
        f"### Training step, {size}: {_shape(r)}; batch {r['batch']} × seq {r['seq']}, "
        f"r = {r['rank']} on {'/'.join(r['targets'])}, dropout {r['dropout']}"
    )
    rows = [
        [
            name,
            f"{1000 * v['median_s']:.1f}",
            f"{v['tokens_per_s']:.0f}",
            f"{v['peak_mb']:.0f}",
            _ratio(v.get("vs_floor")),
            _ratio(v.get("vs_nara_lora")),
            _ratio(v.get("vs_peft_lora")),
        ]
        for name, v in r["variants"].items()
    ]
    header = ["variant", "ms/step", "tokens/s", "peak MB", "× floor", "× nara LoRA", "× PEFT LoRA"]
    return head + "\n\n" + _table(header, rows)


def batching_table(results: dict[str, Any]) -> str:
    rows = [
        [
            size,
            r["batch"],
            f"{r['batched_samples_per_s']:.2f}",
            f"{r['single_samples_per_s']:.2f}",
            f"{r['speedup']:.2f}",
        ]
        for size, r in results.items()
    ]
    header = ["size", "batch", "batched samples/s", "one-at-a-time samples/s", "speedup"]
    return "### NaRA: one batch vs one sample at a time (same samples, one optimizer step)\n\n" + (
        _table(header, rows)
    )


def sampling_table(size: str, r: dict[str, Any]) -> str:
    head = (
        f"### Sampling, {size}: {_shape(r)}; batch {r['batch']}, prompt {r['prompt_length']}, "
        f"{r['gen_length']} tokens in {r['steps']} steps"
    )
    rows = [
        [name, f"{v['median_s']:.3f}", f"{v['ms_per_step']:.2f}", _ratio(v["vs_lora_unmerged"])]
        for name, v in r["variants"].items()
    ]
    table = _table(["variant", "s/generate", "ms/step", "× LoRA unmerged"], rows)
    share = 100 * r["conditioner_share_of_nara_step"]
    return (
        f"{head}\n\n{table}\n\nC(λ) (NoiseHub.compute, once per step): "
        f"{r['conditioner_us_per_step']:.0f} µs = {share:.2f} % of a NaRA step"
    )


def parameters_table(results: dict[str, Any]) -> str:
    sizes = list(results)
    methods = list(next(iter(results.values()))["methods"])
    rows = [
        [name]
        + [
            f"{results[s]['methods'][name]['trainable']:,} "
            f"({results[s]['methods'][name]['percent_of_base']:.3f} %)"
            for s in sizes
        ]
        for name in methods
    ]
    rows.append(["base model"] + [f"{results[s]['base_parameters']:,}" for s in sizes])
    rows.append(
        ["NaRA over LoRA"]
        + [
            f"{results[s]['nara_over_lora']:,} "
            f"({results[s]['nara_over_lora_percent_of_base']:.4f} % of base)"
            for s in sizes
        ]
    )
    rank = next(iter(results.values()))["rank"]
    header = [f"trainable (r = {rank})"] + [
        f"{s} (d {results[s]['d_model']}, {results[s]['n_layers']} layers)" for s in sizes
    ]
    return "### Parameters\n\n" + _table(header, rows)


def targets_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [r["target"], r["size"], f"{r['value']:.4g}", r["limit"], "PASS" if r["pass"] else "MISS"]
        for r in rows
    ]
    return "### Targets\n\n" + _table(["target", "size", "value", "limit", "result"], body)


def markdown(results: dict[str, Any]) -> str:
    """Every table of ``results`` (the JSON of a run), in Markdown."""
    parts = []
    for size, r in results.get("training", {}).items():
        parts.append(training_table(size, r))
    if results.get("batching"):
        parts.append(batching_table(results["batching"]))
    for size, r in results.get("sampling", {}).items():
        parts.append(sampling_table(size, r))
    if results.get("parameters"):
        parts.append(parameters_table(results["parameters"]))
    if results.get("memory"):
        from nara.benchmarking.memory import memory_table

        parts.append(memory_table(results["memory"]))
    if results.get("targets"):
        parts.append(targets_table(results["targets"]))
    return "\n\n".join(parts)
