"""Records: one prompt with its gold answer, loaded from the benchmark file formats nara supports.

Formats (each record is an object; a file is a JSON list of them, one JSON object per line, or a
CSV file with a header row):

- ``llm-adapters``: ``{instruction, input, output, answer}`` (LLM-Adapters test/train sets).
- ``prompt-answer``: ``{prompt, answer}`` with an optional ``target`` (training text).
- ``humaneval``: ``{task_id, prompt, canonical_solution, test, entry_point}``.
- ``mbpp``: ``{task_id, text, code, test_list}`` with optional ``test_setup_code``.
- ``sst2``: ``{sentence, label}`` (SST-2, label 0 negative / 1 positive), prompted with
  :func:`nara.data.sentiment.sentiment_prompt`; never auto-detected (other tasks share the
  layout): chosen by name, as the ``sst2`` task and the ``sst2`` hub source do.

Other column names are mapped with ``columns`` (``{"prompt": "question", "answer": "label"}``,
written ``prompt=question,answer=label`` on a command line): each named column is renamed to the
format's field before the format is detected.

Every malformed record raises :class:`RecordFormatError` naming the file, the record (and line)
and the problem, and saying which format was expected.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nara.data.sentiment import SST2_HUB, SST2_NAMES, sentiment_prompt, sst2_label
from nara.data.templates import llm_adapters_prompt, mbpp_prompt


@dataclass
class Record:
    """One example.

    prompt: the text the model sees (already templated).
    answer: the gold label used for scoring ("true", "answer3", "18.0", "C"; for code the
        reference solution).
    target: the text a model is trained to produce (e.g. a worked solution), or None.
    meta: anything else (``id`` is used to resume evaluations; code tasks keep their tests here).
    """

    prompt: str
    answer: str
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class RecordFormatError(ValueError):
    """A data file or record does not have the expected format."""


@dataclass(frozen=True)
class _Format:
    required: dict[str, type | tuple[type, ...]]
    optional: dict[str, type | tuple[type, ...]]
    build: Callable[[dict[str, Any], str], Record]
    detected: bool = True  # chosen by format="auto" when the required fields are there

    def describe(self, name: str) -> str:
        fields = ", ".join([*self.required, *(f"{k}?" for k in self.optional)])
        return f"'{name}' records {{{fields}}}, as a JSON list, one JSON object per line or CSV"


def _llm_adapters(raw: dict[str, Any], rid: str) -> Record:
    prompt = llm_adapters_prompt(raw["instruction"], raw["input"])
    meta = {"id": rid, "instruction": raw["instruction"], "input": raw["input"]}
    return Record(prompt, str(raw["answer"]), raw["output"], meta)


def _prompt_answer(raw: dict[str, Any], rid: str) -> Record:
    return Record(raw["prompt"], str(raw["answer"]), raw.get("target"), {"id": rid})


def _humaneval(raw: dict[str, Any], rid: str) -> Record:
    meta = {"id": raw["task_id"], "test": raw["test"], "entry_point": raw["entry_point"]}
    solution = raw["canonical_solution"]
    return Record(raw["prompt"], solution, solution, meta)


def _mbpp(raw: dict[str, Any], rid: str) -> Record:
    meta = {
        "id": str(raw["task_id"]),
        "tests": raw["test_list"],
        "setup": raw.get("test_setup_code") or "",
        "text": raw["text"],
    }
    return Record(mbpp_prompt(raw["text"], raw["test_list"]), raw["code"], raw["code"], meta)


def _sst2(raw: dict[str, Any], rid: str) -> Record:
    try:
        answer = sst2_label(raw["label"], f"record {rid}")
    except ValueError as err:
        raise RecordFormatError(str(err)) from None
    return Record(sentiment_prompt(raw["sentence"]), answer, None, {"id": str(raw.get("idx", rid))})


_NUMBER_OR_STR = (str, int, float)
FORMATS: dict[str, _Format] = {
    "llm-adapters": _Format(
        {"instruction": str, "input": str, "output": str, "answer": _NUMBER_OR_STR},
        {},
        _llm_adapters,
    ),
    "prompt-answer": _Format(
        {"prompt": str, "answer": _NUMBER_OR_STR}, {"target": str}, _prompt_answer
    ),
    "humaneval": _Format(
        {"task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str},
        {},
        _humaneval,
    ),
    "mbpp": _Format(
        {"task_id": (int, str), "text": str, "code": str, "test_list": list},
        {"test_setup_code": str},
        _mbpp,
    ),
    "sst2": _Format({"sentence": str, "label": (int, str)}, {"idx": (int, str)}, _sst2, False),
}


def read_raw_records(path: Path) -> list[tuple[str, Any]]:
    """(location, parsed object) pairs from a JSON list, a JSONL or a CSV file, before any
    record format is checked (record parsers of other shapes, e.g. preference pairs, start
    from these)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"data file not found: {path}") from err
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(text, newline=""))
        return [(f"row {i} (line {rows.line_num})", dict(row)) for i, row in enumerate(rows)]
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordFormatError(
                f"{path}: invalid JSON ({err}); expected a JSON list of records or one JSON "
                "object per line"
            ) from err
        return [(f"record {i}", item) for i, item in enumerate(items)]
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.append((f"record {len(pairs)} (line {number})", json.loads(line)))
        except json.JSONDecodeError as err:
            raise RecordFormatError(
                f"{path}: line {number} is not valid JSON ({err.msg}); expected a JSON list of "
                "records or one JSON object per line"
            ) from err
    return pairs


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``{field: column}`` from a mapping or a ``field=column,field=column`` string.

    Raises:
        ValueError: an entry that is not ``field=column``, a field that no format has (a mapping
            written column=field), or a field or column named twice.
    """
    if spec is None or spec == "":
        return {}
    if isinstance(spec, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in spec.items()]
    else:
        pairs = []
        for item in str(spec).split(","):
            field_name, sep, column = item.partition("=")
            if not sep or not field_name.strip() or not column.strip():
                raise ValueError(
                    f"column mapping {spec!r}: {item!r} is not field=column; write e.g. "
                    "prompt=question,answer=label"
                )
            pairs.append((field_name.strip(), column.strip()))
    fields = [f for f, _ in pairs]
    columns = [c for _, c in pairs]
    known = sorted({k for fmt in FORMATS.values() for k in (*fmt.required, *fmt.optional)})
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise ValueError(
            f"column mapping {spec!r} maps to {unknown[0]!r}, which is no record field; write "
            f"field=column (e.g. prompt=question,answer=label) with a field among {known}"
        )
    for names, what in ((fields, "field"), (columns, "column")):
        repeated = [n for n in names if names.count(n) > 1]
        if repeated:
            raise ValueError(f"column mapping {spec!r} names the {what} {repeated[0]!r} twice")
    return dict(pairs)


def _rename(raw: Any, columns: dict[str, str], where: str) -> Any:
    """``raw`` with each mapped column renamed to its field."""
    if not columns or not isinstance(raw, dict):
        return raw
    missing = [c for c in columns.values() if c not in raw]
    if missing:
        raise RecordFormatError(
            f"{where}: no column {missing[0]!r} to map (the mapping is {columns}); the record's "
            f"columns are {sorted(raw)}"
        )
    renamed = {k: v for k, v in raw.items() if k not in columns.values()}
    renamed.update({f: raw[c] for f, c in columns.items()})
    return renamed


def _detect(first: Any) -> str:
    keys = set(first) if isinstance(first, dict) else set()
    for name, fmt in FORMATS.items():
        if fmt.detected and set(fmt.required) <= keys:
            return name
    return "prompt-answer"  # the simplest format: its error message lists what is missing


def _check(raw: Any, fmt: _Format, name: str, where: str) -> None:
    expected = f"expected {fmt.describe(name)}"
    if not isinstance(raw, dict):
        raise RecordFormatError(f"{where} is a {type(raw).__name__}, not a JSON object; {expected}")
    for key, kinds in [*fmt.required.items(), *fmt.optional.items()]:
        if key not in raw:
            if key in fmt.required:
                raise RecordFormatError(
                    f"{where}: missing field '{key}'; {expected} (other column names: map them, "
                    f"e.g. data.columns / --columns {key}=<column>)"
                )
            continue
        value = raw[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise RecordFormatError(
                f"{where}: field '{key}' is a {type(value).__name__} ({value!r:.60}); {expected}"
            )


def parse_records(
    items: Iterable[tuple[str, Any]],
    format: str = "auto",
    *,
    source: str = "<records>",
    columns: str | Mapping[str, str] | None = None,
) -> list[Record]:
    """Validate and convert raw JSON objects, given as (location, object) pairs, to Records;
    ``columns`` renames columns to fields first (see :func:`parse_columns`).

    Raises:
        RecordFormatError: a record is not an object, misses a field or a mapped column, or has
            a wrong type.
        ValueError: unknown format name, or a malformed column mapping.
    """
    mapping = parse_columns(columns)
    items = [(where, _rename(raw, mapping, f"{source}: {where}")) for where, raw in items]
    if format == "auto":
        format = _detect(items[0][1]) if items else "prompt-answer"
    if format not in FORMATS:
        raise ValueError(f"unknown record format {format!r}; choose one of {sorted(FORMATS)}")
    fmt = FORMATS[format]
    records = []
    for index, (location, raw) in enumerate(items):
        _check(raw, fmt, format, f"{source}: {location}")
        records.append(fmt.build(raw, str(index)))
    return records


def load_records(
    path: str | Path, format: str = "auto", *, columns: str | Mapping[str, str] | None = None
) -> list[Record]:
    """Load a JSON-list, JSONL or CSV file of records in one of :data:`FORMATS` (auto-detected),
    with ``columns`` mapped to fields first.

    Raises:
        FileNotFoundError: no such file.
        RecordFormatError: malformed file or record (the message names file, record and field).
    """
    path = Path(path)
    return parse_records(read_raw_records(path), format, source=str(path), columns=columns)


def require_datasets(name: str) -> Any:
    """The ``datasets`` module, needed to load the hub dataset ``name``.

    Raises:
        ImportError: ``datasets`` is not installed (naming the dataset and the install command).
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{name!r} is read as a Hugging Face dataset name (no such local file), and loading "
            "from the hub needs `datasets`: pip install 'nara-peft[hub]'; for a local file, give "
            "its path with a .json, .jsonl or .csv suffix"
        ) from err
    return datasets


def load_hub(
    name: str,
    *,
    split: str = "test",
    format: str = "auto",
    config: str | None = None,
    columns: str | Mapping[str, str] | None = None,
) -> list[Record]:
    """Load records from a Hugging Face dataset (needs `datasets` and network access).

    The dataset's columns must match one of :data:`FORMATS`; SST-2 (``sst2``, ``sst-2`` or
    its hub name) is read in the ``sst2`` format.
    """
    if name.lower() in SST2_NAMES and format == "auto":
        name, format = SST2_HUB, "sst2"
    datasets = require_datasets(name)
    rows = datasets.load_dataset(name, config, split=split)
    return parse_records(
        ((f"row {i}", dict(row)) for i, row in enumerate(rows)),
        format,
        source=f"hub:{name}",
        columns=columns,
    )
