"""The benchmark run: options, the sections in order, the JSON and the printed tables.

Shared by ``nara bench`` and the scripts in ``benchmarks/`` (which fix ``--only``).
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from nara.benchmarking.memory import memory_suite
from nara.benchmarking.options import BenchOptions, add_arguments, options_from_args
from nara.benchmarking.params import parameter_suite
from nara.benchmarking.report import evaluate_targets, markdown
from nara.benchmarking.sampling import sampling_suite
from nara.benchmarking.timing import load_average, machine_info
from nara.benchmarking.training import batching_suite, training_suite

SUITES = {
    "training": training_suite,
    "batching": batching_suite,
    "sampling": sampling_suite,
    "parameters": parameter_suite,
    "memory": memory_suite,
}


def run_benchmarks(
    options: BenchOptions, command: str = "", json_path: str | Path | None = None
) -> dict[str, Any]:
    """Run the chosen sections, each on each size; returns the JSON-ready results with targets.

    With ``json_path``, the results so far are written after every section and size, so a long
    run that is stopped still leaves what it measured.
    """
    torch.set_num_threads(options.threads)
    results: dict[str, Any] = {
        "meta": {
            "command": command,
            "machine": machine_info(torch.device(options.device)),
            "load_average_start": load_average(),
            "options": asdict(options),
        }
    }
    for section in options.sections:
        sizes = [s for s in options.sizes if s != "8b"]
        if section in ("parameters", "memory"):
            sizes = [*sizes, "8b"]
        if section == "memory":  # measured on one scaled model (at "mid"), analytic at 8b
            sizes = [s for s in sizes if s != "tiny"]
        results[section] = {}
        for size in sizes:
            print(f"[nara bench] {section}, {size} ...", file=sys.stderr, flush=True)
            results[section][size] = SUITES[section](size, options)
            gc.collect()  # the section's models hold reference cycles (hub, groups)
            results["meta"]["load_average_end"] = load_average()
            results["targets"] = evaluate_targets(results, quick=options.quick)
            if json_path is not None:
                write_json(results, json_path)
    return results


def write_json(results: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


SMOKE_TEST = (
    "--quick is a smoke test: small shapes and two rounds check that every benchmark runs; its "
    "timings cannot judge the speed targets, so those are left out (run `nara bench` for them)."
)


def run_and_report(args: argparse.Namespace, command: str) -> int:
    """Run, print the tables and write the JSON; returns the exit status (0)."""
    options = options_from_args(args)
    if options.quick:
        print(SMOKE_TEST, file=sys.stderr, flush=True)
    results = run_benchmarks(options, command, args.json)
    meta = results["meta"]
    m = meta["machine"]
    if options.quick:
        print(f"{SMOKE_TEST}\n")
    print(
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, peft {m['peft']}, {m['date']}; load average "
        f"{meta['load_average_start']} → {meta['load_average_end']}\n"
    )
    print(markdown(results))
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


def main(argv: list[str] | None = None, only: str | None = None) -> int:
    """Entry point of the ``benchmarks/*.py`` scripts: ``only`` names the script's section."""
    doc = sys.modules["__main__"].__doc__ or "nara benchmark"
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, only=only)
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", sys.argv[0], *argv])
    return run_and_report(parser.parse_args(argv), command)
