"""The benchmark registry: one table row per task, groups, data location and per-kind scoring.

Every task has a *kind* that says how a generation is scored (``choice``, ``number``, ``letter``,
``humaneval``, ``mbpp``, or an embedded scorer) and where its data lives relative to the data
directory. A user's own file is a task too (:func:`file_task`): its path names it, and a scorer
chosen by name (:data:`SCORERS`) says how to score it. Data directory, in order: an explicit path, ``$NARA_DATA_DIR``, then ``../shared/data``
from the current directory or any parent (the project root in a checkout beside ``shared/``).
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from nara.data.records import Record, load_hub, load_records
from nara.data.sentiment import LABELS, SST2_HUB
from nara.evaluation import scoring
from nara.evaluation.sandbox import CodeTest


@dataclass(frozen=True)
class Task:
    """One benchmark.

    name: registry name (the LLM-Adapters folder name for those tasks).
    family: "commonsense" | "math" | "code" | "embedded" (also the group it belongs to).
    kind: scoring kind, see module docstring.
    path: data file relative to the data directory.
    keywords: answer keywords for ``choice`` tasks.
    aliases: other accepted names.
    gen_length: default number of tokens to generate.
    own_file: a user's data file (``path`` is the file itself, see :func:`file_task`).
    format: the record format of its data (:data:`nara.data.records.FORMATS`; auto-detected).
    hub: the Hugging Face dataset read when no local copy is found (None: a local copy is needed).
    split: the split scored (SST-2's test labels are hidden: it scores validation).
    """

    name: str
    family: str
    kind: str
    path: str
    keywords: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    gen_length: int = 32
    own_file: bool = False
    format: str = "auto"
    hub: str | None = None
    split: str = "test"


def _numbered(word: str, count: int) -> tuple[str, ...]:
    return tuple(f"{word}{i}" for i in range(1, count + 1))


def _la(name: str) -> str:
    return f"llm-adapters/{name}/test.json"


# LLM-Adapters matches answer1..answer5 for every "answer" task; we keep its keyword sets.
_TABLE: list[Task] = [
    Task("boolq", "commonsense", "choice", _la("boolq"), ("true", "false")),
    Task("piqa", "commonsense", "choice", _la("piqa"), _numbered("solution", 2)),
    Task("social_i_qa", "commonsense", "choice", _la("social_i_qa"), _numbered("answer", 5), ("siqa",)),
    Task("hellaswag", "commonsense", "choice", _la("hellaswag"), _numbered("ending", 4)),
    Task("winogrande", "commonsense", "choice", _la("winogrande"), _numbered("option", 2)),
    Task("ARC-Easy", "commonsense", "choice", _la("ARC-Easy"), _numbered("answer", 5), ("arc_e",)),
    Task("ARC-Challenge", "commonsense", "choice", _la("ARC-Challenge"), _numbered("answer", 5), ("arc_c",)),
    Task("openbookqa", "commonsense", "choice", _la("openbookqa"), _numbered("answer", 5), ("obqa",)),
    *(
        Task(name, "math", "number", _la(name), gen_length=256)
        for name in ("gsm8k", "SVAMP", "MultiArith", "AddSub", "SingleEq", "mawps")
    ),
    Task("AQuA", "math", "letter", _la("AQuA"), gen_length=256),
    Task("humaneval", "code", "humaneval", "code/humaneval.jsonl", gen_length=512),
    Task("mbpp", "code", "mbpp", "code/mbpp.jsonl", gen_length=512),
    # the label word generated and scored (nara.data.sentiment); `positive` is 6 tiny-BPE tokens
    Task("sst2", "classification", "choice", "sst2/validation.csv", LABELS, ("sst-2",),
         gen_length=8, format="sst2", hub=SST2_HUB, split="validation"),
]  # fmt: skip
GROUPS: dict[str, list[str]] = {}
for _task in _TABLE:
    GROUPS.setdefault(_task.family, []).append(_task.name)
TASKS: dict[str, Task] = {t.name: t for t in _TABLE}
_ALIASES = {alias.lower(): t.name for t in _TABLE for alias in (t.name, *t.aliases)}


_EMBEDDED_KINDS = {"keyword": "choice", "number": "number", "exact": "exact"}


def _embedded_tasks() -> dict[str, Task]:
    """Tasks of the embedded suite (nara.data.embedded), named ``embedded:<task>`` like the
    training data source, so they never collide with the benchmark groups."""
    from nara.data.embedded import embedded_tasks

    return {
        f"embedded:{name}": Task(
            f"embedded:{name}",
            "embedded",
            _EMBEDDED_KINDS[spec.scorer],
            path=f"embedded:{name}",
            keywords=spec.choices,
            gen_length=spec.gen_length,
        )
        for name, spec in embedded_tasks().items()
    }


def all_tasks() -> dict[str, Task]:
    """Every registered task (the table plus the embedded suite when available)."""
    return {**TASKS, **_embedded_tasks()}


# scorer name -> scoring kind; the names a user picks for a file of their own (--scorer)
SCORERS: dict[str, str] = {
    "keyword": "choice",
    "number": "number",
    "choice": "letter",
    "exact": "exact",
    "code": "code",
}
SCORER_HELP = (
    "keyword: the first of the file's gold answers that the generation names (true/false, "
    "option1/option2, ...); number: the last number, compared numerically; choice: an option "
    "letter A-E; exact: the first line equals the answer; code: HumanEval/MBPP records, their "
    "tests run in the sandbox"
)
FILE_SUFFIXES = (".json", ".jsonl", ".csv")


def is_file_task(name: str) -> bool:
    """Whether a --task value names a data file (by its suffix, or an existing file)."""
    return Path(name).suffix.lower() in FILE_SUFFIXES or Path(name).is_file()


def file_task(path: str | Path, scorer: str | None) -> Task:
    """A task for a user's own data file, scored by the scorer named ``scorer``.

    Raises:
        ValueError: no scorer or an unknown one (listing them with what each does).
        FileNotFoundError: the file is not there.
    """
    if scorer not in SCORERS:
        given = "no --scorer" if scorer is None else f"--scorer {scorer!r}"
        raise ValueError(
            f"--task {path} is your own data file and {given} says how to score it; pass "
            f"--scorer {'|'.join(SCORERS)} ({SCORER_HELP})"
        )
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"--task {path}: no such data file (looked for {Path(path).resolve()}); give the path "
            "of a .json, .jsonl or .csv file of {prompt, answer} records"
        )
    kind = SCORERS[scorer]
    family = "code" if kind == "code" else "custom"
    length = 512 if kind == "code" else 32
    return Task(Path(path).stem, family, kind, str(path), gen_length=length, own_file=True)


def resolve(name: str, scorer: str | None = None) -> list[Task]:
    """The tasks named by a task name, alias or group (``commonsense``, ``math``, ``code``,
    ``embedded``), a data file of one's own (scored by ``scorer``), or comma-separated names.

    Raises:
        KeyError: unknown name (the message lists the valid ones).
        ValueError, FileNotFoundError: a data file without a valid scorer, or missing.
    """
    tasks = all_tasks()
    groups = {**GROUPS, "embedded": [n for n, t in tasks.items() if t.family == "embedded"]}
    found: list[Task] = []
    for part in (p.strip() for p in name.split(",") if p.strip()):
        if part not in tasks and is_file_task(part):
            found.append(file_task(part, scorer))
        elif part.lower() in groups and groups[part.lower()]:
            found += [tasks[n] for n in groups[part.lower()]]
        elif part in tasks or part.lower() in _ALIASES:
            found.append(tasks.get(part) or tasks[_ALIASES[part.lower()]])
        else:
            valid = sorted([*groups, *tasks])
            raise KeyError(f"unknown task {part!r}; choose from {valid} (or comma-separate them)")
    if scorer is not None and not any(t.own_file for t in found):
        raise ValueError(
            f"--scorer {scorer} applies to a data file of your own (--task path.jsonl); "
            f"{name!r} is scored by its own rule"
        )
    return found


def data_dir(explicit: str | Path | None = None) -> Path:
    """The benchmark data directory (see module docstring).

    Raises:
        FileNotFoundError: none found; pass --data PATH or set NARA_DATA_DIR.
    """
    if explicit is not None:
        return Path(explicit)
    if env := os.environ.get("NARA_DATA_DIR"):
        return Path(env)
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "no benchmark data directory found: pass --data PATH (data_dir=...), set NARA_DATA_DIR, "
        "or run from a project checked out beside shared/data"
    )


def load_task(
    task: Task,
    data: str | Path | None = None,
    *,
    split: str | None = None,
    hub: str | None = None,
    columns: str | dict[str, str] | None = None,
) -> list[Record]:
    """Records of the task's `split` (default: the one it scores): from `data` (a data directory
    or the task's file itself), or from the Hugging Face dataset `hub` (LLM-Adapters columns;
    a task with its own ``hub`` reads it when no local copy is found), or the embedded suite;
    `columns` maps a file's or dataset's columns to record fields (``prompt=question,answer=label``).

    Raises:
        FileNotFoundError: the task's file is missing (HellaSwag is not shipped: pass its path).
    """
    split = split or task.split
    if task.own_file:
        records = load_records(task.path, columns=columns)
        if task.kind == "code" and not all({"test", "tests"} & r.meta.keys() for r in records):
            raise ValueError(
                f"--scorer code needs HumanEval records {{task_id, prompt, canonical_solution, "
                f"test, entry_point}} or MBPP records {{task_id, text, code, test_list}}; "
                f"{task.path} holds other records"
            )
        if task.kind == "choice":  # the keywords of a file of one's own: its distinct answers
            keywords = tuple(sorted({r.answer.strip().lower() for r in records}))
            for record in records:
                record.meta["keywords"] = keywords
        return records
    if task.family == "embedded":
        from nara.data.embedded import load_embedded

        name = task.name.removeprefix("embedded:")
        rows = load_embedded(name, split)
        return [
            Record(r["prompt"], r["answer"], r["answer"], {"id": f"{name}-{split}-{i}"})
            for i, r in enumerate(rows)
        ]
    if hub is None and data is None and task.hub is not None and not _has_local_copy(task, split):
        hub = task.hub
    if hub is not None:
        return load_hub(hub, split=split, format=task.format, columns=columns)
    root = data_dir(data)
    path = root if root.is_file() else root / _split_path(task, split)
    if not path.exists():
        raise FileNotFoundError(
            f"data for task {task.name!r} not found at {path}; pass its file or data directory "
            "with --data PATH, set NARA_DATA_DIR, or load it from the hub"
        )
    return load_records(path, task.format, columns=columns)


def _split_path(task: Task, split: str) -> str:
    """The task's file of `split`, relative to the data directory."""
    return task.path.replace(f"/{task.split}.", f"/{split}.")


