"""Time one training step (forward + backward) of a small LLaDA with LoRA, NaRA and PEFT's LoRA.

    .venv/bin/python benchmarks/adapter_step.py                 # defaults: batch 8, r 16
    .venv/bin/python benchmarks/adapter_step.py --d-model 512 --seq 256 --reps 30

Same base weights, same rank, same targets (q/k/v/attn_out) for every variant; NaRA gets a
per-sample λ (a mixed batch). Steps are interleaved across variants after a warm-up, so drift in
machine load hits all of them alike; the figure is the median. Target: NaRA ≤ 1.03 × LoRA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import peft
import torch
import torch.nn.functional as F

import nara
from nara.models import LLaDAModelLM, tiny_config

TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out"]


def step_fn(model: torch.nn.Module, ids: torch.Tensor, lam: torch.Tensor) -> Callable[[], None]:
    """One forward + backward with a cross-entropy loss on random targets."""
    targets = torch.randint(0, model.config.vocab_size, ids.shape)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with nara.noise_level(model, lam):
            logits = model(ids).logits  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    d = args.d_model
    config = tiny_config(
        d_model=d, n_heads=d // 64, n_kv_heads=d // 64, n_layers=args.layers,
        mlp_hidden_size=2 * d, vocab_size=1024, embedding_size=1024,
        max_sequence_length=args.seq,
    )  # fmt: skip
    base = LLaDAModelLM(config).train()
    ids = torch.randint(0, 1024, (args.batch, args.seq))
    lam = torch.rand(args.batch)
    variants = {
        "nara LoRA": nara.add_adapters(
            copy.deepcopy(base), nara.LoRAConfig(r=args.rank, target_modules=TARGETS)
        ),
        "nara NaRA": nara.add_adapters(
            copy.deepcopy(base), nara.NaRAConfig(r=args.rank, target_modules=TARGETS)
        ),
        "PEFT LoRA": peft.get_peft_model(
            copy.deepcopy(base), peft.LoraConfig(r=args.rank, target_modules=TARGETS)
        ),
    }
    steps = {name: step_fn(model, ids, lam) for name, model in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(args.warmup + args.reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"batch {args.batch}, seq {args.seq}, d_model {d}, {args.layers} layers, rank "
        f"{args.rank}, {args.reps} interleaved reps, torch threads {torch.get_num_threads()}"
    )
    for name, t in median.items():
        print(f"  {name:10s} {1000 * t:8.2f} ms/step")
    print(f"NaRA / LoRA      = {median['nara NaRA'] / median['nara LoRA']:.3f}")
    print(f"LoRA / PEFT LoRA = {median['nara LoRA'] / median['PEFT LoRA']:.3f}")


if __name__ == "__main__":
    main()
