"""Speed, memory and parameter benchmarks of nara's adapters, against PEFT and the frozen model.

Four sections, each on the embedded tiny model and a mid-size random LLaDA: the training step
of every method (with the floor every adapter must pay), NaRA batched against one sample at a
time, sampling, and parameter counts (up to LLaDA-8B's shapes, on the meta device). Variants run
interleaved in one process and report medians and paired ratios, so noisy shared machines still
give comparable figures. Run it with ``nara bench`` or ``python benchmarks/<section>.py``;
``nara.benchmarking.suite.run_benchmarks`` runs it from Python (this package imports no torch).
"""

from nara.benchmarking.options import BenchOptions, add_arguments

__all__ = ["BenchOptions", "add_arguments"]
