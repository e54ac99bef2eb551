"""Pieces shared by the inference subcommands: model + adapter loading and the sampler call.

Prompts are formatted by :func:`nara.data.collate.encode_prompt`, the function training uses,
so a fine-tuned adapter is sampled with exactly the prompt layout it was trained on: by default
the model's prompt template (its tokenizer's chat template; the embedded model's
``Question: ...\nAnswer:\n`` format), or the text untouched with ``--raw``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --adapter, --device, --dtype, --chat-template, --raw."""
    parser.add_argument(
        "--model", default="tiny", help="'tiny' (embedded), a LLaDA folder or a hub id"
    )
    parser.add_argument("--adapter", metavar="DIR", help="adapter folder written by nara train")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:0")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16")
    )
    parser.add_argument(
        "--chat-template",
        default="auto",
        choices=("auto", "always", "never"),
        help="apply the model's prompt template: its tokenizer's chat template (LLaDA-8B-Instruct's; "
        "the embedded model's 'Question: ...\\nAnswer:\\n'); auto: when it has one",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="send the prompt text untouched, no template (= --chat-template never)",
    )


def add_sampler_arguments(parser: argparse.ArgumentParser, gen_length: int | None = 64) -> None:
    """--gen-length, --steps, --block-length, --remasking, --temperature, LLaDA's --threshold,
    --cache, --cache-tolerance, and Dream's sampler options --sampler, --top-p, --top-k,
    --alg-temp."""
    from_task = " (default: the task's)" if gen_length is None else ""
    parser.add_argument(
        "--gen-length", type=int, default=gen_length, help=f"answer tokens{from_task}"
    )
    parser.add_argument("--steps", type=int, help="denoising steps (default: gen length)")
    parser.add_argument("--block-length", type=int, help="semi-autoregressive block size")
    parser.add_argument(
        "--remasking",
        default="low_confidence",
        choices=("low_confidence", "random", "margin", "entropy"),
        help="which predictions to commit first",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument(
        "--threshold",
        type=float,
        help="parallel decoding: commit every position at least this confident (0, 1]",
    )
    parser.add_argument(
        "--cache",
        default="none",
        choices=("none", "prefix", "dual"),
        help="key/value cache (LLaDA and Dream; docs/cache.md): reuse the keys/values before "
        "the block (prefix) or also after it (dual, LLaDA's sampler) within a block; faster, "
        "approximate",
    )
    parser.add_argument(
        "--cache-tolerance",
        type=float,
        help="also recompute a sample's cache when its noise level moved by more than this",
    )
    parser.add_argument(
        "--sampler",
        choices=("llada", "dream", "mdlm"),
        help="LLaDA's block sampler, or Dream's or MDLM's released one (default: the model "
        "family's)",
    )
    parser.add_argument("--top-p", type=float, help="nucleus filtering (Dream's sampler)")
    parser.add_argument("--top-k", type=int, help="top-k filtering (Dream's sampler)")
    parser.add_argument(
        "--alg-temp",
        type=float,
        help="draw the positions to reveal from softmax(confidence / T) (Dream's sampler)",
    )


def resolve_device(device: str) -> str:
    """The device to load on: ``auto`` picks cuda when available; others are checked to exist.

    Raises:
        ValueError: an unknown device name, CUDA on a CPU-only torch build or without a visible
            GPU, or a GPU index past the visible ones.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"--device {device!r} is not a device torch knows; use auto, cpu, cuda or cuda:N"
        ) from err
    if parsed.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(
                f"CUDA is not available in this torch build (torch {torch.__version__}, cpu); "
                "use --device cpu or install a CUDA torch"
            )
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device}: torch {torch.__version__} has CUDA {torch.version.cuda} but "
                "sees no GPU (driver, CUDA_VISIBLE_DEVICES?); use --device cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"--device {device}: only {count} GPU(s) are visible (cuda:0 to "
                f"cuda:{count - 1}); pick one of those"
            )
    return device


def check_inference_arguments(args: argparse.Namespace) -> str:
    """Check the options of :func:`add_model_arguments` and :func:`add_sampler_arguments`
    before any model loads; returns the device to load on.

    A ``--gen-length`` left to each task is checked when the task's length is known.

    Raises:
        ValueError: a bad device or sampler setting (``nara.diffusion.sampling.check_settings``).
        FileNotFoundError: ``--adapter`` is not an adapter folder (a damaged one is a
            ValueError).
    """
    from nara.diffusion.dream_sampling import check_sampler_values
    from nara.diffusion.sampling import check_length, check_settings, max_length

    if args.raw:
        if args.chat_template == "always":
            raise ValueError(
                "--raw sends prompts untouched; it cannot go with --chat-template always"
            )
        args.chat_template = "never"
    check_settings(
        args.gen_length,
        args.steps,
        args.block_length,
        temperature=args.temperature,
        remasking=args.remasking,
        threshold=args.threshold,
        cache=cache_mode(args.cache),
        cache_tolerance=args.cache_tolerance,
    )
    check_sampler_values(args.sampler, args.top_p, args.top_k, args.alg_temp)
    if args.gen_length is not None:  # the prompt is checked too once tokenized
        check_length(max_length(_local_config(args.model)), 0, args.gen_length)
    if args.adapter:
        from nara.adapters.save import check_adapter_folder

        check_adapter_folder(args.adapter)
    return resolve_device(args.device)


def cache_mode(option: str) -> str | None:
    """The ``cache=`` of :func:`nara.generate` for a ``--cache`` choice ("none" -> None)."""
    return None if option == "none" else option


def _local_config(model: str) -> dict[str, Any] | None:
    """config.json of a local model folder ("tiny" included); None for a hub name or a folder
    that load_model will report."""
    from nara.models.loading import TINY_DIR

    folder = TINY_DIR if model == "tiny" else Path(model).expanduser()
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


def load_for_inference(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """(model in eval mode with the adapter loaded, tokenizer, mask token id), every option
    checked first (:func:`check_inference_arguments`)."""
    import torch

    from nara.models import load_model

    device = check_inference_arguments(args)
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    if dtype is None and str(device).startswith("cuda"):
        dtype = torch.bfloat16
    model, tokenizer, mask_token_id = load_model(args.model, dtype=dtype, device=device)
    if tokenizer is None:
        raise ValueError(f"{args.model} ships no tokenizer; text generation needs one")
    if args.adapter:
        from nara.adapters import load_adapters

        model = load_adapters(model, args.adapter)
        model.to(device)
    return model.eval(), tokenizer, mask_token_id


def make_generate_fn(
    model: Any,
    tokenizer: Any,
    mask_token_id: int,
    *,
    chat_template: str = "auto",
    steps: int | None = None,
    block_length: int | None = None,
    remasking: str = "low_confidence",
    temperature: float = 0.0,
    seed: int = 0,
    sampler: str | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    alg_temp: float | None = None,
    threshold: float | None = None,
    cache: str | None = None,
    cache_tolerance: float | None = None,
) -> Callable[[list[str], int], list[str]]:
    """``fn(prompts, gen_length) -> answers``: left-padded batch through nara's sampler.

    ``steps`` above an answer length (a task with a shorter default) are lowered to that length,
    with a one-line note on stderr the first time for each length. Sampling noise (temperature,
    random remasking) is seeded per batch from ``seed`` and the batch's prompts
    (:func:`nara.evaluation.runner.batch_seed`): batches draw different noise, and a batch draws the same noise whenever
    it is generated, which keeps a resumed evaluation (it regenerates a cut batch whole) equal to
    an uninterrupted one. Generations of ``PROGRESS_STEPS`` steps or more show their steps on a
    terminal.
    """
    import torch

    from nara.data.collate import encode_prompt_batch
    from nara.diffusion import generate
    from nara.evaluation.runner import batch_seed
    from nara.progress import model_steps

    device = next(model.parameters()).device
    noted: set[int] = set()  # answer lengths whose too-many steps were already reported

    @torch.no_grad()
    def generate_fn(prompts: list[str], gen_length: int) -> list[str]:
        ids, mask = encode_prompt_batch(tokenizer, prompts, chat_template=chat_template)  # (B, P)
        steps_here = min(steps or gen_length, gen_length)
        if steps_here != (steps or gen_length) and gen_length not in noted:
            noted.add(gen_length)
            print(
                f"note: {steps} steps exceed the answer length {gen_length}; sampling it with "
                f"{gen_length} steps (one token per step)",
                file=sys.stderr,
            )
        quiet = contextlib.nullcontext()
        with model_steps(model, steps_here) if steps_here >= PROGRESS_STEPS else quiet:
            out = generate(
                model,
                ids.to(device),
                mask.to(device),
                mask_token_id=mask_token_id,
                gen_length=gen_length,
                steps=steps_here,
                block_length=block_length,
                temperature=temperature,
                remasking=remasking,
                eos_token_id=tokenizer.eos_token_id,
                generator=torch.Generator(device=device).manual_seed(
                    batch_seed(seed, prompts, gen_length)
                ),
                sampler=sampler,
                top_p=top_p,
                top_k=top_k,
                alg_temp=alg_temp,
                threshold=threshold,
                cache=cache,
                cache_tolerance=cache_tolerance,
            )
        return tokenizer.batch_decode(out, skip_special_tokens=True)

    return generate_fn


PROGRESS_STEPS = 64  # generations of this many steps or more show their steps on a terminal


def generate_fn_from_args(
    args: argparse.Namespace, model: Any, tokenizer: Any, mask_token_id: int
) -> Callable[[list[str], int], list[str]]:
    """:func:`make_generate_fn` with the sampler options of :func:`add_sampler_arguments`."""
    return make_generate_fn(
        model,
        tokenizer,
        mask_token_id,
        chat_template=args.chat_template,
        steps=args.steps,
        block_length=args.block_length,
        remasking=args.remasking,
        temperature=args.temperature,
        seed=args.seed,
        sampler=args.sampler,
        top_p=args.top_p,
        top_k=args.top_k,
        alg_temp=args.alg_temp,
        threshold=args.threshold,
        cache=cache_mode(args.cache),
        cache_tolerance=args.cache_tolerance,
    )
