"""Support for the RL trainer tests: a tiny random LLaDA with a character tokenizer and a JSONL
file of one-digit sums, and an RL recipe over them."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import (  # noqa: E402
    EOS,
    MASK,
    arithmetic_records,
    build_char_tokenizer,
    write_jsonl,
)

from nara.models import LLaDAModelLM, tiny_config  # noqa: E402
from nara.rl.config import RLConfig, load_rl_recipe  # noqa: E402

__all__ = ["EOS", "MASK", "letter_count", "loaded", "recipe", "sums_file"]


def sums_file(folder: Path) -> Path:
    """16 records ``{"prompt": "3+4=", "answer": "7"}``."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_jsonl(folder / "sums.jsonl", arithmetic_records(16, seed=0))


def loaded(seed: int = 0) -> tuple[torch.nn.Module, object, int]:
    """A fresh ``(model, tokenizer, mask id)``: the same weights for the same seed."""
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config()), build_char_tokenizer(), MASK


def recipe(folder: Path, *extra: str, scorer: str | None = "exact") -> RLConfig:
    """diffu-GRPO with LoRA r=4: 2 prompts x 4 completions of 4 tokens, μ = 2, 4 updates, a
    checkpoint every 2; the file's answers scored by ``scorer`` (None: no rewards section);
    ``extra`` overrides come last."""
    return load_rl_recipe(
        None,
        [
            f"data.source={sums_file(folder)}",
            *([f"rewards.scorer={scorer}"] if scorer else []),
            "adapter.method=lora",
            "adapter.r=4",
            "rl.group_size=4",
            "rl.inner_iterations=2",
            "rl.gen_length=4",
            "rl.steps=2",
            "rl.temperature=1.0",
            "rl.prompt_mask_prob=0.3",
            "training.lr=1e-2",
            "training.warmup_ratio=0",
            "training.batch_size=2",
            "training.max_steps=4",
            "training.save_every=2",
            f"output_dir={folder / 'run'}",
            *extra,
        ],
    )


def letter_count(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """A toy reward (``rewards.custom=rl_support:letter_count``): the letters in a completion, so
    random completions of one group differ and every update has a gradient."""
    return [float(sum(ch.isalpha() for ch in c)) for c in completions]
