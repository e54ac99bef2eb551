"""The GPU check of the memory work: LLaDA-8B shapes, random weights, one script, JSON out.

    python benchmarks/gpu_check.py --json benchmarks/gpu_check.json   # on a CUDA GPU (~40 GB)
    python benchmarks/gpu_check.py --tiny --json /tmp/gpu_check.json  # same code, CPU, small

Sections (``--sections``, all by default):

- ``training``: one AdamW step of LoRA and NaRA (r = 32 on q/k/v/attn_out, batch 1) at sequence
  512/1024/2048, gradient checkpointing off/on, base in bf16 and in NF4 (nara's
  ``quantize_linears``, what ``model.load_in_4bit`` loads); trainable tensors float32 under
  bf16 autocast, as ``nara train`` runs them. Median step time, and the step's peak (CUDA
  allocator, weights included) next to the analytic total of ``nara bench --only memory``.
- ``batching``: NaRA, one step on a batch of B against B accumulated steps of batch 1, same
  samples (samples/s ratio; the issue's target is >= 4 on a GPU).
- ``sampling``: ``nara.generate`` of the NaRA model, cache None / "prefix" / "dual".

``--tiny`` runs everything on a 2-layer random LLaDA on the CPU (the test of this script:
tests/test_gpu_check.py). A row that runs out of memory is recorded as such and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

import nara
from nara.adapters import LoRAConfig, NaRAConfig, add_adapters
from nara.benchmarking import memory
from nara.benchmarking.models import TARGETS, shared_copy
from nara.benchmarking.timing import interleaved, paired_ratio
from nara.benchmarking.training import make_data, train_step
from nara.models import LLaDAConfig, LLaDAModelLM, tiny_config
from nara.models.quantize import quantize_linears

METHODS = {"LoRA": LoRAConfig, "NaRA": NaRAConfig}
SECTIONS = ("training", "batching", "sampling")
TINY = {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128}
GiB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small model on the CPU (a test)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--seqs", default=None, help="training sequence lengths (512,1024,2048)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3, help="timed rounds after one warm-up")
    parser.add_argument("--batch", type=int, default=8, help="batching: samples per step")
    parser.add_argument("--batch-seq", type=int, default=None, help="batching: length (512)")
    parser.add_argument("--gen-length", type=int, default=None, help="sampling: tokens (256)")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run on a GPU machine, or pass --tiny (CPU test)")
    seqs = args.seqs or ("32" if args.tiny else "512,1024,2048")
    args.seqs = [int(s) for s in seqs.split(",")]
    args.batch_seq = args.batch_seq or (32 if args.tiny else 512)
    args.gen_length = args.gen_length or (8 if args.tiny else 256)
    return args


def random_base(config: LLaDAConfig, device: torch.device) -> LLaDAModelLM:
    """A random LLaDA of ``config`` built in bfloat16 directly on ``device``, frozen, eval."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LLaDAModelLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.requires_grad_(False).eval()


def adapted(base: LLaDAModelLM, method: str, rank: int, checkpointing: bool) -> Any:
    """A copy of ``base`` sharing its weights, with ``method`` in float32 on the targets."""
    model = add_adapters(
        shared_copy(base), METHODS[method](r=rank, alpha=2.0 * rank, target_modules=TARGETS)
    )
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model.train()