def _has_local_copy(task: Task, split: str) -> bool:
    """Whether the default data directory holds the task's file of `split`."""
    try:
        return (data_dir() / _split_path(task, split)).is_file()
    except FileNotFoundError:  # no data directory at all
        return False


def oracle_generation(task: Task, record: Record) -> str:
    """The gold output fed through the scorer by ``--oracle``.

    Commonsense and code use the dataset's own gold output / canonical solution. The math test
    sets' ``output`` fields are model-written rationales, not gold (some reach a wrong number), so
    the math oracle states the gold answer in the format the scorer expects.
    """
    if _kind(task, record) == "number":
        return f"The answer is {record.answer}."
    if _kind(task, record) == "letter":
        return f"The answer is ({record.answer})."
    return record.target if record.target is not None else record.answer


def _kind(task: Task, record: Record) -> str:
    """Scoring kind of a task's records (a code file of one's own: by each record's format)."""
    if task.kind == "code":
        return "humaneval" if "entry_point" in record.meta else "mbpp"
    return task.kind


def score(task: Task, record: Record, generation: str) -> tuple[str, bool]:
    """(extracted answer, correct?) for a generation of a non-code task.

    Raises:
        ValueError: `task` is a code task (those are scored by running them, see :func:`program`).
    """
    kind, gold = _kind(task, record), record.answer
    if kind == "choice":
        keywords = record.meta.get("keywords", task.keywords)
        predicted = scoring.extract_choice(generation, keywords)
        return predicted, predicted == gold.strip().lower()
    if kind == "number":
        value = scoring.extract_number(generation)
        return ("" if value is None else f"{value:g}"), scoring.numbers_match(value, float(gold))
    if kind == "letter":
        predicted = scoring.extract_letter(generation)
        return predicted, predicted == gold.strip().upper()
    if kind == "exact":
        predicted = generation.strip().split("\n", 1)[0].strip() if generation.strip() else ""
        return predicted, predicted == gold.strip()
    raise ValueError(f"task {task.name} ({kind}) is scored by running code, not extraction")


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)
_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def completion_code(generation: str) -> str:
    """The code in a generation: the first fenced block if any, else the text as written."""
    fenced = _FENCE.search(generation)
    return fenced.group(1) if fenced else generation


