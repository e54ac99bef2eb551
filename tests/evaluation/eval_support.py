"""Support for the `nara eval` / `nara demo` tests: a tiny random LLaDA with a long context.

The embedded and LLM-Adapters prompts run to about 150 characters, more than the 128 positions of
``tiny_config()``, so this model has 256 (character tokenizer of training_support).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import build_char_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def long_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random LLaDA (256 positions) + character tokenizer."""
    import torch

    from nara.models import LLaDAModelLM, tiny_config

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_long")
    LLaDAModelLM(tiny_config(max_sequence_length=256)).save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder
