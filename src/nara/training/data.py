"""Records for a recipe's ``data`` section, tokenized, and the epoch-seeded sampler.

Sources: ``embedded:<task>`` (nara's embedded suite), a ``.json``/``.jsonl`` file (LLM-Adapters or
``{prompt, answer}`` records) or a Hugging Face dataset name (``hf:`` prefix optional); or a mix
of several joined with ``+`` (``embedded:arithmetic+embedded:programs``), interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nara.data.collate import Encoded, encode_records
from nara.training.config import DataSection

EMBEDDED_PREFIX = "embedded:"
HUB_PREFIX = "hf:"
MIX_SEPARATOR = "+"


def mix_parts(source: str) -> list[str]:
    """The sources of a mix ``a+b+…``; ``[source]`` for a single source (or an existing path
    that happens to contain ``+``).

    Raises:
        ValueError: a mix with an empty part (``a++b``, a trailing ``+``).
    """
    if MIX_SEPARATOR not in source or Path(source).exists():
        return [source]
    parts = [part.strip() for part in source.split(MIX_SEPARATOR)]
    if not all(parts):
        raise ValueError(
            f"data source {source!r} has an empty part; join sources with a single '+', e.g. "
            "embedded:arithmetic+embedded:programs"
        )
    return parts


def _interleave(groups: list[list[Any]]) -> list[Any]:
    """Round-robin a1, b1, a2, b2, …, then the longer groups' tails: any prefix (``max_examples``,
    ``val_max_examples``) holds the sources in equal shares."""
    longest = max(len(g) for g in groups)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def source_kind(source: str) -> str:
    """``embedded``, ``file`` or ``hub`` for a data source string."""
    if source.startswith(EMBEDDED_PREFIX):
        return "embedded"
    if source.startswith(HUB_PREFIX):
        return "hub"
    if Path(source).suffix in (".json", ".jsonl") or Path(source).exists():
        return "file"
    return "hub"


def load_source(source: str, split: str) -> list[Any]:
    """Records (with ``.prompt`` and ``.answer``) of ``source``; ``split`` applies to tasks/hub.

    A mix ``a+b`` gives each part's records of ``split``, interleaved (see :func:`mix_parts`).

    Raises:
        FileNotFoundError: for a .json/.jsonl path that does not exist.
        ValueError: from the loaders, for an unknown task or split, or malformed records.
    """
    parts = mix_parts(source)
    if len(parts) > 1:
        return _interleave([load_source(part, split) for part in parts])
    kind = source_kind(source)
    if kind == "embedded":
        from nara.data.embedded import load_embedded

        return list(load_embedded(source[len(EMBEDDED_PREFIX) :], split))
    from nara.data import records

    if kind == "file":
        return records.load_records(source)
    name = source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else source
    return records.load_hub(name, split=split)


def has_split(source: str, split: str) -> bool:
    """Whether ``source`` offers ``split`` (embedded tasks only; files have one split; a mix
    when every part does)."""
    parts = mix_parts(source)
    if len(parts) > 1:
        return all(has_split(part, split) for part in parts)
    if source_kind(source) != "embedded":
        return False
    from nara.data.embedded import embedded_splits

    return split in embedded_splits(source[len(EMBEDDED_PREFIX) :])


def split_records(cfg: DataSection, seed: int) -> tuple[list[Any], list[Any]]:
    """Training and validation records per the data section (validation may be empty)."""
    train = load_source(cfg.source, cfg.split)
    if cfg.val_source is not None:
        val = load_source(cfg.val_source, cfg.val_split)
    elif has_split(cfg.source, cfg.val_split):
        val = load_source(cfg.source, cfg.val_split)
    elif cfg.val_fraction > 0:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = max(1, math.floor(cfg.val_fraction * len(train)))
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in sorted(order[n_val:])]
    else:
        val = []
    if cfg.max_examples is not None:
        train = train[: cfg.max_examples]
    if cfg.val_max_examples is not None:
        val = val[: cfg.val_max_examples]
    return train, val


def tokenize(cfg: DataSection, tokenizer: Any, records: list[Any]) -> list[Encoded]:
    """Encode records with the section's length policy and chat-template mode."""
    if not records:
        return []
    return encode_records(
        tokenizer,
        records,
        max_length=cfg.max_length,
        truncation=cfg.truncation,
        chat_template=cfg.chat_template,
    )


class EpochSampler(torch.utils.data.Sampler[int]):
    """A fresh random order each epoch, fixed by (seed, epoch): what makes resume exact.

    Accelerate calls :meth:`set_epoch` through the prepared data loader and shards the batches
    of this one global order across processes, so every world size sees the same sequence of
    global batches.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())
