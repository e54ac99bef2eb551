"""The pre-training corpus and the embedded task suite: determinism, held-out-ness, correct answers."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from nara.data.corpus import WORLD, pretraining_corpus, render_prompt
from nara.data.embedded import SPLIT_SIZES, embedded_tasks, generate_task, load_embedded

THINGS = {t.name: t for t in WORLD}
# Phrases that only the held-out tasks use (their new templates and operations).
HELD_OUT_MARKERS = (
    "Option1", "option1/option2", "The _", "so the _", "did not fit into",
    "After this Python code runs", " = value",
)  # fmt: skip


@pytest.fixture(scope="module")
def corpus():
    return pretraining_corpus(30_000, seed=0)


def _body(prompt: str) -> str:
    """The instruction inside the rendered prompt."""
    assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:\n")
    return prompt[len("Question: ") : -len("\nAnswer:\n")]


def _printed(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})
    return out.getvalue().strip()


def test_render_prompt_format():
    assert render_prompt("What is 2 plus 2?") == "Question: What is 2 plus 2?\nAnswer:\n"


def test_same_seed_same_records():
    assert pretraining_corpus(300, seed=3) == pretraining_corpus(300, seed=3)
    assert pretraining_corpus(300, seed=3) != pretraining_corpus(300, seed=4)
    for name in embedded_tasks():
        assert generate_task(name) == generate_task(name)
        assert generate_task(name, seed=7) != generate_task(name)


def test_split_sizes_and_disjointness(corpus):
    corpus_prompts = {r["prompt"] for r in corpus}
    for name in embedded_tasks():
        splits = {s: {r["prompt"] for r in load_embedded(name, s)} for s in SPLIT_SIZES}
        assert {s: len(p) for s, p in splits.items()} == SPLIT_SIZES
        assert not splits["test"] & splits["train"]
        assert not splits["validation"] & splits["train"]
        assert not splits["test"] & splits["validation"]
        assert not splits["test"] & corpus_prompts


def _commonsense_key(prompt: str) -> tuple:
    body = _body(prompt)
    options = frozenset(re.findall(r"Option\d: (.+)", body))
    goal = re.search(r"needed to (.+?), so", body)
    relation = goal[1] if goal else "mass" if re.search(r"to (lift|carry)\.", body) else "size"
    return relation, options


def test_commonsense_holds_out_whole_object_pairs():
    train = {_commonsense_key(r["prompt"]) for r in load_embedded("commonsense", "train")}
    test = {_commonsense_key(r["prompt"]) for r in load_embedded("commonsense", "test")}
    assert not train & test


def test_held_out_templates_absent_from_corpus(corpus):
    text = "\n".join(r["prompt"] + r["answer"] for r in corpus)
    for marker in HELD_OUT_MARKERS:
        assert marker not in text, marker
    used = {m for name in embedded_tasks() for s in SPLIT_SIZES for r in load_embedded(name, s)
            for m in HELD_OUT_MARKERS if m in r["prompt"]}  # fmt: skip
    assert used == set(HELD_OUT_MARKERS)  # every marker really is a held-out template


def test_commonsense_answers_follow_the_world():
    for r in load_embedded("commonsense", "test") + load_embedded("commonsense", "validation"):
        body = _body(r["prompt"])
        first, second = (THINGS[n] for n in re.findall(r"Option\d: (.+)", body))
        chosen, other = (first, second) if r["answer"] == "option1" else (second, first)
        if re.search(r"harder to (lift|carry)\.", body):
            assert chosen.mass > other.mass
        elif re.search(r"easier to (lift|carry)\.", body):
            assert chosen.mass < other.mass
        elif "up more room" in body or "was too big." in body:
            assert chosen.size > other.size
        elif "up less room" in body or "was too small." in body:
            assert chosen.size < other.size
        else:
            assert chosen.use is not None and f"needed to {chosen.use}," in body


CORPUS_RULES = (  # (pattern, formula) written from the corpus templates' wording
    (r"has (\d+) \w+\. \w+ gets (\d+) more", lambda a, b: a + b),
    (r"picked (\d+) \w+ in the morning and (\d+)", lambda a, b: a + b),
    (r"There are (\d+) \w+ in one box and (\d+)", lambda a, b: a + b),
    (r"had (\d+) \w+ and gave (\d+)", lambda a, b: a - b),
    (r"holds (\d+) \w+\. \w+ takes out (\d+)", lambda a, b: a - b),
    (r"has (\d+) \w+ and \w+ has (\d+)\. How many more", lambda a, b: a - b),
    (r"What is (\d+) plus (\d+)\?", lambda a, b: a + b),
    (r"What is (\d+) minus (\d+)\?", lambda a, b: a - b),
)


def _corpus_value(question: str) -> int:
    for pattern, formula in CORPUS_RULES:
        match = re.search(pattern, question)
        if match:
            return formula(*map(int, match.groups()))
    raise AssertionError(f"no rule for {question!r}")


def test_arithmetic_answers_are_correct(corpus):
    for r in [r for r in corpus if r["family"] == "arithmetic"][:500]:
        assert int(r["answer"]) == _corpus_value(_body(r["prompt"])), r
    for r in load_embedded("arithmetic", "test") + load_embedded("arithmetic", "train")[:300]:
        assert "Answer format" not in r["prompt"]  # the new format is only in the answers
        assert r["answer"] == f"{_corpus_value(_body(r['prompt']))} is the answer.", r


def test_arithmetic_prompts_are_new_to_the_embedded_model():
    """The task draws its questions from the corpus generator; the ones the embedded model was
    pre-trained on (the full corpus its model card names) are left out of every split."""
    pretrained = {r["prompt"] for r in pretraining_corpus(200_000, seed=0)}
    for split in SPLIT_SIZES:
        assert not {r["prompt"] for r in load_embedded("arithmetic", split)} & pretrained


def test_arithmetic_answer_format_absent_from_corpus(corpus):
    assert not any("is the answer" in r["answer"] for r in corpus)


def _equation(record: dict[str, str]) -> tuple[int, ...]:
    """The numbers of the question and of its answer."""
    return tuple(map(int, re.findall(r"\d+", _body(record["prompt"]) + " " + record["answer"])))


def test_arithmetic_holds_out_whole_equations():
    """No test equation (the same numbers in question and answer) is ever seen in fine-tuning."""
    train = {_equation(r) for r in load_embedded("arithmetic", "train")}
    test = {_equation(r) for r in load_embedded("arithmetic", "test")}
    assert test and not train & test


def test_program_outputs_are_what_python_prints(corpus):
    records = [r for r in corpus if r["prompt"].startswith("Question: What does this Python")]
    for r in records[:500]:
        code = _body(r["prompt"]).split("\n", 1)[1]
        assert _printed(code) == r["answer"], r
    for r in load_embedded("programs", "test") + load_embedded("programs", "train")[:300]:
        first, *lines, answer_format = _body(r["prompt"]).split("\n")
        var = re.fullmatch(r"After this Python code runs, what is the value of (\w+)\?", first)[1]
        assert answer_format == f"Answer format: {var} = value"
        namespace: dict = {}
        exec("\n".join(lines), namespace)
        assert r["answer"] == f"{var} = {namespace[var]}", r


def test_function_completions_compile_and_run(corpus):
    records = [r for r in corpus if "Complete the body" in r["prompt"]][:300]
    assert records
    for r in records:
        head = _body(r["prompt"]).split("\n", 1)[1]
        namespace: dict = {}
        exec(f"{head}\n    {r['answer']}\n", namespace)
        fn = next(v for k, v in namespace.items() if callable(v) and k != "__builtins__")
        args = {"x": 7, "y": 3, "xs": [4, 1, 5], "s": "ab"}
        params = fn.__code__.co_varnames[: fn.__code__.co_argcount]
        fn(*(args[p] for p in params))


def test_corpus_families_and_formats(corpus):
    families = {r["family"] for r in corpus}
    assert families == {"commonsense", "arithmetic", "programs"}
    keyword = [r for r in corpus if "Answer format:" in r["prompt"]]
    for r in keyword[:2000]:
        allowed = _body(r["prompt"]).rsplit("Answer format: ", 1)[1].split("/")
        assert r["answer"] in allowed


def test_task_specs_and_errors():
    tasks = embedded_tasks()
    assert {n: t.scorer for n, t in tasks.items()} == {
        "commonsense": "keyword", "arithmetic": "exact", "programs": "exact",
        "sentiment": "keyword"}  # fmt: skip
    assert tasks["commonsense"].choices == ("option1", "option2")
    with pytest.raises(KeyError, match="choose from"):
        load_embedded("nope", "train")
    with pytest.raises(KeyError, match="validation"):
        load_embedded("arithmetic", "dev")


def test_gen_length_holds_every_answer_and_its_eos():
    from nara.evaluation.tasks import resolve
    from nara.models import load_model

    tokenizer = load_model("tiny").tokenizer
    for name, spec in embedded_tasks().items():
        answers = [r["answer"] for s in SPLIT_SIZES for r in load_embedded(name, s)]
        longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        assert longest + 1 <= spec.gen_length, (name, longest)
        assert resolve(f"embedded:{name}")[0].gen_length == spec.gen_length
