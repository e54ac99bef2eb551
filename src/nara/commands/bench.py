"""Measure adapter speed, memory and parameters against PEFT's LoRA and the frozen model's floor.

Runs, in one process and interleaved (round-robin over variants, medians of several rounds after
a warm-up): the training step of every method on the embedded tiny model and a mid-size random
LLaDA; NaRA batched vs one sample at a time; sampling time; parameter counts up to LLaDA-8B.
Prints Markdown tables with PASS/MISS against the targets and writes the results as JSON. Peak
memory is the tensor memory a step allocates above what was live before it (CPU: torch.profiler
memory events; CUDA: torch.cuda.max_memory_allocated), in a separate untimed pass.
"""

from __future__ import annotations

import argparse
import shlex
import sys

EXAMPLES = """examples:
  nara bench                                  # everything, tens of minutes on 2 CPU cores
  nara bench --quick --json /tmp/bench.json   # a smoke test in seconds
  nara bench --only training --sizes mid --reps 7 --json runs/bench/training.json
  nara bench --device cuda --threads 8"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nara.benchmarking.options import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from nara.benchmarking.suite import run_and_report

    return run_and_report(args, shlex.join(["nara", *sys.argv[1:]]))
