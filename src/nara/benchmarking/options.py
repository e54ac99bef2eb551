"""The benchmark's settings and command-line options (no torch import: ``nara --help`` stays fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SECTIONS = ("training", "batching", "sampling", "parameters", "memory")
SIZES = ("tiny", "mid")
# what --quick changes: seconds instead of tens of minutes, same code paths
QUICK = {"batch": 2, "seq": 32, "reps": 2, "gen_length": 8, "sample_reps": 1}


@dataclass
class BenchOptions:
    """Settings of one run (see ``add_arguments`` for each one's meaning)."""

    device: str = "cpu"
    threads: int = 2
    quick: bool = False
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    sizes: list[str] = field(default_factory=lambda: list(SIZES))
    methods: list[str] | None = None
    batch: int = 8
    seq: int = 256
    rank: int = 32
    dropout: float = 0.0
    reps: int = 5
    warmup: int = 1
    gen_length: int = 64
    sample_batch: int = 1
    sample_reps: int = 3


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser, only: str | None = None) -> None:
    """The benchmark's command-line options (``only`` fixes the section, for the scripts)."""
    d = BenchOptions()
    parser.add_argument("--json", metavar="FILE", default="nara-bench.json", help="JSON output")
    parser.add_argument("--device", default=d.device, help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument(
        "--quick", action="store_true", help=f"small shapes and few rounds {QUICK}: a smoke test"
    )
    if only is None:
        parser.add_argument(
            "--only", type=_csv, default=d.sections, help=f"sections, from {','.join(SECTIONS)}"
        )
    parser.set_defaults(only_section=only)
    parser.add_argument(
        "--sizes",
        type=_csv,
        default=d.sizes,
        help="model sizes: tiny,mid (parameters and memory add 8b; memory measures at mid)",
    )
    parser.add_argument("--methods", type=_csv, help="training rows to keep (default: all)")
    parser.add_argument("--batch", type=int, default=d.batch, help="training batch size")
    parser.add_argument("--seq", type=int, default=d.seq, help="training sequence length")
    parser.add_argument("--rank", type=int, default=d.rank, help="adapter rank r")
    parser.add_argument(
        "--dropout",
        type=float,
        default=d.dropout,
        help="adapter dropout (default 0 as PEFT's; the paper's 0.05 gives each module its own "
        "dropped copy of the input, so q/k/v cannot share one A matmul)",
    )
    parser.add_argument("--reps", type=int, default=d.reps, help="timed rounds (training)")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed first rounds")
    parser.add_argument(
        "--gen-length", type=int, default=d.gen_length, help="sampled tokens (= steps)"
    )
    parser.add_argument("--sample-batch", type=int, default=d.sample_batch, help="prompts")
    parser.add_argument(
        "--sample-reps", type=int, default=d.sample_reps, help="timed rounds (sampling)"
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from parsed arguments; --quick overrides the shapes and rounds.

    Raises:
        ValueError: an unknown section or size.
    """
    sections = [args.only_section] if args.only_section else args.only
    unknown = [s for s in sections if s not in SECTIONS]
    unknown += [s for s in args.sizes if s not in (*SIZES, "8b")]
    if unknown:
        raise ValueError(
            f"unknown section or size {unknown}; sections: {','.join(SECTIONS)}; sizes: "
            "tiny,mid (and 8b for parameters)"
        )
    names = ("device", "threads", "quick", "sizes", "methods", "batch", "seq", "rank", "dropout")
    names += ("reps", "warmup", "gen_length", "sample_batch", "sample_reps")
    values = {k: getattr(args, k) for k in names}
    if args.quick:
        values.update(QUICK)
    return BenchOptions(sections=sections, **values)
