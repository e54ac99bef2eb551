"""Answer extraction on tricky strings, numeric tolerance, and pass@k against brute force."""

import itertools
import math

import pytest

from nara.evaluation.scoring import (
    extract_choice,
    extract_letter,
    extract_number,
    numbers_match,
    pass_at_k,
)

ANSWERS = [f"answer{i}" for i in range(1, 6)]


@pytest.mark.parametrize(
    ("text", "keywords", "expected"),
    [
        ("the correct answer is true", ("true", "false"), "true"),
        ("False. It is not true that...", ("true", "false"), "false"),  # first keyword, any case
        ("That is untrue; the answer is false", ("true", "false"), "false"),  # whole words only
        ("Answer2 is right, not answer1", ANSWERS, "answer2"),
        ("the correct answer is solution2.", ("solution1", "solution2"), "solution2"),
        ("option1/option2", ("option1", "option2"), "option1"),
        ("I pick ending4", tuple(f"ending{i}" for i in range(1, 5)), "ending4"),
        ("no idea", ("true", "false"), ""),
        ("answer12", ANSWERS, ""),
    ],
)
def test_extract_choice(text, keywords, expected):
    assert extract_choice(text, keywords) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 576.", 576.0),
        ("so 5 - 3 = 2. The answer is 2.", 2.0),
        ("It costs $1,234.50 in total", 1234.5),
        ("The temperature is -7 degrees", -7.0),
        ("a change of \u221212", -12.0),
        ("That is 3/4 of the cake", 0.75),
        ("about .5 liters", 0.5),
        ("values 1,2 and 3", 3.0),
        ("1,000,000 people", 1_000_000.0),
        ("5-3", 3.0),  # a hyphen glued to a digit is not a sign
        ("+8 points", 8.0),
        ("50% of them", 50.0),
        ("divide by 0/0 then 7", 7.0),
        ("no numbers here", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_numbers_match_tolerance():
    assert numbers_match(0.6667, 0.6666666666666666)
    assert numbers_match(1e9 + 1, 1e9)  # relative tolerance for large numbers
    assert not numbers_match(0.67, 0.6666666666666666)
    assert not numbers_match(None, 3.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rationale: ... The answer is (D).", "D"),
        ("answer: c", "C"),
        ("A train goes 60 km/h. Answer choice B", "B"),
        ("(A) is wrong because ... so (E)", "E"),
        ("C) 35", "C"),
        ("B", "B"),
        ("A man walks into a bar.", ""),
        ("The answer is (A) and not (B).", "A"),  # the answer phrase wins over later letters
    ],
)
def test_extract_letter(text, expected):
    assert extract_letter(text) == expected


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 5, 2), (4, 4, 4)])
def test_pass_at_k_matches_brute_force(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    brute = sum(any(s) for s in subsets) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 3 samples"):
        pass_at_k(2, 1, 3)
