"""NaRA batched vs one sample at a time, in CPU time of one thread: robust on a shared machine.

    python benchmarks/batching_cpu_time.py                  # mid-size model, seq 64 and 256
    python benchmarks/batching_cpu_time.py --size tiny --seqs 32 --reps 1   # a smoke test

The same comparison as ``benchmarks/batching.py`` (one AdamW step on a batch of B against B
accumulated steps of batch 1, the same samples; nara.benchmarking.training), timed by the
process's CPU time with one torch thread instead of the wall clock, so other jobs on the machine
do not enter the figure. One thread is the CPU's best case for batch 1 (nothing to leave idle),
so the ratio measures what batching saves per step (the hypernetwork, the optimizer, the
per-call overhead), not the GPU's under-occupancy at batch 1 (benchmarks/gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from nara.adapters import NaRAConfig, add_adapters
from nara.benchmarking.models import TARGETS, base_model, shared_copy
from nara.benchmarking.training import make_data, train_step


def cpu_seconds(calls: dict[str, Callable[[], None]], reps: int) -> dict[str, list[float]]:
    """Process CPU seconds of each call over ``reps`` rounds after one warm-up, round-robin."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(reps + 1):
        for name, call in calls.items():
            start = time.process_time()
            call()
            if round_:
                times[name].append(time.process_time() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    """Print (and write with --json) samples per CPU-second, batched and one at a time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="mid", choices=("tiny", "mid"))
    parser.add_argument("--seqs", default="64,256", help="comma-separated sequence lengths")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3, help="timed rounds after one warm-up")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base, source = base_model(args.size)
    config = NaRAConfig(r=args.rank, alpha=2.0 * args.rank, target_modules=TARGETS)
    rows = []
    for seq in (int(s) for s in args.seqs.split(",")):
        data = make_data(base, args.batch, seq, torch.device("cpu"))
        singles = [data.select(i) for i in range(args.batch)]
        calls = {
            "batched": train_step(add_adapters(shared_copy(base), config), [data]),
            "one at a time": train_step(add_adapters(shared_copy(base), config), singles),
        }
        times = cpu_seconds(calls, args.reps)
        ratio = statistics.median(s / b for s, b in zip(times["one at a time"], times["batched"]))
        rows.append({"seq": seq, "cpu_s": times, "speedup": round(ratio, 3)})
        batched, single = (statistics.median(times[k]) for k in calls)
        print(
            f"{args.size} ({source}), batch {args.batch} × {seq}: batched "
            f"{args.batch / batched:.3f} samples/CPU-s, one at a time {args.batch / single:.3f}; "
            f"speedup {ratio:.2f}×"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "batch": args.batch, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
