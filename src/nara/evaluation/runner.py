"""Run a benchmark (or a group): generate, score, write per-example JSONL + summary, resume.

Output layout under ``output_dir``: ``run.json`` (the run's fingerprint, see :mod:`nara.runs`),
``<task>.jsonl`` (one line per example: id, prompt, generation, extracted, gold, correct; code
tasks add per-sample sandbox outcomes), ``<task>.summary.json``, and for several tasks
``summary.json`` with the paper-style table. An interrupted run resumes (examples whose id is
already in ``<task>.jsonl`` are skipped) only when the fingerprint matches; a folder that holds
another run is refused, so reported numbers are always the run's own.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nara.data.records import Record
from nara.evaluation import scoring, tasks
from nara.evaluation.sandbox import SandboxLimits, check_isolation, run_tests
from nara.runs import SHORT_LENGTH, RunLock, claim_run_folder, fingerprint, run_fingerprint

GenerateFn = Callable[[list[str], int], list[str]]


@dataclass
class GenerationSettings:
    """Sampler settings passed to :func:`nara.diffusion.generate`.

    gen_length: tokens to generate (None = the task's default); steps: denoising steps (None =
    gen_length); block_length: None = one block; chat_template: apply the model's prompt template
    (``auto``: its tokenizer's chat template when it has one, the embedded model's
    ``Question/Answer`` format; ``never``: prompts as they are; see
    :func:`nara.data.collate.encode_prompt`); seed: of the sampling noise, drawn per batch
    (:func:`batch_seed`); the rest (``threshold``, ``cache``, ``cache_tolerance``, ``sampler``
    (None = the model family's), Dream's ``top_p``, ``top_k``, ``alg_temp``, ...) as in
    ``generate``. The sampler name and Dream's option values are checked on construction.
    """

    gen_length: int | None = None
    steps: int | None = None
    block_length: int | None = None
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cfg_scale: float = 0.0
    threshold: float | None = None
    cache: str | None = None
    cache_tolerance: float | None = None
    chat_template: str = "auto"
    seed: int = 0
    sampler: str | None = None
    top_p: float | None = None
    top_k: int | None = None
    alg_temp: float | None = None

    def __post_init__(self) -> None:
        from nara.diffusion.dream_sampling import check_sampler_values

        check_sampler_values(self.sampler, self.top_p, self.top_k, self.alg_temp)


def batch_seed(seed: int, prompts: list[str], gen_length: int) -> int:
    """The seed of one batch's sampling noise: a hash of the run's seed, the prompts and the
    answer length (63 bits). Different batches never share noise, and a batch generated again
    draws the same, so a resumed run (which regenerates a cut batch whole) writes the rows of an
    uninterrupted one."""
    text = json.dumps([seed, gen_length, prompts], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def make_generate_fn(
    model: Any, tokenizer: Any, *, mask_token_id: int, settings: GenerationSettings | None = None
) -> GenerateFn:
    """A `generate_fn(prompts, gen_length) -> texts` that runs nara's sampler on `model`.

    Prompts are formatted as in training (the model's prompt template unless
    ``settings.chat_template`` is ``never``) and left-padded (the sampler appends the answer on
    the right).
    """
    import torch

    from nara.data.collate import encode_prompt_batch
    from nara.diffusion import generate

    settings = settings or GenerationSettings()
    mode = settings.chat_template

    @torch.no_grad()
    def generate_fn(prompts: list[str], gen_length: int) -> list[str]:
        length = settings.gen_length or gen_length
        ids, mask = encode_prompt_batch(tokenizer, prompts, chat_template=mode)  # (B, P)
        device = next(model.parameters()).device
        out = generate(
            model,
            ids.to(device),
            mask.to(device),
            mask_token_id=mask_token_id,
            gen_length=length,
            steps=settings.steps or length,
            block_length=settings.block_length,
            temperature=settings.temperature,
            remasking=settings.remasking,
            cfg_scale=settings.cfg_scale,
            eos_token_id=tokenizer.eos_token_id,
            threshold=settings.threshold,
            cache=settings.cache,
            cache_tolerance=settings.cache_tolerance,
            sampler=settings.sampler,
            top_p=settings.top_p,
            top_k=settings.top_k,
            alg_temp=settings.alg_temp,
            generator=torch.Generator(device=device).manual_seed(
                batch_seed(settings.seed, prompts, length)
            ),
        )
        ids = getattr(out, "sequences", out)  # (B, gen_length)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    return generate_fn


def _read_done(path: Path, wanted: set[str]) -> list[dict]:
    """The rows already in a per-example file, checked; a torn last line is cut off.

    A last line without its newline is what a kill mid-write leaves: it is dropped with a
    warning. Any other damage (a bad line before valid ones, a duplicate id, an id that is not
    in this run's data) stops the run: rewriting the file would lose later rows.

    Raises:
        ValueError: the file is damaged or holds rows of other data (names file and line).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    rows, seen = [], set()
    for number, line in enumerate(lines, 1):
        row = _parse_row(line)
        if row is None:
            raise ValueError(
                f"{path} line {number} is damaged (not a JSON row with an id) and rows follow it; "
                "nara will not rewrite the file: repair or delete that line, or rerun with "
                "--overwrite (overwrite=True) to start the run over"
            )
        rid = str(row["id"])
        if rid in seen or rid not in wanted:
            why = "repeats an id" if rid in seen else "has an id that is not in this run's data"
            raise ValueError(
                f"{path} line {number} {why} ({rid!r}), so the file is not this run's; "
                "rerun with --overwrite (overwrite=True) or use another output folder"
            )
        seen.add(rid)
        rows.append(row)
    if torn:
        warnings.warn(
            f"{path} line {len(lines) + 1} is incomplete (the run was stopped mid-write); "
            "dropping it, that example is evaluated again",
            stacklevel=3,
        )
        with path.open("r+b") as f:
            f.truncate(len(data) - len(torn))
    return rows


def _parse_row(line: bytes) -> dict | None:
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) and "id" in row else None


def _score_text_batch(task: tasks.Task, batch: list[Record], generations: list[str]) -> list[dict]:
    rows = []
    for record, generation in zip(batch, generations):
        extracted, correct = tasks.score(task, record, generation)
        rows.append({"generation": generation, "extracted": extracted, "correct": correct})
    return rows


def _score_code_batch(
    task: tasks.Task,
    batch: list[Record],
    samples: list[list[str]],
    limits: SandboxLimits,
    workers: int | None,
) -> list[dict]:
    tests = [tasks.code_test(task, r, g) for r, gens in zip(batch, samples) for g in gens]
    results = iter(run_tests(tests, limits, workers=workers))
    rows = []
    for gens in samples:
        outcomes = [next(results) for _ in gens]
        rows.append(
            {
                "generation": gens[0],
                "extracted": outcomes[0].status,
                "correct": outcomes[0].passed,
                "n": len(gens),
                "c": sum(o.passed for o in outcomes),
                "samples": [
                    {"generation": g, "status": o.status, "details": o.details[-500:]}
                    for g, o in zip(gens, outcomes)
                ],
            }
        )
    return rows


def _summarize(task: tasks.Task, rows: list[dict], ks: Sequence[int], oracle: bool) -> dict:
    n = len(rows)
    summary: dict[str, Any] = {"task": task.name, "family": task.family, "n": n, "oracle": oracle}
    summary["correct"] = sum(bool(r["correct"]) for r in rows)
    summary["accuracy"] = 100.0 * summary["correct"] / n if n else 0.0
    if task.family == "code" and n:
        for k in ks:
            if all(r["n"] >= k for r in rows):
                summary[f"pass@{k}"] = (
                    100.0 * sum(scoring.pass_at_k(r["n"], r["c"], k) for r in rows) / n
                )
        summary["score"] = summary.get("pass@1", summary["accuracy"])
        summary["statuses"] = _count(s["status"] for r in rows for s in r["samples"])
    else:
        summary["score"] = summary["accuracy"]
    return summary


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def evaluate_task(
    task: tasks.Task,
    records: list[Record],
    output_dir: Path,
    *,
    generate_fn: GenerateFn | None,
    oracle: bool,
    batch_size: int,
    gen_length: int | None,
    n_samples: int,
    ks: Sequence[int],
    sandbox: SandboxLimits,
    workers: int | None,
    progress: bool,
    run_id: str | None = None,
) -> dict:
    """Evaluate one task on `records`, appending to ``<task>.jsonl``; returns its summary.

    Rows already in the file (same run, interrupted) are kept and their examples skipped; the
    caller makes sure the file belongs to this run (see :func:`run_eval`). Batches always follow
    the one grid of `records`, and a batch that was cut short is generated whole again (only its
    missing rows are written), so a resumed run gives the rows of an uninterrupted one even when
    sampling draws noise per batch.
    """
    isolation = check_isolation(sandbox) if task.family == "code" else None  # before generating
    path = output_dir / f"{task.name}.jsonl"
    done = _read_done(path, {str(r.meta.get("id")) for r in records})
    resumed = len(done)
    seen = {str(r["id"]) for r in done}
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    start = time.monotonic()
    from nara.progress import Progress

    bar = Progress(len(records), initial=resumed, desc=task.name, unit="ex", enabled=progress)
    with path.open("a", encoding="utf-8") as out:
        for batch in batches:
            missing = [j for j, r in enumerate(batch) if str(r.meta.get("id")) not in seen]
            if not missing:
                continue
            if oracle:
                samples = [[tasks.oracle_generation(task, r)] for r in batch]
            else:
                prompts = [r.prompt for r in batch for _ in range(n_samples)]
                flat = generate_fn(prompts, gen_length or task.gen_length)
                samples = [flat[j * n_samples : (j + 1) * n_samples] for j in range(len(batch))]
            batch, samples = [batch[j] for j in missing], [samples[j] for j in missing]
            if task.family == "code":
                rows = _score_code_batch(task, batch, samples, sandbox, workers)
            else:
                rows = _score_text_batch(task, batch, [s[0] for s in samples])
            for record, row in zip(batch, rows):
                full = {"id": record.meta.get("id"), "prompt": record.prompt, **row}
                full["gold"] = record.answer
                out.write(json.dumps(full) + "\n")
                done.append(full)
            out.flush()
            bar.update(len(batch))
    bar.close()
    summary = _summarize(task, done, ks, oracle)
    summary["n_resumed"] = resumed
    if isolation is not None:
        summary["sandbox"] = isolation  # level, layers and mode the code ran under
    summary["fingerprint"] = run_id
    summary["seconds"] = round(time.monotonic() - start, 2)
    (output_dir / f"{task.name}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(summaries: list[dict]) -> str:
    """A paper-style markdown table: one column per dataset, then the average score."""
    names = [s["task"] for s in summaries]
    scores = [s["score"] for s in summaries]
    header = "| " + " | ".join([*names, "Avg"]) + " |"
    rule = "|" + "|".join("---:" for _ in range(len(names) + 1)) + "|"
    values = [f"{v:.2f}" for v in scores] + [f"{sum(scores) / len(scores):.2f}"]
    return "\n".join([header, rule, "| " + " | ".join(values) + " |"])


def run_eval(
    model: Any | None,
    tokenizer: Any | None,
    task: str,
    *,
    output_dir: str | Path | None = None,
    data: str | Path | None = None,
    hub: str | None = None,
    oracle: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    mask_token_id: int | None = None,
    generation: GenerationSettings | None = None,
    generate_fn: GenerateFn | None = None,
    n_samples: int = 1,
    ks: Sequence[int] = (1,),
    sandbox: SandboxLimits | None = None,
    workers: int | None = None,
    progress: bool = True,
    print_table: bool = True,
    identity: Mapping[str, Any] | None = None,
    label: str | None = None,
    overwrite: bool = False,
    scorer: str | None = None,
    columns: str | Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (or the gold outputs, ``oracle=True``) on a task, alias or group.

    The output folder records the run's fingerprint (``run.json``, see :mod:`nara.runs`): the
    generator's `identity`, each task's data hash, `limit`, `oracle`, the samples and sandbox
    limits. An interrupted run resumes; a folder holding another run is refused before anything
    is generated, naming the differing fields.

    Args:
        model, tokenizer: the dLLM and its tokenizer (both None with ``oracle`` or ``generate_fn``).
        task: a task name/alias, a group (commonsense, math, code, embedded), a data file of
            one's own (.json/.jsonl/.csv, scored by `scorer`) or a comma list.
        output_dir: where the per-example JSONL and summaries go; default
            ``runs/eval/<task>-<label>-<short fingerprint>``, one folder per distinct run.
        data: data directory or the task's file (default: see :func:`tasks.data_dir`).
        hub: Hugging Face dataset name to load instead (single task only).
        oracle: score the datasets' gold outputs / canonical solutions instead of a model.
        limit: only the first `limit` examples of each task (a positive int).
        batch_size: prompts per generation call (and problems per sandbox round).
        mask_token_id: required with a model and no `generate_fn`.
        generation: sampler settings; its gen_length overrides the task defaults.
        generate_fn: `fn(prompts, gen_length) -> texts` replacing the built-in sampler call; it is
            first called after the checks, so it may load the model lazily.
        n_samples: generations per prompt (code: for pass@k); ks: the k of pass@k.
        sandbox: limits for code execution; workers: parallel sandboxes (default: CPU cores).
        identity: JSON fields that identify what generates (model and weights hash, adapter,
            sampler settings). Without it the model's name and `generation`, or the
            generate_fn's qualified name, stand in: pass it when weights change between runs.
        label: short name for the default folder (e.g. model and adapter).
        overwrite: replace the run the output folder holds instead of refusing.
        scorer: how to score a data file of one's own, by name (:data:`tasks.SCORERS`:
            keyword, number, choice, exact, code).
        columns: for one's own file, its columns mapped to record fields
            (``"prompt=question,answer=label"`` or a dict).

    Returns:
        {"tasks": {name: summary}, "average": mean score, "table": markdown table, "skipped",
        "generation", "output_dir", "fingerprint", "resumed"}.

    Raises:
        ValueError: no way to generate, no task named, a non-positive limit, batch size or
            sample count, a task without examples, or an output folder holding another run
            (:class:`nara.runs.RunFolderError`).
        FileNotFoundError: no data for a single task (or for every task of a group).
    """
    selected = _select(task, scorer)
    for name, value in (("limit", limit), ("batch_size", batch_size), ("n_samples", n_samples)):
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not oracle and generate_fn is None:
        if model is None or tokenizer is None or mask_token_id is None:
            raise ValueError(
                "run_eval needs a model, its tokenizer and mask_token_id, or generate_fn=..., "
                "or oracle=True to score the gold outputs"
            )
        generate_fn = make_generate_fn(
            model, tokenizer, mask_token_id=mask_token_id, settings=generation
        )
    n_samples = 1 if oracle else n_samples
    sandbox = sandbox or SandboxLimits()
    loaded, skipped = _load(selected, data, hub, limit, columns)
    fields = {
        "generator": {"oracle": True}
        if oracle
        else dict(identity or {}) or _default_identity(model, generation, generate_fn),
        "oracle": oracle,
        "hub": hub,
        "data_sha256": {t.name: _records_digest(records) for t, records, _ in loaded},
        "limit": limit,
        "n_samples": n_samples,
        "gen_length": generation.gen_length if generation else None,
    }
    if scorer is not None:
        fields["scorer"] = scorer
    if any(t.family == "code" for t, _, _ in loaded):
        check_isolation(sandbox)  # strict refuses here, before a folder is claimed or a model loads
        limits = {k: v for k, v in asdict(sandbox).items() if k != "mode"}  # mode changes no result
        fields["sandbox"] = json.loads(json.dumps(limits, default=str))
    if output_dir is None:
        output_dir = _default_folder(task, label or ("oracle" if oracle else "model"), fields)
    output_dir = Path(output_dir)
    digest = run_fingerprint(fields)
    with RunLock(output_dir):
        resumed = claim_run_folder(
            output_dir, fields, kind="eval", outputs=RUN_OUTPUTS, overwrite=overwrite
        )
        summaries = [
            evaluate_task(
                t,
                records[:limit],
                output_dir,
                generate_fn=generate_fn,
                oracle=oracle,
                batch_size=batch_size,
                gen_length=generation.gen_length if generation else None,
                n_samples=n_samples,
                ks=ks,
                sandbox=sandbox,
                workers=workers,
                progress=progress,
                run_id=digest,
            )
            for t, _, records in loaded
        ]
        table = format_table(summaries)
        result = {
            "tasks": {s["task"]: s for s in summaries},
            "average": sum(s["score"] for s in summaries) / len(summaries),
            "table": table,
            "skipped": skipped,
            "generation": asdict(generation) if generation else None,
            "output_dir": str(output_dir),
            "fingerprint": digest,
            "resumed": resumed,
        }
        if len(summaries) > 1:
            (output_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    if print_table:
        print(table)
    return result


RUN_OUTPUTS = ("*.jsonl", "*.summary.json", "summary.json")
DEFAULT_ROOT = Path("runs") / "eval"


def _select(task: str, scorer: str | None = None) -> list[tasks.Task]:
    selected = tasks.resolve(task, scorer)
    if not selected:
        raise ValueError(
            f"task {task!r} names no task; pass a task (boolq, gsm8k, humaneval, "
            "embedded:arithmetic, ...), a group (commonsense, math, code, embedded), a data file "
            "with --scorer, or a comma list"
        )
    return selected


def _load(
    selected: list[tasks.Task],
    data: str | Path | None,
    hub: str | None,
    limit: int | None,
    columns: str | Mapping[str, str] | None = None,
) -> tuple[list[tuple[tasks.Task, list[Record], list[Record]]], dict[str, str]]:
    """(task, all records, the first `limit`) per task with data, and the skipped tasks."""
    loaded, skipped = [], {}
    for t in selected:
        try:
            records = tasks.load_task(t, data, hub=hub, columns=columns)
        except FileNotFoundError as err:
            if len(selected) == 1:
                raise
            skipped[t.name] = str(err)  # e.g. HellaSwag, not shipped: the group runs without it
            print(f"skipping {t.name}: {err}")
            continue
        if not records:
            source = f"hub dataset {hub}" if hub else f"data under {tasks.data_dir(data)}"
            raise ValueError(
                f"task {t.name!r} has no examples ({source} is empty or blank); "
                "pass a data file that holds records with --data PATH"
            )
        ids = [str(r.meta.get("id")) for r in records]
        if len(set(ids)) < len(ids):
            repeated = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(
                f"task {t.name!r}: id {repeated!r} occurs more than once in its data; resume "
                "keys examples by id, so give every record its own id"
            )
        loaded.append((t, records, records[:limit]))
    if not loaded:
        raise FileNotFoundError(f"no data for any task of {[t.name for t in selected]}: {skipped}")
    return loaded, skipped


def _records_digest(records: list[Record]) -> str:
    """sha256 of the examples as parsed, so the data's identity does not depend on its path."""
    return fingerprint({"records": [asdict(r) for r in records]})


def _default_identity(model: Any, generation: GenerationSettings | None, fn: Any) -> dict:
    if model is not None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        return {
            "model": name or type(model).__name__,
            "generation": asdict(generation or GenerationSettings()),
        }
    return {"generate_fn": f"{fn.__module__}.{fn.__qualname__}"}


def _default_folder(task: str, label: str, fields: Mapping[str, Any]) -> Path:
    """``runs/eval/<task>-<label>-<short fingerprint>``: distinct runs never share a folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task}-{label}").strip("_.-")[:80]
    return DEFAULT_ROOT / f"{slug}-{run_fingerprint(fields, length=SHORT_LENGTH)}"
