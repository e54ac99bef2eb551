"""Reinforcement learning of an adapter (diffu-GRPO, wd1, VRPO) from a YAML recipe plus overrides.

CONFIG is an RL recipe file or a recipe name under configs/ (rl/embedded_arithmetic_grpo,
llada8b/gsm8k_diffu_grpo). Each rollout samples rl.group_size completions of
training.batch_size prompts with nara's sampler, scores them with the recipe's rewards
(correctness by nara eval's scorers, code tests in the sandbox, a format pattern, your own
module:function) and makes rl.inner_iterations updates on them. adapter.init_from=DIR starts
from a trained adapter (an SFT run's final/). Checkpoints, exact resume (training.resume=latest),
metrics.jsonl (rewards per rollout) and the adapter folders work as in nara train.
rl.algorithm=vrpo trains on a file of {prompt, chosen, rejected} pairs instead (DPO on ELBO
estimates; no sampling, no rewards). See docs/rl.md.
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  nara rl rl/embedded_arithmetic_grpo
  nara rl rl/embedded_arithmetic_grpo adapter.init_from=runs/demo/nara/final
  nara rl rl/embedded_arithmetic_wd1 adapter.method=lora output_dir=runs/rl/lora
  nara rl rl/embedded_arithmetic_vrpo          # DPO on {prompt, chosen, rejected} pairs (VRPO)
  nara rl llada8b/gsm8k_diffu_grpo model.name=/path/to/LLaDA-8B-Instruct
  nara rl rl/embedded_arithmetic_grpo training.resume=latest      # continue a killed run
  nara rl rl/embedded_arithmetic_grpo --print-config              # validated recipe, no run

recipe keys (section.key, type, default):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nara.rl.config import RLConfig
    from nara.training.config import schema_help

    parser.epilog = EXAMPLES + schema_help(RLConfig)
    parser.add_argument("config", metavar="CONFIG", help="RL recipe YAML or recipe name")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. rl.group_size=8"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the validated recipe and exit"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from nara.rl.config import load_rl_recipe
    from nara.training.recipes import resolve_recipe

    config = load_rl_recipe(resolve_recipe(args.config, "rl"), args.overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from nara.commands.train import interrupted_message
    from nara.rl.trainer import train_rl

    try:
        result = train_rl(config, show_progress=not args.no_progress)
    except KeyboardInterrupt as stop:
        print(interrupted_message(args, stop, "rl"), file=sys.stderr)
        return 130
    print(f"done: {result.steps} updates, adapter in {result.final_adapter}")
    return 0
