"""Loss and masked-token accuracy per noise level λ, base model vs adapters (the paper's Fig. 1).

Draws one mask per example and λ bin, shared by every model (paired comparison), scores the base
model and each --adapter on them, prints the table and writes profile.json + profile.png to
--output. An adapter is DIR or NAME=DIR (the name defaults to the folder, or its parent for
final/ and best/). TASK is an embedded task (its validation split by default) or a .json/.jsonl
file of {prompt, answer} records.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  nara profile --model tiny --task arithmetic
  nara profile --adapter runs/demo/lora/final --adapter runs/demo/nara/final --task arithmetic
  nara profile --adapter nara=runs/x/final --task commonsense --bins 5 --samples-per-bin 4 \\
      --limit 128 --output runs/profile/commonsense
  nara profile --model /models/LLaDA-8B-Instruct --adapter runs/math/final --task data.jsonl \\
      --device cuda --dtype bfloat16 --batch-size 8"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="tiny", help="'tiny' (embedded), a LLaDA folder or a hub id"
    )
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="[NAME=]DIR", help="repeatable"
    )
    parser.add_argument("--task", required=True, help="embedded task or a .json/.jsonl file")
    parser.add_argument("--split", default="validation", help="split of an embedded task")
    parser.add_argument("--limit", type=int, default=64, help="examples to use (default 64)")
    parser.add_argument("--bins", type=int, default=10, help="λ bins over [0, 1]")
    parser.add_argument("--samples-per-bin", type=int, default=1, help="masks per example, bin")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fixed masks")
    parser.add_argument("--batch-size", type=int, default=16, help="masks per forward pass")
    parser.add_argument("--max-length", type=int, default=512, help="longer examples are dropped")
    parser.add_argument("--output", default="runs/profile", help="folder for profile.json/.png")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:0")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16")
    )


def adapter_names(specs: list[str]) -> dict[str, Path]:
    """``[NAME=]DIR`` strings → {name: folder}; default names come from the folder path.

    Raises:
        ValueError: two adapters with the same name.
    """
    named: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        folder = Path(path if sep else spec)
        if not sep:
            parts = folder.resolve().parts
            name = parts[-2] if parts[-1] in ("final", "best") and len(parts) > 1 else parts[-1]
        if name in named:
            raise ValueError(f"two adapters are named {name!r}; name them with NAME=DIR")
        named[name] = folder
    return named


def load_records(task: str, split: str, limit: int | None) -> list:
    """Records of an embedded task split or a records file, the first ``limit`` of them."""
    from nara.training.data import EMBEDDED_PREFIX, load_source

    suffix = Path(task).suffix
    source = task if suffix in (".json", ".jsonl") or ":" in task else EMBEDDED_PREFIX + task
    return load_source(source, split)[:limit]


def run(args: argparse.Namespace) -> int:
    import torch

    from nara.evaluation.profile import noise_profile
    from nara.models import load_model

    adapters = adapter_names(args.adapter)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    model, tokenizer, mask_token_id = load_model(args.model, dtype=dtype, device=device)
    if tokenizer is None:
        raise ValueError(f"{args.model} ships no tokenizer; the profile encodes text records")
    result = noise_profile(
        model,
        tokenizer,
        load_records(args.task, args.split, args.limit),
        adapters=adapters,
        mask_token_id=mask_token_id,
        bins=args.bins,
        samples_per_bin=args.samples_per_bin,
        seed=args.seed,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    print(result.table())
    json_path, png_path = result.save(args.output, title=f"{args.model} · {args.task}")
    print(f"wrote {json_path} and {png_path}")
    return 0
