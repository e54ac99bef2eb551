"""LoRA-Diffusion trajectory modules vs LoRA and NaRA: parameters, stored bytes, time per step.

    .venv/bin/python benchmarks/trajectory.py                    # both tables, 30 reps
    .venv/bin/python benchmarks/trajectory.py --reps 60 --threads 1

Table 1 counts trainable parameters and the bytes an adapter stores per task (every tensor that
``nara.save_adapters`` writes, float32) at the embedded model's shapes (d_model 192, 4 blocks)
and at LLaDA-8B's (d_model 4096, 32 blocks; built on the meta device, no weights). LoRA and NaRA
use r = 32 on q/k/v/attn_out, the paper's setting; "trajectory [64, 40, 24]" has exactly LoRA's
budget (2·d·128 per block = 4 projections × 2·d·32).

Table 2 times one sampling step — a no-grad forward of the embedded-shape LLaDA at batch 8,
sequence 128, with a mixed-λ batch — for the base model and each adapter. Variants run
interleaved after a warm-up, so drifts in machine load hit all alike; the figure is the median.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import nara
from nara.adapters.save import adapter_state_dict
from nara.adapters.trajectory import TrajectoryConfig, compose_trajectories, route_context
from nara.models import LLaDAConfig, LLaDAModelLM, tiny_config

TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out"]
SHAPES = {
    "embedded": dict(
        d_model=192, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=512,
        vocab_size=1024, embedding_size=1024, max_sequence_length=256,
    ),
    "LLaDA-8B": dict(
        d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
        vocab_size=126464, embedding_size=126464, max_sequence_length=4096,
    ),
}  # fmt: skip
METHODS: dict[str, Callable[[], nara.adapters.AdapterConfig]] = {
    "LoRA r=32": lambda: nara.LoRAConfig(r=32, target_modules=TARGETS),
    "NaRA r=32": lambda: nara.NaRAConfig(r=32, target_modules=TARGETS),
    "trajectory [64, 40, 24]": lambda: TrajectoryConfig(rank_schedule=[64, 40, 24]),
    "trajectory [64, 32, 8]": lambda: TrajectoryConfig(rank_schedule=[64, 32, 8]),
    "trajectory shared [64, 32, 8]": lambda: TrajectoryConfig(
        rank_schedule=[64, 32, 8], shared=True
    ),
}


def build(shape: str, device: str = "cpu") -> LLaDAModelLM:
    with torch.device(device):
        return LLaDAModelLM(LLaDAConfig(**{**tiny_config().to_dict(), **SHAPES[shape]}))


def parameter_table() -> None:
    """Trainable parameters and stored bytes per task, for every method at both shapes."""
    print(f"{'shape':9s} {'method':30s} {'trainable':>12s} {'% of base':>10s} {'stored MB':>10s}")
    for shape in SHAPES:
        device = "cpu" if shape == "embedded" else "meta"
        base = build(shape, device)
        total = sum(p.numel() for p in base.parameters())
        for name, make in METHODS.items():
            model = nara.add_adapters(copy.deepcopy(base), make())
            count = nara.trainable_parameters(model).trainable
            stored = sum(t.numel() * t.element_size() for t in adapter_state_dict(model).values())
            print(
                f"{shape:9s} {name:30s} {count:12,d} {100 * count / total:9.4f}% "
                f"{stored / 2**20:10.3f}"
            )
            if shape == "embedded":  # the real file: tensors + safetensors header
                with tempfile.TemporaryDirectory() as tmp:
                    nara.save_adapters(model, tmp)
                    size = (Path(tmp) / "adapter_model.safetensors").stat().st_size
                assert size >= stored, (size, stored)


def randomize(model: torch.nn.Module) -> None:
    """Non-zero adapter tensors, so no variant is timed on a trivially zero update."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)


def composed(base: LLaDAModelLM, tmp: Path) -> torch.nn.Module:
    """Two trajectory [64, 32, 8] modules saved and composed under a router."""
    dirs = []
    for i in range(2):
        model = nara.add_adapters(copy.deepcopy(base), METHODS["trajectory [64, 32, 8]"]())
        randomize(model)
        dirs.append(nara.save_adapters(model, tmp / f"task{i}"))
    model = compose_trajectories(copy.deepcopy(base), dirs)
    randomize(model)
    return model


def timing_table(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    base = build("embedded").eval()
    ids = torch.randint(0, 1024, (args.batch, args.seq))
    lam = torch.rand(args.batch)  # a mixed batch: every phase occurs
    prompt = torch.zeros(args.batch, args.seq, dtype=torch.bool)
    prompt[:, : args.seq // 2] = True
    variants = {"base": base}
    for name, make in METHODS.items():
        variants[name] = nara.add_adapters(copy.deepcopy(base), make()).eval()
        randomize(variants[name])
    with tempfile.TemporaryDirectory() as tmp:
        variants["2 composed [64, 32, 8] + router"] = composed(base, Path(tmp)).eval()

    def step(model: torch.nn.Module) -> None:
        with torch.no_grad(), nara.noise_level(model, lam), route_context(model, prompt):
            model(ids)

    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.warmup + args.reps):
        for name, model in variants.items():
            start = time.perf_counter()
            step(model)
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"\nsampling step (no-grad forward), embedded shapes, batch {args.batch}, seq {args.seq}, "
        f"{args.reps} interleaved reps, torch threads {torch.get_num_threads()}"
    )
    print(f"{'variant':32s} {'ms/step':>9s} {'× base':>7s} {'× LoRA':>7s}")
    for name, t in median.items():
        print(
            f"{name:32s} {1000 * t:9.2f} {t / median['base']:7.3f} {t / median['LoRA r=32']:7.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parameter_table()
    timing_table(args)


if __name__ == "__main__":
    main()
