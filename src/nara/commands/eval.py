"""Score a model (optionally with an adapter) on a benchmark, with per-example predictions.

Reports accuracy (pass@1 for code) and writes <output>/<task>.jsonl (one prediction per example)
and a summary.

TASK is a task name (boolq, gsm8k, humaneval, ...), a group (commonsense, math, code,
embedded), an embedded task, or a comma-separated list. --oracle scores the gold outputs
instead of a model (a check of the data and the scorer).
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
  nara eval --task embedded:arithmetic --limit 100
  nara eval --model tiny --adapter runs/demo/nara/final --task embedded --output runs/eval
  nara eval --task gsm8k --oracle --limit 20
  nara eval --model /models/LLaDA-8B-Instruct --adapter runs/math/final --task math \\
      --gen-length 256 --block-length 32 --batch-size 16"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--task", required=True, help="task, group or comma list")
    parser.add_argument("--oracle", action="store_true", help="score the gold outputs")
    parser.add_argument("--limit", type=int, help="only the first N examples of each task")
    parser.add_argument("--output", default="runs/eval", help="folder for predictions + summary")
    parser.add_argument("--data", help="benchmark data folder or file (default: ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per sampler call")
    add_sampler_arguments(parser, gen_length=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from nara.evaluation.runner import run_eval

    generate_fn = None
    if not args.oracle:
        model, tokenizer, mask_token_id = load_for_inference(args)
        generate_fn = generate_fn_from_args(args, model, tokenizer, mask_token_id)
        if args.gen_length is not None:
            generate_fn = _fixed_length(generate_fn, args.gen_length)
    result = run_eval(
        None,
        None,
        args.task,
        output_dir=args.output,
        data=args.data,
        oracle=args.oracle,
        limit=args.limit,
        batch_size=args.batch_size,
        generate_fn=generate_fn,
        progress=not args.no_progress,
    )
    print(f"average {result['average']:.2f}; predictions in {args.output}/")
    return 0


def _fixed_length(generate_fn, length: int):
    """``generate_fn`` with --gen-length in place of each task's default length."""
    return lambda prompts, _task_length: generate_fn(prompts, length)
