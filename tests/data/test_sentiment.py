"""Sentiment classification: the synthetic embedded set (labels by an independent reader,
held-out combinations, no bag-of-words shortcut to the top score) and SST-2 from a local file in
its column layout or through the hub path (a stand-in `datasets`: no downloads)."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import tiny_model_dir  # noqa: E402,F401  (fixture)

from nara.cli import main  # noqa: E402
from nara.data.embedded import SPLIT_SIZES, embedded_tasks, generate_task, load_embedded  # noqa: E402
from nara.data.records import RecordFormatError, load_records  # noqa: E402
from nara.data.sentiment import ASPECTS, NEGATIVE, POSITIVE, sentiment_prompt  # noqa: E402
from nara.evaluation.runner import run_eval  # noqa: E402
from nara.evaluation.tasks import load_task, resolve  # noqa: E402
from nara.training.data import load_source  # noqa: E402

REVIEW = re.compile(r"^Question: Review: (.*)\nIs the sentiment of this movie review positive or negative\?\nAnswer format: positive/negative\nAnswer:\n$")  # fmt: skip
OPENER = re.compile(r"^(I saw it last week|We watched it at home|My friend picked this one)\. ")
SST2_ROWS = [("a gripping , funny film", 1), ("flat and lifeless", 0), ("i loved it", 1)]


def _review(prompt: str) -> str:
    match = REVIEW.match(prompt)
    assert match, prompt
    return OPENER.sub("", match[1])


def _clause_sentiment(clause: str) -> bool:
    """True for a positive clause: its adjective's sentiment, flipped by a negation."""
    words = clause.rstrip(".").split()
    positive = words[-1] in POSITIVE
    assert positive or words[-1] in NEGATIVE, clause
    return positive != bool({"not", "never"} & set(words))


def _deciding_clause(review: str) -> str:
    """The clause that decides, read from the connective (written apart from the generator)."""
    if review.startswith("Although "):
        return review.split(", ", 1)[1]
    if ", although " in review:
        return review.split(", although ", 1)[0]
    return review.split(", but ", 1)[-1]


def _split(name: str) -> list[tuple[str, str]]:
    return [(_review(r["prompt"]), r["answer"]) for r in load_embedded("sentiment", name)]


def test_every_label_follows_from_the_review():
    for split in SPLIT_SIZES:
        for review, answer in _split(split):
            positive = _clause_sentiment(_deciding_clause(review))
            assert answer == ("positive" if positive else "negative"), review


def test_splits_sizes_balance_and_determinism():
    assert embedded_tasks()["sentiment"].choices == ("positive", "negative")
    assert generate_task("sentiment") == generate_task("sentiment")
    for split, size in SPLIT_SIZES.items():
        answers = [a for _, a in _split(split)]
        assert len(answers) == size
        assert 0.4 < answers.count("positive") / size < 0.6


def test_test_reviews_decide_on_combinations_never_deciding_in_training():
    def keys(split: str) -> set[tuple[str, str]]:
        out = set()
        for review, _ in _split(split):
            clause = _deciding_clause(review).rstrip(".").lower()
            (aspect,) = [a for a in ASPECTS if f"the {a} " in clause]
            out.add((aspect, clause.split()[-1]))
        return out

    train, test = keys("train"), keys("test")
    assert test and not train & test
    # every word of a test review still occurs in training: the combinations are new, not words
    train_words = {w for review, _ in _split("train") for w in re.findall(r"\w+", review)}
    assert {w for review, _ in _split("test") for w in re.findall(r"\w+", review)} <= train_words


def test_bag_of_words_readers_stay_far_from_the_top_score():
    test = _split("test")

    def accuracy(read) -> float:
        return sum(read(review) == (answer == "positive") for review, answer in test) / len(test)

    def lexicon(review: str) -> bool:  # counts sentiment words, ties read as positive
        words = re.findall(r"\w+", review)
        return sum(w in POSITIVE for w in words) >= sum(w in NEGATIVE for w in words)

    def lexicon_with_negation(review: str) -> bool:  # flips on any "not"/"never"
        return lexicon(review) != bool(re.search(r"\b(not|never)\b", review))

    assert accuracy(lexicon) < 0.7
    assert accuracy(lexicon_with_negation) < 0.7
    mixed = [r for r, _ in test if ", " in r]  # contrasts: both sentiments present
    assert 0.5 < len(mixed) / len(test) < 0.8


