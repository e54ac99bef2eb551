"""The embedded fine-tuning suite: held-out variants of the pre-training families.

Three tasks, each with deterministic ``train`` (2000), ``validation`` (200) and ``test`` (200)
splits of ``{prompt, answer}`` records, prompts rendered with
:func:`nara.data.corpus.render_prompt`. Each reuses what the tiny model learned in pre-training
but asks for it in a template and answer format it never saw, so the base model fails zero-shot
and fine-tuning has something to learn:

- ``commonsense``: WinoGrande-style fill-in-the-blank, ``option1/option2`` (pre-training only has
  true/false, solution1/2 and answer1..4). Half the sentences state the deciding fact (the model
  must read the cue); the others need the world's weights, sizes and uses from pre-training. The
  splits hold out whole object pairs, so memorising pairs does not help.
- ``arithmetic``: the corpus's one-step word problems (numbers 1-10) answered in a sentence,
  ``N is the answer.`` (the corpus answers a bare number). The splits hold out whole equations
  (the numbers of question and answer), so the test sums are known only from pre-training.
- ``programs``: the value of a variable after two assignment lines, answered ``name = value``
  (the corpus asks what a ``print`` shows and answers the output alone).

Pre-training teaches the skills in its own surface form and these tasks ask for them in another,
as instruction tuning does with a base model: the base model does not produce the new formats
zero-shot, and fine-tuning unlocks what it already knows.

Scorers: ``keyword`` (the first of ``choices`` in the output), ``number`` (the last number),
``exact`` (whole output, stripped).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cache

from nara.data.corpus import (
    NAMES,
    TOOLS,
    VARS,
    WORDS,
    WORLD,
    Thing,
    distinct,
    pretraining_corpus,
    render_prompt,
    run_snippet,
    well_separated,
)
from nara.data.corpus import arithmetic_example as corpus_arithmetic

SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"train": 2000, "validation": 200, "test": 200}

# A generator draws one example: (split key, instruction, answer). Examples that share a split
# key always land in the same split (for commonsense the key is the object pair).
Generator = Callable[[random.Random], tuple[Hashable, str, str]]


@dataclass(frozen=True)
class TaskSpec:
    """One embedded task. ``choices`` lists the answer keywords when ``scorer == "keyword"``;
    ``gen_length`` is the number of tokens evaluation generates (the longest answer plus room);
    ``from_corpus`` marks a task whose prompts the corpus can produce too: prompts the embedded
    model was pre-trained on are then left out, so every task prompt is new to the model."""

    name: str
    description: str
    scorer: str
    generator: Generator = field(repr=False)
    choices: tuple[str, ...] = ()
    seed: int = 0
    gen_length: int = 16
    splits: tuple[str, ...] = SPLITS
    from_corpus: bool = False  # prompts drawn from the corpus: skip those pre-training used


# ---------------------------------------------------------------- commonsense: option1/option2


def _pair_sentence(rng: random.Random) -> tuple[Hashable, str, Thing, list[Thing]]:
    """A sentence with a blank about two things, the thing that fills it, and the pair."""
    attr = rng.choice(("mass", "size", "use"))
    person = rng.choice(NAMES)
    if attr == "use":
        tool = rng.choice(TOOLS)
        other = rng.choice([t for t in WORLD if t.use != tool.use and t.category != tool.category])
        pair = [tool, other]
        rng.shuffle(pair)
        sentence = (
            f"{person} needed to {tool.use}, so {person} took the {pair[0].name} or the "
            f"{pair[1].name}. {person} chose the _ because it was the right one for the job."
        )
        return ("use", tool.name, other.name), sentence, tool, pair
    a = rng.choice(WORLD)
    b = rng.choice([t for t in WORLD if well_separated(a, t, attr)])
    larger = rng.random() < 0.5
    big, small = sorted((a, b), key=lambda t: getattr(t, attr), reverse=True)
    target = big if larger else small
    # Half the sentences state the fact (read the cue, as in WinoGrande's twin sentences); the
    # other half leave it to the weights and sizes the model learned in pre-training.
    stated = rng.random() < 0.5
    if attr == "mass":
        ease = "harder" if larger else "easier"
        if stated:
            compare = "heavier" if a is big else "lighter"
            sentence = f"The {a.name} is {compare} than the {b.name}, so the _ was {ease} to carry."
        else:
            sentence = (
                f"{person} tried to lift the {a.name} and the {b.name}. The _ was {ease} to lift."
            )
    elif stated:
        too = "big" if larger else "small"
        sentence = f"The {big.name} did not fit into the {small.name} because the _ was too {too}."
    else:
        room = "more" if larger else "less"
        sentence = f"{person} packed the {a.name} and the {b.name}. The _ took up {room} room."
    return (attr, *sorted((a.name, b.name))), sentence, target, [a, b]


def commonsense_example(rng: random.Random) -> tuple[Hashable, str, str]:
    key, sentence, target, pair = _pair_sentence(rng)
    if rng.random() < 0.5:
        pair = pair[::-1]
    options = "\n".join(f"Option{i}: {t.name}" for i, t in enumerate(pair, 1))
    instruction = f"{sentence}\n{options}\nAnswer format: option1/option2"
    return key, instruction, f"option{pair.index(target) + 1}"


# ---------------------------------------------------------------- arithmetic: a new answer format


def arithmetic_example(rng: random.Random) -> tuple[Hashable, str, str]:
    """A pre-training word problem answered ``N is the answer.``

    The question is a :func:`nara.data.corpus.arithmetic_example` draw (the corpus answers the
    bare number); the new format is the sentence around the number. The split key is the numbers
    of the question and its answer, so no test equation is ever fine-tuned on. Pilots on the
    embedded model (docs/results/embedded_v2/pilots.md) showed why the number stays first and
    the prompt carries no format line: the model's arithmetic is tied to the corpus layout, and
    one extra prompt line or a number moved later in the answer loses most of it.
    """
    question, value = corpus_arithmetic(rng)
    key = (*map(int, re.findall(r"\d+", question)), int(value))
    return key, question, f"{value} is the answer."


# ---------------------------------------------------------------- programs: value of a variable


def program_code(rng: random.Random) -> tuple[str, str]:
    """Two assignment lines (no print) and the variable asked for; the corpus's operations."""
    v, u = distinct(rng, VARS, 2)
    a, b, k = rng.randint(0, 20), rng.randint(0, 20), rng.randint(0, 5)
    xs = [rng.randint(0, 9) for _ in range(rng.randint(2, 5))]
    word = rng.choice(WORDS)
    options = (
        f"{v} = {a}\n{u} = {v} + {b}",
        f"{v} = {a}\n{u} = {v} - {b}",
        f"{v} = {a}\n{u} = {v} * {k}",
        f"{v} = {a}\n{u} = max({v}, {b})",
        f"{v} = {a}\n{u} = {v} > {b}",
        f"{v} = {xs}\n{u} = len({v})",
        f"{v} = {xs}\n{u} = sum({v})",
        f"{v} = {xs}\n{u} = {v}[-1]",
        f"{v} = {xs}\n{u} = sorted({v})",
        f"{v} = '{word}'\n{u} = {v}.upper()",
    )
    return rng.choice(options), u


