"""Rewards of RL completions: answer correctness by ``nara eval``'s scorers, code that passes its
tests in the sandbox, a format check, and a user's own function named ``module:function``.

Each reward maps a batch of completions to one float each; :class:`Rewards` weights and sums
them. Correctness reuses :func:`nara.evaluation.tasks.score` (the extraction and comparison that
``nara eval`` reports), so a reward of 1 means exactly what an accuracy point means.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nara.data.records import Record
from nara.evaluation import tasks
from nara.evaluation.sandbox import SandboxLimits, run_tests
from nara.training.config import ConfigError

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[Record]], list[float]]


def correctness_reward(task: tasks.Task) -> RewardFn:
    """1.0 where ``task``'s scorer judges the completion correct, else 0.0."""

    def reward(prompts: Sequence[str], completions: Sequence[str], records: Sequence[Record]):
        return [float(tasks.score(task, r, c)[1]) for r, c in zip(records, completions)]

    return reward


def code_reward(task: tasks.Task, limits: SandboxLimits | None = None) -> RewardFn:
    """1.0 where the completion passes the task's tests in nara's sandbox, else 0.0."""

    def reward(prompts: Sequence[str], completions: Sequence[str], records: Sequence[Record]):
        tests = [tasks.code_test(task, r, c) for r, c in zip(records, completions)]
        return [float(result.passed) for result in run_tests(tests, limits)]

    return reward


def format_reward(pattern: str) -> RewardFn:
    """1.0 where the whole completion (stripped) matches the regular expression ``pattern``.

    Raises:
        ConfigError: ``pattern`` is not a valid regular expression.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ConfigError(
            f"rewards.format_pattern = {pattern!r} is not a valid regular expression ({err})"
        ) from None

    def reward(prompts: Sequence[str], completions: Sequence[str], records: Sequence[Record]):
        return [float(compiled.fullmatch(c.strip()) is not None) for c in completions]

    return reward


def load_callable(spec: str) -> Callable[..., Any]:
    """The function named ``"module:function"`` (``module`` importable, ``function`` may be
    dotted, e.g. ``pkg.rewards:Scorer.score``).

    Raises:
        ConfigError: a spec without ``:``, a module that does not import, a missing attribute
            or one that is not callable; each message names the spec.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"rewards.custom = {spec!r} is not 'module:function'; e.g. my_rewards:length_penalty "
            "(the module must be importable: on PYTHONPATH or in the current folder)"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"rewards.custom = {spec!r}: module {module_name!r} cannot be imported ({err}); "
            "put it on PYTHONPATH or in the current folder"
        ) from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"rewards.custom = {spec!r}: {module_name} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"rewards.custom = {spec!r} is a {type(target).__name__}, not callable")
    return target


def custom_reward(spec: str) -> RewardFn:
    """The user function ``spec``, called as ``fn(prompts=, completions=, answers=)``, its
    result checked: one finite number per completion.

    Raises:
        ConfigError: as :func:`load_callable`.
        ValueError: at call time, a result of the wrong length or a non-finite value.
    """
    fn = load_callable(spec)

    def reward(prompts: Sequence[str], completions: Sequence[str], records: Sequence[Record]):
        out = fn(
            prompts=list(prompts),
            completions=list(completions),
            answers=[r.answer for r in records],
        )
        values = [float(v) for v in out]
        if len(values) != len(completions) or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"rewards.custom {spec} must return one finite number per completion "
                f"({len(completions)}), got {out!r}"
            )
        return values

    return reward


@dataclass
class Rewards:
    """Named reward functions and their weights; called, the weighted sum per completion.

    Attributes:
        parts: ``{name: (weight, fn)}``, only rewards with a weight > 0.
    """

    parts: dict[str, tuple[float, RewardFn]]

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], records: Sequence[Record]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total float32 (B,), {name: unweighted float32 (B,)}) for B completions."""
        values = {
            name: torch.tensor(fn(prompts, completions, records), dtype=torch.float32)
            for name, (_, fn) in self.parts.items()
        }
        total = sum(self.parts[name][0] * v for name, v in values.items())
        return total, values


def build_rewards(section: Any, task: tasks.Task, limits: SandboxLimits | None = None) -> Rewards:
    """The rewards of a recipe's ``rewards`` section (:class:`nara.rl.config.RewardSection`)
    for prompts of ``task``.

    Raises:
        ConfigError: correctness asked of a code task, code of a non-code task, a bad format
            pattern or custom callable.
    """
    is_code = task.kind in ("humaneval", "mbpp", "code")
    if section.correctness > 0 and is_code:
        raise ConfigError(
            f"rewards.correctness > 0 but {task.name} is a code task, scored by running its "
            "tests: set rewards.correctness=0 rewards.code=1"
        )
    if section.code > 0 and not is_code:
        raise ConfigError(
            f"rewards.code > 0 but {task.name} is not a code task ({task.kind}); use "
            "rewards.correctness"
        )
    parts: dict[str, tuple[float, RewardFn]] = {}
    if section.correctness > 0:
        parts["correctness"] = (section.correctness, correctness_reward(task))
    if section.code > 0:
        parts["code"] = (section.code, code_reward(task, limits))
    if section.format > 0:
        parts["format"] = (section.format, format_reward(section.format_pattern))
    if section.custom and section.custom_weight > 0:
        parts["custom"] = (section.custom_weight, custom_reward(section.custom))
    return Rewards(parts)


def load_prompts(data: Any, scorer: str | None) -> tuple[tasks.Task, list[Record]]:
    """The task and the records of a recipe's ``data`` section
    (:class:`nara.rl.config.PromptSection`), through ``nara eval``'s registry.

    Raises:
        ConfigError: a scorer given for a registered task, none for a file, or not one task.
        FileNotFoundError: the data is missing.
    """
    source = data.source
    own = source not in tasks.all_tasks() and tasks.is_file_task(source)
    if own and scorer not in tasks.SCORERS:
        raise ConfigError(
            f"data.source {source} is a data file: rewards.scorer must say how its answers are "
            f"scored, one of {', '.join(tasks.SCORERS)} ({tasks.SCORER_HELP})"
        )
    if own and not Path(source).is_file():
        raise FileNotFoundError(
            f"data.source {source}: no such file (looked for {Path(source).resolve()}); write your "
            "prompts as {prompt, answer} records there (docs/rl.md shows it for GSM8K's train split)"
        )
    if not own and scorer is not None:
        raise ConfigError(
            f"rewards.scorer={scorer} applies to a data file of your own; {source} is scored by "
            "its own rule: remove rewards.scorer"
        )
    try:
        found = tasks.resolve(source, scorer)
    except KeyError as err:
        raise ConfigError(f"data.source: {err.args[0]}") from None
    if len(found) != 1:
        raise ConfigError(
            f"data.source={source!r} names {len(found)} tasks; RL draws prompts from one task"
        )
    task = found[0]
    records = tasks.load_task(task, data.data_dir, split=data.split, columns=data.columns or None)
    if not records:
        raise ValueError(f"data.source={source!r} (split {data.split}) has no records")
    return task, records[: data.max_examples]
