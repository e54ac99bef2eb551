"""Score a model (optionally with an adapter) on a benchmark, with per-example predictions.

Reports accuracy (pass@1 for code) and writes <output>/<task>.jsonl (one prediction per example),
a summary and run.json, the run's fingerprint (model and adapter hashes, data hash, sampler
settings, limit). The default output folder is runs/eval/<task>-<model>-<hash>, one per distinct
run; an interrupted run resumes, and a folder holding another run is refused (use another
--output, or --overwrite).

TASK is a task name (boolq, gsm8k, humaneval, ...), a group (commonsense, math, code,
embedded), an embedded task, your own .json/.jsonl/.csv file of {prompt, answer} records
(scored by --scorer; --columns maps other column names), or a comma-separated list. --oracle
scores the gold outputs instead of a model (a check of the data and the scorer).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nara.commands._common import (
    add_model_arguments,
    add_sampler_arguments,
    check_inference_arguments,
    generate_fn_from_args,
    load_for_inference,
)
from nara.evaluation.tasks import SCORER_HELP, SCORERS

EXAMPLES = """examples:
  nara eval --task embedded:arithmetic --limit 100
  nara eval --model tiny --adapter runs/demo/nara/final --task embedded --output runs/eval/nara
  nara eval --task gsm8k --oracle --limit 20
  nara eval --task my.jsonl --scorer number --adapter runs/mine/final
  nara eval --task my.csv --scorer keyword --columns prompt=question,answer=label
  nara eval --task sst2 --data sst2_dev.csv --adapter runs/sst2/final   # SST-2 layout sentence,label
  nara eval --model /models/LLaDA-8B-Instruct --adapter runs/math/final --task math \\
      --gen-length 256 --block-length 32 --batch-size 16"""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in the error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--task", required=True, help="task, group, your own data file, or a comma list"
    )
    parser.add_argument(
        "--scorer",
        choices=tuple(SCORERS),
        help=f"how to score your own data file: {SCORER_HELP}",
    )
    parser.add_argument(
        "--columns",
        metavar="FIELD=COLUMN,...",
        help="your own file's (or --data's) column names mapped to record fields, e.g. "
        "prompt=question,answer=label, or sentence=text,label=sentiment for --task sst2",
    )
    parser.add_argument("--oracle", action="store_true", help="score the gold outputs")
    parser.add_argument("--limit", type=positive_int, help="only the first N examples of each task")
    parser.add_argument(
        "--output",
        help="folder for predictions + summary (default: runs/eval/<task>-<model>-<hash>)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --output holds instead of refusing",
    )
    parser.add_argument("--data", help="benchmark data folder or file (default: ../shared/data)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="prompts per sampler call"
    )
    add_sampler_arguments(parser, gen_length=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--sandbox",
        choices=("auto", "strict"),
        default="auto",
        help="code tasks: strict refuses to run generated code without full isolation (user "
        "namespaces); auto warns and runs (default). See docs/sandbox.md",
    )


def run(args: argparse.Namespace) -> int:
    from nara.evaluation.runner import run_eval
    from nara.evaluation.sandbox import SandboxLimits

    identity, label, generate_fn = None, None, None
    if not args.oracle:
        check_inference_arguments(args)
        identity, label = generator_identity(args)
        generate_fn = _LazyGenerate(lambda: _load_generate_fn(args))
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
        identity=identity,
        label=label,
        overwrite=args.overwrite,
        sandbox=SandboxLimits(mode=args.sandbox),
        scorer=args.scorer,
        columns=args.columns,
    )
    how = "resumed" if result["resumed"] else "new run"
    n = sum(s["n"] for s in result["tasks"].values())
    print(f"average {result['average']:.2f} (n={n}, {how}); predictions in {result['output_dir']}/")
    return 0


def generator_identity(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(fingerprint fields of the model, adapter and sampler options; a short folder label).

    Every option of :func:`add_sampler_arguments` is recorded (read from the parser, so a new
    option cannot be missed). Batch size joins only when sampling draws noise (temperature,
    random remasking or --alg-temp), the one case where the batch a prompt lands in changes its
    answer; greedy answers do not depend on it.
    """
    from nara.runs import adapter_identity, model_identity

    model = model_identity(args.model)
    adapter = adapter_identity(args.adapter) if args.adapter else None
    options = argparse.ArgumentParser(add_help=False)
    add_sampler_arguments(options)
    sampler = {a.dest: getattr(args, a.dest) for a in options._actions}
    sampler.update(seed=args.seed, chat_template=args.chat_template, dtype=args.dtype)
    if args.temperature > 0 or args.remasking == "random" or (args.alg_temp or 0) > 0:
        sampler["batch_size"] = args.batch_size
    label = model["name"]
    if args.adapter:
        label += "-" + "-".join(Path(args.adapter).resolve().parts[-2:])
    return {"model": model, "adapter": adapter, "sampler": sampler}, label


def _load_generate_fn(args: argparse.Namespace) -> Callable[[list[str], int], list[str]]:
    model, tokenizer, mask_token_id = load_for_inference(args)
    generate_fn = generate_fn_from_args(args, model, tokenizer, mask_token_id)
    if args.gen_length is not None:
        length = args.gen_length  # --gen-length replaces each task's default length
        return lambda prompts, _task_length: generate_fn(prompts, length)
    return generate_fn


class _LazyGenerate:
    """A generate_fn that loads the model on its first call: after every input check and the
    output-folder check, and never when a resumed run has nothing left to generate."""

    def __init__(self, load: Callable[[], Callable[[list[str], int], list[str]]]) -> None:
        self._load = load
        self._fn: Callable[[list[str], int], list[str]] | None = None

    def __call__(self, prompts: list[str], gen_length: int) -> list[str]:
        if self._fn is None:
            self._fn = self._load()
        return self._fn(prompts, gen_length)
