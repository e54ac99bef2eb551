"""RL rewards against hand-made completions: nara eval's scorers, the sandbox, a format pattern,
a user's module:function, and the errors for what cannot work."""

from __future__ import annotations

import pytest
import torch

from nara.data.records import Record
from nara.evaluation import tasks
from nara.rl.config import RewardSection
from nara.rl.rewards import build_rewards, custom_reward, format_reward, load_callable
from nara.training.config import ConfigError

ARITHMETIC = tasks.all_tasks()["embedded:arithmetic"]


def _records(*answers: str) -> list[Record]:
    return [Record(f"question {i}", a, a, {"id": str(i)}) for i, a in enumerate(answers)]


def test_correctness_and_format_weighted_against_hand_made_completions():
    records = _records("The answer is 11.", "The answer is 11.", "The answer is 3.", "x")
    completions = [
        "The answer is 11.",  # right, well-formed
        "The answer is 12.",  # wrong, well-formed
        "the answer is 3",  # exact scorer: not the gold line; format: no
        "The answer is 7.\nmore",  # first line differs from gold "x"; format: no (two lines)
    ]
    section = RewardSection(correctness=1.0, format=0.5, format_pattern=r"The answer is -?\d+\.")
    rewards = build_rewards(section, ARITHMETIC)
    total, parts = rewards(["q"] * 4, completions, records)
    assert parts["correctness"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert parts["format"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert total.tolist() == [1.5, 0.5, 0.0, 0.0]


def test_number_scorer_of_a_file_task_takes_the_last_number(tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text('{"prompt": "3+4=", "answer": "7"}\n')
    task = tasks.file_task(path, "number")
    rewards = build_rewards(RewardSection(), task)
    total, _ = rewards(["3+4="] * 3, ["3 + 4 = 7", "it is 7.0", "7 or 8"], _records("7", "7", "7"))
    assert total.tolist() == [1.0, 1.0, 0.0]


def test_code_reward_runs_the_tests_in_the_sandbox():
    mbpp = tasks.all_tasks()["mbpp"]
    record = tasks.load_task(mbpp)[0]
    right, wrong = record.answer, "def remove_Occ(s, ch):\n    return s\n"
    rewards = build_rewards(RewardSection(correctness=0.0, code=1.0), mbpp)
    total, parts = rewards([record.prompt] * 2, [right, wrong], [record, record])
    assert parts["code"].tolist() == [1.0, 0.0] and total.tolist() == [1.0, 0.0]


def test_a_user_reward_named_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def shorter(prompts, completions, answers):\n"
        "    return [1.0 / (1 + len(c)) for c in completions]\n"
        "def broken(prompts, completions, answers):\n"
        "    return [1.0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    section = RewardSection(correctness=0.0, custom="my_rewards:shorter", custom_weight=2.0)
    total, parts = build_rewards(section, ARITHMETIC)(["q", "q"], ["abc", ""], _records("1", "2"))
    torch.testing.assert_close(parts["custom"], torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(total, torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="one finite number per completion"):
        custom_reward("my_rewards:broken")(["q", "q"], ["a", "b"], _records("1", "2"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("my_rewards", "is not 'module:function'"),
        ("no_such_module_xyz:fn", "cannot be imported"),
        ("json:no_such_function", "has no 'no_such_function'"),
        ("json:__name__", "not callable"),
    ],
)
def test_an_unknown_callable_is_a_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_callable(spec)


def test_rewards_that_do_not_fit_the_task_are_refused():
    with pytest.raises(ConfigError, match="code task"):
        build_rewards(RewardSection(), tasks.all_tasks()["mbpp"])
    with pytest.raises(ConfigError, match="not a code task"):
        build_rewards(RewardSection(code=1.0), ARITHMETIC)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        format_reward("The answer is (")
    with pytest.raises(ConfigError, match="format_pattern"):
        RewardSection(format=1.0)
    with pytest.raises(ConfigError, match="weight 0"):
        RewardSection(correctness=0.0)