def program(task: Task, record: Record, generation: str) -> str:
    """The full test program for a code task: solution + tests (+ HumanEval's check call)."""
    test = code_test(task, record, generation)
    return f"{test.solution}\n\n{test.tests}"


def code_test(task: Task, record: Record, generation: str) -> CodeTest:
    """The solution and its tests for a code task, kept apart for the sandbox's judge.

    HumanEval: a generation that defines the entry point itself (an instruct model answering with
    the whole function) is used as is after the prompt; otherwise it is the function body,
    continued from the prompt and cut at the first top-level statement after it. The tests run
    beside the prompt's own helper functions and take only the entry point from the solution.
    MBPP: the tests (setup + asserts; the setup may use the code) take from the solution the
    names the gold code defines (a task may name its function ``sum``: the tests then call the
    solution's, while every other builtin they use stays the judge's own).
    """
    code = completion_code(generation)
    kind = _kind(task, record)
    if kind == "humaneval":
        entry = record.meta["entry_point"]
        if not re.search(rf"^def {re.escape(entry)}\s*\(", code, re.MULTILINE):
            code = _cut(code)
        tests = f"{record.meta['test']}\n\ncheck({entry})\n"
        return CodeTest(f"{record.prompt}{code}", tests, context=record.prompt, names=(entry,))
    if kind == "mbpp":
        tests = f"{record.meta['setup']}\n" + "\n".join(record.meta["tests"]) + "\n"
        with warnings.catch_warnings():  # some gold code has invalid escapes ("\w"): not ours
            warnings.simplefilter("ignore")
            gold = ast.parse(record.answer).body
        defined = {n.name for n in gold if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        names = tuple(sorted(n for n in defined if re.search(rf"\b{re.escape(n)}\b", tests)))
        return CodeTest(code, tests, names=names)
    raise ValueError(f"task {task.name} is not a code task")


def _cut(body: str) -> str:
    """Cut a function-body completion at the first top-level stop sequence."""
    cut = min((i for s in _STOPS if (i := body.find(s)) >= 0), default=len(body))
    return body[:cut]
