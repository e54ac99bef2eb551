"""Sample answers from a model (optionally with a fine-tuned adapter) by iterative unmasking.

The answer starts fully masked and is unmasked over --steps steps (LLaDA's sampler), in blocks
of --block-length when set; noise-aware adapters see the masked fraction at every step. The
prompt goes in the model's prompt template (the tokenizer's chat template; the embedded model's
"Question: ...\nAnswer:\n"), as in training; --raw sends it untouched. Generations of 64 steps
or more show their steps on a terminal.
"""

from __future__ import annotations

import argparse

from nara.commands._common import (
    add_model_arguments,
    add_sampler_arguments,
    generate_fn_from_args,
    load_for_inference,
)

EXAMPLES = """examples:
  nara generate --prompt "What is 3 plus 4?"           # in the model's prompt template
  nara generate --raw --prompt $'Question: What is 3 plus 4?\\nAnswer:\\n'   # text untouched
  nara generate --model tiny --adapter runs/demo/nara/final --prompt "..." --steps 16
  nara generate --model /models/LLaDA-8B-Instruct --adapter runs/math/final \\
      --prompt "Natalia sold clips to 48 friends..." --gen-length 256 --block-length 32"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--prompt", required=True, action="append", help="prompt text (repeat for a batch)"
    )
    add_sampler_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")


def run(args: argparse.Namespace) -> int:
    empty = [i + 1 for i, prompt in enumerate(args.prompt) if not prompt.strip()]
    if empty:
        raise ValueError(
            f"--prompt number {empty[0]} of {len(args.prompt)} is empty; pass the text to answer, "
            'e.g. --prompt "What is 3 + 4?"'
        )
    model, tokenizer, mask_token_id = load_for_inference(args)
    generate_fn = generate_fn_from_args(args, model, tokenizer, mask_token_id)
    for prompt, answer in zip(args.prompt, generate_fn(args.prompt, args.gen_length)):
        if len(args.prompt) > 1:
            print(f"### {prompt}")
        print(answer.strip())
    return 0
