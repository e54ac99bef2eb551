"""Sentiment classification the way a dLLM is evaluated: the label word is generated and scored.

One prompt format for both data sets (:func:`sentiment_prompt`)::

    Question: Review: <review>
    Is the sentiment of this movie review positive or negative?
    Answer format: positive/negative
    Answer:

answered ``positive`` or ``negative`` (then EOS); the ``keyword`` scorer takes the first of the two
words in the generation. Scores are on held-out data only, never on the training split.

- SST-2 (``sentence``, ``label`` with 0 = negative, 1 = positive), for users who have it: the
  ``sst2`` record format (:data:`nara.data.records.FORMATS`), the ``sst2`` evaluation task
  (its labelled validation split: SST-2's test labels are hidden) and the training source
  ``data.source=sst2`` (the hub dataset :data:`SST2_HUB`).
- ``embedded:sentiment``, offline (:func:`sentiment_example`): synthetic movie reviews from a
  small lexicon. A third of the clauses negate their adjective and two thirds of the reviews
  contrast two clauses of opposite sentiment (``..., but ...``, ``Although ..., ...``, ``..., although ...``),
  where the connective, not the words present, says which clause decides; so a bag-of-words
  reader (even one that flips on ``not``) stays far from the top score. The split key is the
  deciding clause's (aspect, adjective) pair: test reviews decide on combinations never seen
  deciding in training.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

from nara.data.corpus import render_prompt

LABELS = ("negative", "positive")  # index = SST-2's label
QUESTION = "Is the sentiment of this movie review positive or negative?"
SST2_HUB = "stanfordnlp/sst2"
# source and --hub names read as SST-2 (the hub's short name redirects to SST2_HUB)
SST2_NAMES = frozenset({"sst2", "sst-2", SST2_HUB})

ASPECTS = (
    "acting", "plot", "dialogue", "soundtrack", "ending", "cast", "script", "pacing",
    "camera work", "story", "music", "humour",
)  # fmt: skip
POSITIVE = (
    "brilliant", "moving", "charming", "gripping", "superb", "delightful", "clever", "wonderful",
    "beautiful", "touching",
)  # fmt: skip
NEGATIVE = (
    "dull", "clumsy", "boring", "awful", "tedious", "weak", "messy", "bland", "forgettable",
    "painful",
)  # fmt: skip
# (affirmed, negated) clause frames: the negated one flips the adjective's sentiment
FRAMES = (
    ("the {aspect} was {adj}", "the {aspect} was not {adj}"),
    ("the {aspect} felt {adj}", "the {aspect} never felt {adj}"),
    ("I found the {aspect} {adj}", "I did not find the {aspect} {adj}"),
)
OPENERS = ("", "I saw it last week. ", "We watched it at home. ", "My friend picked this one. ")


def sentiment_instruction(review: str) -> str:
    """The question about one review, before the prompt template."""
    return f"Review: {review}\n{QUESTION}\nAnswer format: positive/negative"


def sentiment_prompt(review: str) -> str:
    """The prompt for one review (the format in the module docstring)."""
    return render_prompt(sentiment_instruction(review))


def sst2_label(label: int | str, where: str) -> str:
    """The label word of an SST-2 label (0/1, as a number or a string, or the word itself).

    Raises:
        ValueError: any other value, naming it and ``where`` (SST-2's test split holds -1).
    """
    text = str(label).strip().lower()
    if text in LABELS:
        return text
    if text in ("0", "1"):
        return LABELS[int(text)]
    hint = " (SST-2's test split has no labels: evaluate on its validation split)"
    raise ValueError(
        f"{where}: label {label!r} is not an SST-2 label; expected 0 (negative), 1 (positive) "
        f"or the word itself{hint if text == '-1' else ''}"
    )


def _clause(rng: random.Random, aspect: str, sentiment: int) -> str:
    """A clause about ``aspect`` whose sentiment is ``sentiment`` (1 positive, 0 negative)."""
    negated = rng.random() < 1 / 3
    words = POSITIVE if sentiment != negated else NEGATIVE
    affirmed, negation = rng.choice(FRAMES)
    return (negation if negated else affirmed).format(aspect=aspect, adj=rng.choice(words))


def _capital(clause: str) -> str:
    return clause[0].upper() + clause[1:]


def sentiment_example(rng: random.Random) -> tuple[Hashable, str, str]:
    """One synthetic review: (split key, instruction, label word).

    A third of the reviews are one clause; the others pair the deciding clause with one of the
    opposite sentiment on another aspect, joined so that the deciding clause comes first or
    last. The key is the deciding clause's (aspect, adjective).
    """
    label = rng.randint(0, 1)
    aspect, other = rng.sample(ASPECTS, 2)
    decider = _clause(rng, aspect, label)
    if rng.random() < 0.35:
        body = f"{_capital(decider)}."
    else:
        foil = _clause(rng, other, 1 - label)
        shape = rng.randrange(3)
        if shape == 0:
            body = f"{_capital(foil)}, but {decider}."
        elif shape == 1:
            body = f"Although {foil}, {decider}."
        else:
            body = f"{_capital(decider)}, although {foil}."
    review = f"{rng.choice(OPENERS)}{body}"
    return (aspect, decider.rsplit(" ", 1)[1]), sentiment_instruction(review), LABELS[label]
