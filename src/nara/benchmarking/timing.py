"""Interleaved timing, per-call peak memory and a description of the machine.

Every variant of a benchmark runs once per round, in a rotating order, so a change of machine load
(other processes on shared cores) hits all variants alike; figures are medians over rounds, and
ratios are medians of the per-round ratios (paired: both numbers come from the same round).

Peak memory is what one call allocates above what was live before it (activations, gradients,
optimizer temporaries), measured in a separate untimed pass: on CPU from torch.profiler's memory
events (every tensor allocation and free, in order, summed to a running total), on CUDA from
``torch.cuda.max_memory_allocated``. The process's resident size is no measure of one variant
inside a process that runs many: the C allocator keeps freed memory for reuse, so a step that
needs less than an earlier one shows no rise at all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


@dataclass
class Measurement:
    """Wall times (seconds) of each timed round."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def interleaved(
    calls: dict[str, Callable[[], object]], *, warmup: int, reps: int, device: torch.device
) -> dict[str, Measurement]:
    """Run every call ``warmup + reps`` rounds, round-robin in a rotating order; keep the last reps.

    The order rotates by one each round so no variant always follows the same neighbour.
    """
    names = list(calls)
    results = {name: Measurement() for name in names}
    for round_ in range(warmup + reps):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= warmup:
                results[name].times.append(time.perf_counter() - start)
    return results


def peak_memory(call: Callable[[], object], device: torch.device) -> int:
    """Bytes of tensor memory ``call`` allocates at its peak, above what was live before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with (
        _without_profiler_lines(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        call()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


_PROFILER_LINE = re.compile(rb"^(USDT|STAGE):\S+ \S+ \d+:\d+ \w+\.cpp:\d+\]")


@contextlib.contextmanager
def _without_profiler_lines() -> Iterator[None]:
    """Drop the lines torch's profiler library writes to file descriptor 2 at every start and
    stop (``USDT:... profiler_start``); anything else written meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = [line for line in lines if not _PROFILER_LINE.match(line)]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()


def paired_ratio(a: Measurement, b: Measurement) -> float:
    """Median over rounds of a's time / b's time in the same round."""
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict[str, object]:
    """What a reader needs to judge the numbers: CPU/GPU, cores, threads, library versions."""
    import peft
    import transformers

    info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
