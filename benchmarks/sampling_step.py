"""Per-step sampling time of a tiny LLaDA model: no adapter vs LoRA vs NaRA.

    python benchmarks/sampling_step.py                      # defaults below
    python benchmarks/sampling_step.py --batch-size 8 --gen-length 128 --repeats 7

One "step" is one denoising step of ``nara.generate`` (one model forward, the λ context, the
confidence and the commit). Reported: the median over ``--repeats`` runs of (run time / steps),
after one warm-up run. NaRA runs its hypernetwork once per forward (global sharing), so its
overhead over LoRA is one small MLP per step plus a batched r×r mix per adapted layer.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import nara
from nara.models import LLaDAModelLM, tiny_config


def _build(method: str, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tiny_config(
        d_model=args.d_model,
        n_layers=args.layers,
        mlp_hidden_size=2 * args.d_model,
        max_sequence_length=args.prompt_length + args.gen_length,
    )
    model = LLaDAModelLM(config)
    if method == "lora":
        model = nara.add_adapters(model, nara.LoRAConfig(r=args.rank))
    elif method == "nara":
        model = nara.add_adapters(model, nara.NaRAConfig(r=args.rank))
    return model.eval()


def _ms_per_step(model: torch.nn.Module, args: argparse.Namespace) -> float:
    prompt = torch.randint(0, 120, (args.batch_size, args.prompt_length))
    mask_id = model.config.mask_token_id

    def run() -> float:
        start = time.perf_counter()
        nara.generate(
            model,
            prompt,
            mask_token_id=mask_id,
            gen_length=args.gen_length,
            steps=args.steps,
            block_length=args.block_length,
        )
        return (time.perf_counter() - start) / args.steps * 1e3

    run()  # warm-up
    return statistics.median(run() for _ in range(args.repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"tiny LLaDA d_model={args.d_model} layers={args.layers}, batch {args.batch_size}, "
        f"prompt {args.prompt_length} + answer {args.gen_length}, {args.steps} steps, "
        f"rank {args.rank}, {args.threads} thread(s), median of {args.repeats}"
    )
    print(f"{'adapter':<10}{'ms/step':>10}{'vs none':>10}")
    base = None
    for method in ("none", "lora", "nara"):
        ms = _ms_per_step(_build(method, args), args)
        base = base or ms
        print(f"{method:<10}{ms:>10.2f}{ms / base:>9.2f}x")


if __name__ == "__main__":
    main()
