"""Data mixes: ``data.source`` naming several sources joined with ``+`` (interleaved records)."""

from __future__ import annotations

import pytest
from training_support import write_jsonl

from nara.training.config import DataSection
from nara.training.data import has_split, load_source, mix_parts, split_records


def _records(tag: str, n: int) -> list[dict[str, str]]:
    return [{"prompt": f"{tag}{i}?", "answer": f"{tag}{i}"} for i in range(n)]


@pytest.fixture
def two_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", _records("a", 3))
    b = write_jsonl(tmp_path / "b.jsonl", _records("b", 5))
    return str(a), str(b)


def test_a_mix_interleaves_the_sources_then_appends_the_longer_tail(two_files):
    a, b = two_files
    answers = [r.answer for r in load_source(f"{a}+{b}", "train")]
    assert answers == ["a0", "b0", "a1", "b1", "a2", "b2", "b3", "b4"]


def test_a_single_source_is_unchanged(two_files):
    a, _ = two_files
    assert mix_parts(a) == [a]
    assert [r.answer for r in load_source(a, "train")] == ["a0", "a1", "a2"]


def test_max_examples_takes_equal_shares_of_each_source(two_files):
    a, b = two_files
    section = DataSection(source=f"{a}+{b}", max_examples=4, val_max_examples=None)
    train, val = split_records(section, seed=0)
    assert [r.answer for r in train] == ["a0", "b0", "a1", "b1"]
    assert val == []  # files have no validation split, and val_fraction is 0


def test_an_embedded_mix_holds_both_tasks_and_their_splits(two_files):
    arith = load_source("embedded:arithmetic", "validation")
    progs = load_source("embedded:programs", "validation")
    mixed = load_source("embedded:arithmetic+embedded:programs", "validation")
    assert len(mixed) == len(arith) + len(progs)
    assert mixed[0::2] == arith and mixed[1::2] == progs  # equal sizes: strict alternation
    assert has_split("embedded:arithmetic+embedded:programs", "validation")
    assert not has_split(f"embedded:arithmetic+{two_files[0]}", "validation")  # a file has none


def test_a_path_that_contains_a_plus_is_one_source(tmp_path):
    path = write_jsonl(tmp_path / "c+d.jsonl", _records("c", 2))
    assert mix_parts(str(path)) == [str(path)]
    assert len(load_source(str(path), "train")) == 2


@pytest.mark.parametrize(
    "source", ["embedded:arithmetic++embedded:programs", "embedded:arithmetic+"]
)
def test_an_empty_part_names_the_fix(source):
    with pytest.raises(ValueError, match="join sources with a single '\\+'"):
        mix_parts(source)
