"""Turn (prompt, answer) records into the tensors the diffusion loss trains on.

LLaDA's supervised fine-tuning layout (Nie et al. 2025, appendix B): ``prompt | answer | EOS ...``.
The prompt is never masked; the answer, its closing EOS and the EOS padding up to the batch (or
``max_length``) are all maskable and all attended to — training on the padding EOS teaches the
model where to stop. Prompts go through the tokenizer's chat template when it has one (LLaDA-8B-
Instruct does), and :func:`encode_prompt` is the one place that formats a prompt, so training,
generation and evaluation see the same tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

CHAT_TEMPLATE_MODES = ("auto", "always", "never")
TRUNCATION_POLICIES = ("drop", "truncate", "error")


@dataclass
class Encoded:
    """One tokenized example: the prompt and the answer (ending with EOS), as token ids."""

    prompt_ids: list[int]
    answer_ids: list[int]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def uses_chat_template(tokenizer: Any, mode: str = "auto") -> bool:
    """Whether prompts are wrapped in the tokenizer's chat template under ``mode``.

    Raises:
        ValueError: on an unknown mode, or ``always`` with a tokenizer that has no template.
    """
    if mode not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got {mode!r}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "always" and not has:
        raise ValueError(
            "chat_template='always' but the tokenizer has no chat template; use 'auto' or 'never'"
        )
    return has and mode != "never"


def _user_turn(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def encode_prompt(tokenizer: Any, prompt: str, *, chat_template: str = "auto") -> list[int]:
    """Token ids of a prompt as the model sees it (chat-wrapped with the generation prompt if on)."""
    if uses_chat_template(tokenizer, chat_template):
        text = tokenizer.apply_chat_template(
            _user_turn(prompt), add_generation_prompt=True, tokenize=False
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def encode_prompt_batch(
    tokenizer: Any, prompts: list[str], *, chat_template: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts formatted by :func:`encode_prompt` and left-padded for the sampler (which appends
    the answer on the right): long ``input_ids`` (B, P) and ``attention_mask`` (B, P)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_prompt(tokenizer, p, chat_template=chat_template) for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)  # (B, P)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, width - len(e) :] = torch.tensor(e, dtype=torch.long)
        mask[row, width - len(e) :] = 1
    return ids, mask


def _answer_text(tokenizer: Any, prompt: str, answer: str, chat: bool) -> str:
    """The answer as it follows the prompt: the assistant turn's text when chat-wrapped."""
    if not chat:
        return answer
    turn = _user_turn(prompt)
    head = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*turn, {"role": "assistant", "content": answer}], tokenize=False
    )
    return full[len(head) :] if full.startswith(head) else answer


def encode_pair(
    tokenizer: Any, prompt: str, answer: str, *, chat_template: str = "auto"
) -> Encoded:
    """Tokenize one (prompt, answer) pair; the answer ends with exactly one trailing EOS.

    Raises:
        ValueError: if the tokenizer has no EOS token (the answer's stop signal).
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; set tokenizer.eos_token first")
    chat = uses_chat_template(tokenizer, chat_template)
    prompt_ids = encode_prompt(tokenizer, prompt, chat_template=chat_template)
    answer_ids = tokenizer(_answer_text(tokenizer, prompt, answer, chat), add_special_tokens=False)
    answer_ids = list(answer_ids["input_ids"])
    if not answer_ids or answer_ids[-1] != eos:
        answer_ids.append(eos)
    return Encoded(list(prompt_ids), answer_ids)


def _fields(record: Any) -> tuple[str, str]:
    """(prompt, text to train on): the record's ``target`` (e.g. a worked solution) if it has
    one, else its ``answer``."""
    if isinstance(record, dict):
        return record["prompt"], record.get("target") or record["answer"]
    return record.prompt, getattr(record, "target", None) or record.answer


def encode_records(
    tokenizer: Any,
    records: Iterable[Any],
    *,
    max_length: int,
    truncation: str = "drop",
    chat_template: str = "auto",
) -> list[Encoded]:
    """Tokenize records (``.prompt``/``.answer``/``.target`` objects or dicts) with a length policy.

    Policies for an example longer than ``max_length``: ``drop`` skips it, ``truncate`` cuts the
    sequence at the right (the answer may lose its EOS; an example whose prompt alone fills
    ``max_length`` is dropped), ``error`` raises. Dropped or cut examples are counted in one
    warning.

    Raises:
        ValueError: under ``error`` at the first example too long, or when no example is left.
    """
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    out: list[Encoded] = []
    dropped = cut = longest = 0
    for i, record in enumerate(records):
        enc = encode_pair(tokenizer, *_fields(record), chat_template=chat_template)
        if len(enc) <= max_length:
            out.append(enc)
            continue
        longest = max(longest, len(enc))
        if truncation == "error":
            raise ValueError(
                f"example {i} has {len(enc)} tokens > data.max_length={max_length}; raise "
                "data.max_length, or set data.truncation=drop or truncate"
            )
        room = max_length - len(enc.prompt_ids)
        if truncation == "truncate" and room > 0:
            out.append(Encoded(enc.prompt_ids, enc.answer_ids[:room]))
            cut += 1
        else:
            dropped += 1
    if dropped or cut:
        warnings.warn(
            f"{dropped} example(s) dropped and {cut} truncated: longer than data.max_length="
            f"{max_length} (longest {longest} tokens); raise data.max_length to keep them whole",
            stacklevel=2,
        )
    if not out:
        raise ValueError(
            f"no example fits in data.max_length={max_length}; raise it or check the data"
        )
    return out


class Collator:
    """Pad a list of :class:`Encoded` into a batch, answers padded with (trainable) EOS.

    Returns a dict of ``input_ids`` long (B, T), ``attention_mask`` long (B, T) (all ones: the
    EOS padding is real text, attended to as in LLaDA's SFT), ``maskable`` bool (B, T) (answer
    and padding, never the prompt) and ``prompt_lengths`` long (B,).

    Args:
        eos_token_id: the padding token.
        pad_to: ``batch`` (longest in the batch) or ``max_length``.
        max_length: required when ``pad_to="max_length"``.
    """

    def __init__(self, eos_token_id: int, pad_to: str = "batch", max_length: int | None = None):
        if pad_to not in ("batch", "max_length"):
            raise ValueError(f"pad_to must be 'batch' or 'max_length', got {pad_to!r}")
        if pad_to == "max_length" and not max_length:
            raise ValueError("pad_to='max_length' needs max_length")
        self.eos_token_id = eos_token_id
        self.pad_to = pad_to
        self.max_length = max_length

    def __call__(self, examples: list[Encoded]) -> dict[str, torch.Tensor]:
        longest = max(len(e) for e in examples)
        length = self.max_length if self.pad_to == "max_length" else longest
        if longest > length:
            raise ValueError(f"an example has {longest} tokens > max_length={length}")
        ids = torch.full((len(examples), length), self.eos_token_id, dtype=torch.long)  # (B, T)
        prompt_lengths = torch.tensor([len(e.prompt_ids) for e in examples])  # (B,)
        for row, e in enumerate(examples):
            seq = e.prompt_ids + e.answer_ids
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        positions = torch.arange(length)  # (T,)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "maskable": positions[None, :] >= prompt_lengths[:, None],
            "prompt_lengths": prompt_lengths,
        }
