"""Support for the training and CLI tests: a tiny random LLaDA saved with a character tokenizer.

Built in code (no downloads): ``LLaDAModelLM(tiny_config())`` (vocabulary 128, EOS 126, mask 127)
and a character-level tokenizer made with ``tokenizers`` whose ids fit that vocabulary.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

EOS, MASK = 126, 127


def build_char_tokenizer():
    """A PreTrainedTokenizerFast over printable ASCII; EOS = pad = 126, mask = 127."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]  # 97 characters
    vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    vocab.update({"<eos>": EOS, "<mask>": MASK})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # characters back to text with no separator
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<eos>",
        pad_token="<eos>",
        mask_token="<mask>",
    )


def arithmetic_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``{prompt: "3+4=", answer: "7"}`` records of single-digit sums."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        out.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random LLaDA + character tokenizer that ``load_model(path)`` reads."""
    import torch

    from nara.models import LLaDAModelLM, tiny_config

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_model")
    # room for benchmark prompts (one token per character), which nara.generate refuses past it
    LLaDAModelLM(tiny_config(max_sequence_length=512)).save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def arith_files(tmp_path_factory) -> tuple[Path, Path]:
    """Train (64 records) and validation (16 records) JSONL files."""
    folder = tmp_path_factory.mktemp("arith")
    train = write_jsonl(folder / "train.jsonl", arithmetic_records(64, seed=0))
    val = write_jsonl(folder / "val.jsonl", arithmetic_records(16, seed=1))
    return train, val


def run_config(tiny_model_dir, arith_files, output_dir, *extra):
    """The resume tests' recipe: NaRA with dropout, 10 updates, validation every 5, a checkpoint
    every 3, on the tiny saved model; ``extra`` overrides come last."""
    from nara.training.config import load_recipe

    train, val = arith_files
    return load_recipe(
        None,
        [
            f"model.name={tiny_model_dir}",
            f"data.source={train}",
            f"data.val_source={val}",
            "data.max_examples=32",
            "data.val_max_examples=8",
            "data.max_length=16",
            "adapter.method=nara",
            "adapter.r=4",
            "adapter.hidden_sizes=[16]",
            "adapter.dropout=0.1",  # dropout exercises the restored RNG
            "training.lr=3e-3",
            "training.hyper_lr=1e-3",
            "training.batch_size=4",
            "training.grad_accum=2",
            "training.max_steps=10",
            "training.warmup_ratio=0.2",
            "training.eval_every=5",
            "training.save_every=3",
            f"output_dir={output_dir}",
            *extra,
        ],
    )
