"""Answer extraction and comparison for the paper's benchmarks (docs/design.md §6).

- choice (commonsense, LLM-Adapters formats): the FIRST answer keyword of the task's format in the
  generation (``true``/``false``, ``solution1``.., ``answer1``.., ``option1``.., ``ending1``..),
  matched as a whole word, case-insensitively, compared with the label.
- number (math): the LAST number in the generation, compared numerically with a tolerance.
- letter (AQuA): the option letter, see :func:`extract_letter`.
- code: pass@k from sandbox runs, see :func:`pass_at_k`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction

# A number: optional sign (not when glued to a previous digit, so "5-3" is 5 and 3), digits with
# optional thousands separators, an optional decimal part, or ".5"; optionally "/denominator".
_NUMBER = re.compile(
    r"(?<![\d.])([-+]?)\$?\s?"
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(\d+(?:\.\d+)?))?"
)
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})

# "the answer is (C)", "Answer: c", "answer choice D" -- the letter right after an answer phrase.
_ANSWER_LETTER = re.compile(
    r"answer(?:\s+(?:is|choice|option|would\s+be|should\s+be))*\s*[:=]?\s*(?:option\s*)?"
    r"\(?([A-Ea-e])\)?(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_PAREN_LETTER = re.compile(r"\(([A-E])\)")
_LEADING_LETTER = re.compile(r"^\s*\(?([A-E])(?:[).:]|\s*$)")


def extract_choice(text: str, keywords: Sequence[str]) -> str:
    """The first of `keywords` that appears in `text` as a whole word (case-insensitive), or ""."""
    alternatives = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    match = re.search(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", text, re.IGNORECASE)
    return match.group(1).lower() if match else ""


def _to_float(sign: str, number: str, denominator: str | None) -> float | None:
    value = float(number.replace(",", ""))
    if denominator is not None:
        if float(denominator) == 0:
            return None
        value = float(Fraction(number.replace(",", "")) / Fraction(denominator))
    return -value if sign == "-" else value


def extract_number(text: str) -> float | None:
    """The last number in `text`, or None.

    Handles thousands separators ("1,234"), signs ("-3", "+3", unicode minus), decimals (".5",
    "2.50"), fractions ("3/4"), currency ("$12") and a trailing sentence period ("is 12.").
    A list like "1,2" is two numbers; a separator must be followed by exactly three digits.
    """
    last = None
    for match in _NUMBER.finditer(text.translate(_MINUS_SIGNS)):
        value = _to_float(*match.groups())
        if value is not None:
            last = value
    return last


def numbers_match(predicted: float | None, gold: float, *, abs_tol: float = 1e-3) -> bool:
    """Numeric equality with tolerance (abs 1e-3 as in LLM-Adapters, or relative 1e-6)."""
    return predicted is not None and math.isclose(predicted, gold, rel_tol=1e-6, abs_tol=abs_tol)


def extract_letter(text: str) -> str:
    """The AQuA option letter A-E in `text`, or "".

    In order: the letter after the last answer phrase ("the answer is (C)", "Answer: c"); else the
    last parenthesised capital "(C)"; else a generation that starts with a letter ("C) 35", "C").
    A bare capital inside prose ("A train leaves...") is never taken.
    """
    answers = _ANSWER_LETTER.findall(text)
    if answers:
        return answers[-1].upper()
    parens = _PAREN_LETTER.findall(text)
    if parens:
        return parens[-1]
    leading = _LEADING_LETTER.match(text)
    return leading.group(1) if leading else ""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Raises:
        ValueError: k > n (draw at least k samples per problem).
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    # product form avoids huge binomials: C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
