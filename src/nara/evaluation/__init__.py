"""Benchmarks the NaRA paper reports: tasks, answer scoring, the code sandbox and the runner."""

from nara.evaluation.runner import GenerationSettings, format_table, make_generate_fn, run_eval
from nara.evaluation.sandbox import (
    CodeTest,
    ExecutionResult,
    SandboxLimits,
    SandboxUnavailable,
    check_isolation,
    isolation,
    isolation_report,
    run_program,
    run_programs,
    run_test,
    run_tests,
)
from nara.evaluation.scoring import (
    extract_choice,
    extract_letter,
    extract_number,
    numbers_match,
    pass_at_k,
)
from nara.evaluation.tasks import GROUPS, TASKS, Task, all_tasks, data_dir, load_task, resolve

__all__ = [
    "GROUPS",
    "TASKS",
    "CodeTest",
    "ExecutionResult",
    "GenerationSettings",
    "SandboxLimits",
    "SandboxUnavailable",
    "Task",
    "all_tasks",
    "check_isolation",
    "data_dir",
    "extract_choice",
    "extract_letter",
    "extract_number",
    "format_table",
    "isolation",
    "isolation_report",
    "load_task",
    "make_generate_fn",
    "numbers_match",
    "pass_at_k",
    "resolve",
    "run_eval",
    "run_program",
    "run_programs",
    "run_test",
    "run_tests",
]