def programs_example(rng: random.Random) -> tuple[Hashable, str, str]:
    code, var = program_code(rng)
    value = run_snippet(f"{code}\nprint({var})")
    return (
        code,
        f"After this Python code runs, what is the value of {var}?\n{code}\n"
        f"Answer format: {var} = value",
        f"{var} = {value}",
    )


# ---------------------------------------------------------------- the suite


def embedded_tasks() -> dict[str, TaskSpec]:
    """The embedded tasks by name."""
    specs = (
        TaskSpec(
            "commonsense",
            "WinoGrande-style option1/option2 questions on weights, sizes and uses",
            "keyword",
            commonsense_example,
            choices=("option1", "option2"),
            seed=101,
            gen_length=8,
        ),
        TaskSpec(
            "arithmetic",
            "one-step word problems; answer 'N is the answer.'",
            "exact",
            arithmetic_example,
            seed=202,
            from_corpus=True,
        ),
        TaskSpec(
            "programs",
            "the value of a variable after two assignments; answer `name = value`",
            "exact",
            programs_example,
            seed=303,
            gen_length=24,
        ),
    )
    # issue 17: sentiment classification (nara.data.sentiment, its own module)
    from nara.data.sentiment import sentiment_example

    sentiment = TaskSpec(
        "sentiment",
        "movie-review sentiment with negations and contrasts; answer positive/negative",
        "keyword",
        sentiment_example,
        choices=("positive", "negative"),
        seed=404,
        gen_length=8,
    )
    return {spec.name: spec for spec in (*specs, sentiment)}


def split_of(key: Hashable) -> str:
    """The split a key belongs to: a stable hash puts 10 % in test, 10 % in validation."""
    bucket = zlib.crc32(repr(key).encode()) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


@cache
def _pretraining_prompts() -> frozenset[str]:
    return frozenset(r["prompt"] for r in pretraining_corpus())


@cache
def _generate(name: str, seed: int) -> dict[str, tuple[tuple[str, str], ...]]:
    spec = embedded_tasks()[name]
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    seen = set(_pretraining_prompts()) if spec.from_corpus else set()
    for _ in range(200 * sum(SPLIT_SIZES.values())):
        key, instruction, answer = spec.generator(rng)
        split = split_of(key)
        prompt = render_prompt(instruction)
        if prompt in seen or len(out[split]) >= SPLIT_SIZES[split]:
            continue
        seen.add(prompt)
        out[split].append((prompt, answer))
        if all(len(out[s]) >= SPLIT_SIZES[s] for s in SPLITS):
            return {s: tuple(v) for s, v in out.items()}
    raise RuntimeError(f"task {name!r} could not fill its splits; its generator is too narrow")


def generate_task(name: str, seed: int | None = None) -> dict[str, list[dict[str, str]]]:
    """All splits of a task, for ``seed`` (default: the task's own): split -> records.

    Raises:
        KeyError: for an unknown task name.
    """
    spec = _spec(name)
    splits = _generate(name, spec.seed if seed is None else seed)
    return {s: [{"prompt": p, "answer": a} for p, a in records] for s, records in splits.items()}


def load_embedded(name: str, split: str) -> list[dict[str, str]]:
    """Records ``{prompt, answer}`` of one split of an embedded task.

    Raises:
        KeyError: for an unknown task name or split, listing the valid ones.
    """
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r} of embedded task {name!r}; choose from {SPLITS}")
    return generate_task(name)[split]


def embedded_splits(name: str) -> tuple[str, ...]:
    """The split names of an embedded task."""
    return _spec(name).splits


def _spec(name: str) -> TaskSpec:
    tasks = embedded_tasks()
    if name not in tasks:
        raise KeyError(f"unknown embedded task {name!r}; choose from {sorted(tasks)}")
    return tasks[name]