def autocast(call: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``call`` under bfloat16 autocast, as ``nara train`` runs a bf16 step."""

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            call()

    return run


def guarded(run: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """``run()``, or ``{"oom": True}`` when it runs out of device memory."""
    try:
        return run()
    except torch.cuda.OutOfMemoryError:
        return {"oom": True}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def timed_peak(step: Callable[[], None], reps: int, device: torch.device) -> dict[str, Any]:
    """Median seconds of ``step`` over ``reps`` rounds after one warm-up, and its peak (GiB,
    weights included; the CUDA allocator's, not measured on a CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = interleaved({"step": step}, warmup=1, reps=reps, device=device)["step"].times
    peak = torch.cuda.max_memory_allocated() / GiB if device.type == "cuda" else None
    return {"median_s": round(statistics.median(times), 4), "peak_gib": peak and round(peak, 2)}


def training_rows(base: LLaDAModelLM, weights: str, args: argparse.Namespace) -> list[dict]:
    """One row per method × sequence × checkpointing on ``base`` (bf16 or already NF4)."""
    device = next(base.parameters()).device
    rows = []
    for method in METHODS:
        split = memory.parameter_split(memory.adapted_model(base.config, method, args.rank))
        for seq in args.seqs:
            for checkpointing in (False, True):
                terms = memory.analytic_terms(
                    base.config, split, method=method, rank=args.rank, batch=1, seq=seq,
                    weights=weights, checkpointing=checkpointing,
                )  # fmt: skip

                def run(
                    method: str = method, seq: int = seq, checkpointing: bool = checkpointing
                ) -> dict[str, Any]:
                    model = adapted(base, method, args.rank, checkpointing)
                    step = autocast(train_step(model, [make_data(model, 1, seq, device)]), device)
                    return timed_peak(step, args.reps, device)

                row = {"method": method, "seq": seq, "checkpointing": checkpointing}
                row["weights"] = weights
                row["analytic_total_gib"] = round(terms["total"]["bytes"] / GiB, 2)
                rows.append({**row, **guarded(run, device)})
                print(f"[gpu_check] training {rows[-1]}", file=sys.stderr)
    return rows


def batching(base: LLaDAModelLM, args: argparse.Namespace) -> dict[str, Any]:
    """NaRA: a step on a batch of B vs B accumulated steps of batch 1 (bf16, no checkpointing)."""
    device = next(base.parameters()).device
    data = make_data(base, args.batch, args.batch_seq, device)
    singles = [data.select(i) for i in range(args.batch)]

    def run() -> dict[str, Any]:
        calls = {
            "batched": autocast(
                train_step(adapted(base, "NaRA", args.rank, False), [data]), device
            ),
            "one at a time": autocast(
                train_step(adapted(base, "NaRA", args.rank, False), singles), device
            ),
        }
        got = interleaved(calls, warmup=1, reps=args.reps, device=device)
        per_s = {name: args.batch / statistics.median(m.times) for name, m in got.items()}
        return {
            "batched_samples_per_s": round(per_s["batched"], 3),
            "single_samples_per_s": round(per_s["one at a time"], 3),
            "speedup": round(1 / paired_ratio(got["batched"], got["one at a time"]), 3),
        }

    return {"batch": args.batch, "seq": args.batch_seq, **guarded(run, device)}


def sampling(base: LLaDAModelLM, args: argparse.Namespace) -> list[dict[str, Any]]:
    """nara.generate of NaRA on ``base``: 64 prompt tokens, blocks of 32, one token per step."""
    device = next(base.parameters()).device
    model = adapted(base, "NaRA", args.rank, False).eval()
    config = base.config
    prompt = torch.randint(0, config.mask_token_id, (1, 64), generator=torch.Generator())
    rows = []
    for cache in (None, "prefix", "dual"):

        def run(cache: str | None = cache) -> dict[str, Any]:
            def generate() -> None:
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                    nara.generate(
                        model, prompt.to(device), mask_token_id=config.mask_token_id,
                        gen_length=args.gen_length, steps=args.gen_length, block_length=min(32, args.gen_length), cache=cache,
                    )  # fmt: skip

            got = timed_peak(generate, args.reps, device)
            return {**got, "tokens_per_s": round(args.gen_length / got["median_s"], 2)}

        rows.append({"cache": cache or "none", **guarded(run, device)})
        print(f"[gpu_check] sampling {rows[-1]}", file=sys.stderr)
    return rows


def environment(device: torch.device) -> dict[str, Any]:
    """Date, device, versions."""
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, print and write the JSON."""
    args = parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda")
    config = tiny_config(**TINY) if args.tiny else LLaDAConfig()
    sections = args.sections.split(",")
    results: dict[str, Any] = {"environment": environment(device), "rank": args.rank}
    results["shape"] = {k: getattr(config, k) for k in ("d_model", "n_layers", "vocab_size")}
    start = time.perf_counter()
    base = random_base(config, device)
    if "training" in sections:
        results["training"] = training_rows(base, "bf16", args)
    if "batching" in sections:
        results["batching"] = batching(base, args)
    if "sampling" in sections:
        results["sampling"] = sampling(base, args)
    if "training" in sections:  # last: the base stays NF4 from here on
        results["training"] += training_rows(quantize_linears(base), "4bit", args)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
