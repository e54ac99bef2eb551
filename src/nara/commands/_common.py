"""Pieces shared by the inference subcommands: model + adapter loading and the sampler call.

Prompts are formatted by :func:`nara.data.collate.encode_prompt`, the function training uses,
so a fine-tuned adapter is sampled with exactly the prompt layout it was trained on.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --adapter, --device, --dtype, --chat-template."""
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
        help="wrap prompts in the tokenizer's chat template (auto: when it has one)",
    )


def add_sampler_arguments(parser: argparse.ArgumentParser, gen_length: int | None = 64) -> None:
    """--gen-length, --steps, --block-length, --remasking, --temperature."""
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


def load_for_inference(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """(model in eval mode with the adapter loaded, tokenizer, mask token id)."""
    import torch

    from nara.models import load_model

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
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
) -> Callable[[list[str], int], list[str]]:
    """``fn(prompts, gen_length) -> answers``: left-padded batch through nara's sampler."""
    import torch

    from nara.data.collate import encode_prompt
    from nara.diffusion import generate

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device

    @torch.no_grad()
    def generate_fn(prompts: list[str], gen_length: int) -> list[str]:
        encoded = [encode_prompt(tokenizer, p, chat_template=chat_template) for p in prompts]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)  # (B, P), left-padded
        mask = torch.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        steps_here = min(steps or gen_length, gen_length)
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
            generator=torch.Generator(device=device).manual_seed(seed),
        )
        return tokenizer.batch_decode(out, skip_special_tokens=True)

    return generate_fn


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
    )
