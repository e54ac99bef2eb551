"""Fine-tune a model with an adapter, from a YAML recipe plus key=value overrides.

CONFIG is a recipe file or a recipe name from `nara recipes`. Overrides use dotted keys,
section.key=value, coerced to the key's type and validated like the file (an unknown key or a
bad value is an error naming it). Multi-GPU / multi-node: launch the same command with
`accelerate launch --config_file configs/accelerate/<ddp|fsdp|deepspeed_zero2>.yaml -m nara.cli
train ...` or `torchrun --nproc_per_node N -m nara.cli train ...`.

A used output_dir is refused unless training.resume=latest continues the same run or
training.overwrite=true replaces it; a second run into a folder that is being written fails at
once. Ctrl-C stops without leaving anything half-written and prints the command that continues.
"""

from __future__ import annotations

import argparse
import shlex
import sys

EXAMPLES = """examples:
  nara train configs/demo.yaml
  nara train demo training.max_steps=20 output_dir=runs/quick
  nara train configs/llada8b/math_nara.yaml training.lr=5e-5 adapter.r=16
  nara train configs/llada8b/math_nara.yaml training.resume=latest   # continue a killed run
  nara train demo training.overwrite=true                            # replace the run in output_dir
  nara train demo --print-config                                     # validated config, no run
  nara train --adapter-help nara                                      # the adapter.* keys of NaRA
  accelerate launch --config_file configs/accelerate/ddp.yaml -m nara.cli train \\
      configs/llada8b/code_lora.yaml

recipe keys (section.key, type, default):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nara.training.config import schema_help

    parser.epilog = EXAMPLES + schema_help()
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="recipe YAML or recipe name")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. training.lr=1e-4"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the validated recipe and exit"
    )
    parser.add_argument(
        "--adapter-help", metavar="METHOD", help="list the adapter.* keys of METHOD and exit"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from nara.training.config import load_recipe
    from nara.training.recipes import resolve_recipe

    if args.adapter_help:
        from nara.training.adapters import adapter_help

        print(adapter_help(args.adapter_help))
        return 0
    if args.config is None:
        raise ValueError(
            "give a recipe: nara train CONFIG.yaml [key=value ...] (see `nara recipes`)"
        )
    config = load_recipe(resolve_recipe(args.config), args.overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from nara.training.trainer import train

    try:
        result = train(config, show_progress=not args.no_progress)
    except KeyboardInterrupt as stop:
        print(interrupted_message(args, stop), file=sys.stderr)
        return 130
    print(f"done: {result.steps} updates, adapter in {result.final_adapter}")
    if result.best_val_loss is not None:
        print(f"best validation loss {result.best_val_loss:.4f} (adapter in {result.best_adapter})")
    return 0


def interrupted_message(
    args: argparse.Namespace, stop: KeyboardInterrupt, command: str = "train"
) -> str:
    """What Ctrl-C left behind and the exact command (``nara train`` or ``nara rl``) that
    continues the run."""
    from nara.training.trainer import TrainingInterrupted

    kept = [
        o for o in args.overrides if not o.startswith(("training.resume=", "training.overwrite="))
    ]
    again = shlex.join(["nara", command, args.config, *kept, "training.resume=latest"])
    if not isinstance(stop, TrainingInterrupted):
        return f"nara {command}: interrupted before the first update; start it again with: {again}"
    if stop.checkpoint is None:
        saved = "no checkpoint was saved yet (training.save_every sets how often), so it restarts"
    else:
        saved = f"its newest complete checkpoint is {stop.checkpoint}"
    return f"nara {command}: interrupted at update {stop.step}; {saved}; continue with: {again}"
