"""Records for a recipe's ``data`` section, tokenized, and the epoch-seeded sampler.

Sources: ``embedded:<task>`` (nara's embedded suite), a ``.json``/``.jsonl``/``.csv`` file
(LLM-Adapters or ``{prompt, answer}`` records, other column names mapped by ``data.columns``) or
a Hugging Face dataset name (``hf:`` prefix optional); or a mix of several joined with ``+``
(``embedded:arithmetic+embedded:programs``), interleaved. :func:`check_sources` checks every
source before a model loads.
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
    if Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).exists():
        return "file"
    return "hub"


FILE_SUFFIXES = (".json", ".jsonl", ".csv")

# Where the data sets the shipped recipes name can be had, by the end of their path (the file
# checks before a model loads name it).
WHERE_TO_GET = {
    "llm-adapters/math_10k.json": "LLM-Adapters' math_10k training set: copy "
    "ft-training_set/math_10k.json of the LLM-Adapters repository there (docs/data.md; "
    "../shared/data/llm-adapters/ft-training_set/math_data.json runs without a download)",
    "llm-adapters/commonsense_170k.json": "LLM-Adapters' commonsense_170k training set: copy "
    "ft-training_set/commonsense_170k.json of the LLM-Adapters repository there (docs/data.md)",
    "code/train.jsonl": "a code instruction set of your choice (docs/data.md)",
}


def check_sources(cfg: DataSection) -> None:
    """Check every part of ``cfg.source`` and ``cfg.val_source`` before a model loads: files
    exist, embedded tasks and splits are known, and hub names have ``datasets`` to load them.

    Raises:
        FileNotFoundError: a file that is not there, naming its absolute path and where to get it.
        ValueError: an unknown embedded task or split.
        ImportError: a hub dataset without the ``datasets`` package.
    """
    specs = [(cfg.source, cfg.split), (cfg.val_source, cfg.val_split)]
    for spec, split in specs:
        for part in mix_parts(spec) if spec else []:
            kind = source_kind(part)
            if kind == "file" and not Path(part).expanduser().is_file():
                raise FileNotFoundError(_missing_file(part))
            if kind == "embedded":
                from nara.data.embedded import embedded_splits

                splits = embedded_splits(part[len(EMBEDDED_PREFIX) :])
                if split not in splits and spec == cfg.source:
                    raise ValueError(
                        f"data.split={split!r}: {part} has the splits {list(splits)}; pick one"
                    )
            if kind == "hub":
                from nara.data.records import require_datasets

                require_datasets(part)


def _missing_file(path: str) -> str:
    full = Path(path).expanduser().resolve()
    where = next((w for end, w in WHERE_TO_GET.items() if full.as_posix().endswith(end)), None)
    get = f"it is {where}; or" if where else "create it, or"
    return (
        f"data file not found: {path} (looked for {full}); {get} point data.source at your own "
        ".json/.jsonl/.csv file of {prompt, answer} records"
    )


def load_source(source: str, split: str, columns: dict[str, str] | None = None) -> list[Any]:
    """Records (with ``.prompt`` and ``.answer``) of ``source``; ``split`` applies to tasks/hub;
    ``columns`` maps file or hub columns to record fields (``{"prompt": "question"}``).

    A mix ``a+b`` gives each part's records of ``split``, interleaved (see :func:`mix_parts`).

    Raises:
        FileNotFoundError: for a .json/.jsonl/.csv path that does not exist.
        ValueError: from the loaders, for an unknown task or split, or malformed records.
    """
    parts = mix_parts(source)
    if len(parts) > 1:
        return _interleave([load_source(part, split, columns) for part in parts])
    kind = source_kind(source)
    if kind == "embedded":
        from nara.data.embedded import load_embedded

        return list(load_embedded(source[len(EMBEDDED_PREFIX) :], split))
    from nara.data import records

    if kind == "file":
        return records.load_records(source, columns=columns)
    name = source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else source
    return records.load_hub(name, split=split, columns=columns)


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
    """Training and validation records per the data section (validation may be empty: see
    :func:`no_validation_notice`)."""
    train = load_source(cfg.source, cfg.split, cfg.columns)
    if cfg.val_source is not None:
        val = load_source(cfg.val_source, cfg.val_split, cfg.columns)
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


def no_validation_notice(cfg: DataSection) -> str | None:
    """The one line that says a run has no validation loss and how to get one; None when the
    recipe turned validation off itself (``data.val_max_examples=0``) or named ``val_source``."""
    if cfg.val_max_examples == 0 or cfg.val_source is not None:
        return None
    return (
        f"note: no validation data ({cfg.source} has no {cfg.val_split!r} split and "
        "data.val_fraction=0): training runs without a validation loss and best/ is not kept; "
        "set data.val_fraction=0.05 to hold out 5 % or data.val_source=PATH"
    )


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