# ---------------------------------------------------------------- SST-2


def _write_sst2(path: Path, sentence: str = "sentence", label: str = "label") -> Path:
    lines = [f"{sentence},{label}"] + [f'"{s}",{y}' for s, y in SST2_ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sst2_layout_reads_as_sentiment_records_only_by_name(tmp_path):
    path = _write_sst2(tmp_path / "dev.csv")
    records = load_records(path, "sst2")
    assert [(r.prompt, r.answer) for r in records] == [
        (sentiment_prompt(s), ("negative", "positive")[y]) for s, y in SST2_ROWS
    ]
    with pytest.raises(RecordFormatError, match="missing field 'prompt'"):
        load_records(path)  # never auto-detected: CoLA and others share the layout
    path.write_text('sentence,label\n"hidden",-1\n')
    with pytest.raises(RecordFormatError, match=r"label '-1'.*evaluate on its validation split"):
        load_records(path, "sst2")


def test_nara_eval_task_sst2_on_a_local_file_with_mapped_columns(tmp_path, capsys):
    path = _write_sst2(tmp_path / "dev.csv", sentence="text", label="sentiment")
    out = tmp_path / "ev"
    args = ["eval", "--task", "sst2", "--data", str(path), "--columns", "sentence=text,label=sentiment"]  # fmt: skip
    assert main([*args, "--oracle", "--output", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "sst2.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows] == ["positive", "negative", "positive"]
    assert all(r["correct"] for r in rows)
    # a model that always answers "negative" scores the negative share
    result = run_eval(
        None, None, "sst2", data=path, columns="sentence=text,label=sentiment",
        generate_fn=lambda prompts, n: ["negative\n"] * len(prompts),
        output_dir=tmp_path / "neg", progress=False, print_table=False,
    )  # fmt: skip
    assert result["tasks"]["sst2"]["score"] == pytest.approx(100 / 3)


def test_sst2_generated_by_a_model(tiny_model_dir, tmp_path):  # noqa: F811
    path = _write_sst2(tmp_path / "dev.csv")
    out = tmp_path / "ev"
    args = ["eval", "--model", str(tiny_model_dir), "--task", "sst2", "--data", str(path)]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "sst2.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [sentiment_prompt(s) for s, _ in SST2_ROWS]
    assert all(r["extracted"] in ("", "positive", "negative") for r in rows)


def test_sst2_through_the_hub_path(monkeypatch, tmp_path):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, split))
        return [{"idx": i, "sentence": s, "label": y} for i, (s, y) in enumerate(SST2_ROWS)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("NARA_DATA_DIR", str(tmp_path))  # no local copy there
    train = load_source("sst2", "train")  # data.source=sst2
    records = load_task(resolve("sst2")[0])  # nara eval --task sst2: its labelled split
    assert calls == [("stanfordnlp/sst2", "train"), ("stanfordnlp/sst2", "validation")]
    expected = [(sentiment_prompt(s), ("negative", "positive")[y]) for s, y in SST2_ROWS]
    assert [(r.prompt, r.answer) for r in train] == expected
    assert [(r.prompt, r.answer) for r in records] == expected
    # a local copy in the data directory wins over the hub
    (tmp_path / "sst2").mkdir()
    _write_sst2(tmp_path / "sst2" / "validation.csv")
    assert [(r.prompt, r.answer) for r in load_task(resolve("sst2")[0])] == expected
    assert len(calls) == 2


def test_classification_grid_trains_every_method_on_one_budget():
    from nara.experiments.grid import load_grid

    grid = load_grid(Path(__file__).parents[2] / "configs" / "experiments" / "classification.yaml")
    assert {spec["method"] for spec in grid.methods.values()} == {
        "base", "lora", "dora", "hira", "multi_lora", "t_lora", "nara_c", "nara", "trajectory",
        "prompt_tuning", "foura", "bottleneck", "prefix_tuning", "bitfit", "ia3",
    }  # fmt: skip
    assert grid.tasks["sentiment"]["eval"] == "embedded:sentiment" and grid.seeds == [0, 1, 2]
    budgets = {
        (r.recipe["training"]["max_steps"], r.recipe["training"]["batch_size"], r.recipe["training"]["lr"])
        for r in grid.runs()
        if r.recipe is not None
    }  # fmt: skip
    assert len(budgets) == 1
