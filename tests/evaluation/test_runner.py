"""run_eval: outputs, resume of the same run only (torn and damaged files, other runs refused),
default folders, bad inputs, wrong code fails, tables."""

import json
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from nara.data.records import load_records
from nara.evaluation import resolve, run_eval
from nara.evaluation.tasks import data_dir, program
from nara.runs import RunFolderError, RunLock, fingerprint


def make_data(tmp_path):
    rows = [
        {
            "instruction": f"Is {i} even? Answer format: true/false",
            "input": "",
            "output": f"the correct answer is {str(i % 2 == 0).lower()}",
            "answer": str(i % 2 == 0).lower(),
        }
        for i in range(10)
    ]
    (tmp_path / "llm-adapters" / "boolq").mkdir(parents=True)
    (tmp_path / "llm-adapters" / "boolq" / "test.json").write_text(json.dumps(rows))
    return tmp_path


def always_true(prompts, gen_length):
    return ["the correct answer is true"] * len(prompts)


def test_outputs_and_scores_with_a_generate_fn(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    result = run_eval(
        None,
        None,
        "boolq",
        output_dir=out,
        data=data,
        generate_fn=always_true,
        progress=False,
        print_table=False,
    )
    assert result["tasks"]["boolq"]["accuracy"] == 50.0
    rows = [json.loads(line) for line in (out / "boolq.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and set(rows[0]) >= {
        "id",
        "prompt",
        "generation",
        "extracted",
        "gold",
        "correct",
    }
    assert json.loads((out / "boolq.summary.json").read_text())["correct"] == 5


def evaluate(out, data, generate_fn=always_true, **kwargs):
    """run_eval on the boolq fixture with a fixed generator identity (override per test)."""
    kwargs.setdefault("identity", {"model": "always-true"})
    return run_eval(
        None,
        None,
        kwargs.pop("task", "boolq"),
        output_dir=out,
        data=data,
        generate_fn=generate_fn,
        progress=False,
        print_table=False,
        **kwargs,
    )


def test_resume_skips_done_ids_and_drops_a_torn_line(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    calls = []

    def dies_on_third_call(prompts, gen_length):
        calls.extend(prompts)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return always_true(prompts, gen_length)

    with pytest.raises(KeyboardInterrupt):
        evaluate(out, data, dies_on_third_call, batch_size=3)
    path = out / "boolq.jsonl"
    assert len(path.read_text().splitlines()) == 6
    path.write_text(path.read_text() + '{"id": "6", "prom')  # killed mid-write
    calls.clear()

    def counting(prompts, gen_length):
        calls.extend(prompts)
        return always_true(prompts, gen_length)

    with pytest.warns(UserWarning, match="boolq.jsonl line 7 is incomplete"):
        result = evaluate(out, data, counting, batch_size=3)
    assert len(calls) == 4  # ids 6..9 only
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == [str(i) for i in range(10)]
    summary = result["tasks"]["boolq"]
    assert (summary["n"], summary["n_resumed"], summary["correct"]) == (10, 6, 5)
    assert result["resumed"] is True


KILLED_RUN = """
import os, signal, sys
from nara.evaluation import run_eval
calls = []
def gen(prompts, gen_length):
    calls.append(prompts)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, lock held, file open
    return ["the correct answer is true"] * len(prompts)
run_eval(None, None, "boolq", output_dir=sys.argv[1], data=sys.argv[2], generate_fn=gen,
         batch_size=3, identity={"model": "always-true"}, progress=False, print_table=False)
"""


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    child = subprocess.run([sys.executable, "-c", KILLED_RUN, str(out), str(data)])
    assert child.returncode == -signal.SIGKILL
    assert len((out / "boolq.jsonl").read_text().splitlines()) == 6  # two whole batches
    calls = []

    def counting(prompts, gen_length):
        calls.extend(prompts)
        return always_true(prompts, gen_length)

    result = evaluate(out, data, counting, batch_size=3)  # the kernel dropped the lock
    assert len(calls) == 4
    ids = [json.loads(line)["id"] for line in (out / "boolq.jsonl").read_text().splitlines()]
    assert ids == [str(i) for i in range(10)]
    assert result["tasks"]["boolq"]["n"] == 10


def test_a_batch_cut_short_is_regenerated_whole_so_resume_equals_one_run(tmp_path):
    """Sampling noise that depends on the batch (as with temperature > 0) gives the same rows
    after a resume from the middle of a batch as in an uninterrupted run."""
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    batches = []

    def batch_dependent(prompts, gen_length):
        batches.append(len(prompts))
        return [f"the correct answer is {'true' if (len(prompts) + j) % 2 else 'false'}"
                for j in range(len(prompts))]  # fmt: skip

    evaluate(out, data, batch_dependent, batch_size=4)
    path = out / "boolq.jsonl"
    whole = path.read_text()
    path.write_text("".join(whole.splitlines(keepends=True)[:5]))  # stopped inside batch 2
    batches.clear()
    result = evaluate(out, data, batch_dependent, batch_size=4)
    assert batches == [4, 2]  # the cut batch whole again, then the last one
    assert path.read_text() == whole
    assert result["tasks"]["boolq"]["n_resumed"] == 5


def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    never = lambda p, n: pytest.fail("generated while another run holds the folder")  # noqa: E731
    with RunLock(out), pytest.raises(RunFolderError, match="another nara run is writing"):
        evaluate(out, data, never)


def test_a_damaged_middle_line_stops_resume_and_keeps_the_file(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    evaluate(out, data, limit=6)
    path = out / "boolq.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:20] + "\n"  # corrupt line 3, rows 4..6 follow
    damaged = "".join(lines).encode()
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="boolq.jsonl line 3 is damaged"):
        evaluate(out, data, limit=6)
    assert path.read_bytes() == damaged


def test_rows_of_other_data_are_refused(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    evaluate(out, data, limit=3)
    path = out / "boolq.jsonl"
    path.write_text(path.read_text() + json.dumps({"id": "elsewhere-1", "correct": True}) + "\n")
    with pytest.raises(ValueError, match="line 4 has an id that is not in this run's data"):
        evaluate(out, data, limit=3)


def test_oracle_then_model_into_one_folder_is_refused(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    oracle = evaluate(out, data, generate_fn=None, oracle=True)
    assert oracle["tasks"]["boolq"]["accuracy"] == 100.0
    before = (out / "boolq.jsonl").read_text()
    with pytest.raises(RunFolderError, match="oracle: true \\(saved\\) vs false \\(now\\)"):
        evaluate(out, data)
    assert (out / "boolq.jsonl").read_text() == before
    replaced = evaluate(out, data, overwrite=True)
    assert replaced["tasks"]["boolq"]["accuracy"] == 50.0  # the model's own number
    assert replaced["tasks"]["boolq"]["n_resumed"] == 0


def test_a_smaller_limit_is_refused_never_reported_with_the_old_n(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    assert evaluate(out, data, limit=8)["tasks"]["boolq"]["n"] == 8
    with pytest.raises(RunFolderError, match="limit: 8 \\(saved\\) vs 5 \\(now\\)"):
        evaluate(out, data, limit=5)
    assert evaluate(out, data, limit=5, overwrite=True)["tasks"]["boolq"]["n"] == 5


def test_default_folders_separate_runs_and_resume_the_same_one(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    nara = evaluate(None, data, identity={"adapter": "nara-weights"}, label="tiny-nara")
    lora = evaluate(None, data, identity={"adapter": "lora-weights"}, label="tiny-lora")
    assert nara["output_dir"] != lora["output_dir"]
    assert Path(nara["output_dir"]).parent == Path("runs/eval")
    assert Path(lora["output_dir"]).name.startswith("boolq-tiny-lora-")
    again = evaluate(
        None,
        data,
        lambda p, n: pytest.fail("nothing left to generate"),
        identity={"adapter": "nara-weights"},
        label="tiny-nara",
    )
    assert again["output_dir"] == nara["output_dir"] and again["resumed"] is True
    assert again["tasks"]["boolq"]["accuracy"] == nara["tasks"]["boolq"]["accuracy"]


def test_summary_records_the_fingerprint_and_n(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    result = evaluate(out, data, limit=4)
    record = json.loads((out / "run.json").read_text())
    summary = json.loads((out / "boolq.summary.json").read_text())
    assert summary["fingerprint"] == record["fingerprint"] == result["fingerprint"]
    assert summary["n"] == 4 and record["fields"]["limit"] == 4
    assert record["fields"]["generator"] == {"model": "always-true"}
    expected = fingerprint(
        {"records": [asdict(r) for r in load_records(data / "llm-adapters/boolq/test.json")]}
    )
    assert record["fields"]["data_sha256"] == {"boolq": expected}


@pytest.mark.parametrize("content", ["", "  \n\n", "[]"])
def test_empty_data_is_an_error_before_generating(tmp_path, content):
    path = tmp_path / "test.json"
    path.write_text(content)
    never = lambda p, n: pytest.fail("generated on empty data")  # noqa: E731
    with pytest.raises(ValueError, match="'boolq' has no examples"):
        evaluate(tmp_path / "out", path, never)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be a positive integer, got 0"),
        ({"limit": -5}, "limit must be a positive integer, got -5"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
        ({"n_samples": 0}, "n_samples must be a positive integer"),
        ({"task": ""}, "task '' names no task"),
        ({"task": ","}, "task ',' names no task"),
    ],
)
def test_bad_arguments_are_errors_before_generating(tmp_path, kwargs, message):
    data = make_data(tmp_path / "data")
    never = lambda p, n: pytest.fail("generated despite a bad argument")  # noqa: E731
    with pytest.raises(ValueError, match=message):
        evaluate(tmp_path / "out", data, never, **kwargs)


def test_an_output_that_is_a_file_is_refused(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "results.txt"
    out.write_text("mine")
    with pytest.raises(RunFolderError, match="results.txt is a file"):
        evaluate(out, data)
    assert out.read_text() == "mine"


def test_group_table_has_one_column_per_task_and_average(tmp_path):
    data = make_data(tmp_path / "data")
    result = run_eval(
        None,
        None,
        "commonsense",
        output_dir=tmp_path / "o",
        data=data,
        oracle=True,
        progress=False,
        print_table=False,
    )
    assert list(result["tasks"]) == ["boolq"] and "hellaswag" in result["skipped"]
    header = result["table"].splitlines()[0]
    assert header == "| boolq | Avg |"


def test_resolve_groups_and_aliases():
    assert [t.name for t in resolve("math")][-1] == "AQuA"
    assert [t.name for t in resolve("siqa,arc_c")] == ["social_i_qa", "ARC-Challenge"]
    with pytest.raises(KeyError, match="unknown task"):
        resolve("nope")


def test_needs_a_way_to_generate(tmp_path):
    with pytest.raises(ValueError, match="oracle=True"):
        run_eval(None, None, "boolq", output_dir=tmp_path)


@pytest.mark.skipif(not (data_dir() / "code").exists(), reason="no code data")
def test_wrong_code_fails_and_pass_at_k_counts_samples(tmp_path):
    task = resolve("humaneval")[0]
    record = load_records(data_dir() / task.path)[0]
    wrong = "    return False\n"
    samples = {"right": record.target, "wrong": wrong}

    def gen(prompts, gen_length):
        return [samples["right"] if i % 2 else samples["wrong"] for i in range(len(prompts))]

    result = run_eval(
        None,
        None,
        "humaneval",
        output_dir=tmp_path,
        generate_fn=gen,
        limit=2,
        n_samples=2,
        ks=(1, 2),
        progress=False,
        print_table=False,
    )
    summary = result["tasks"]["humaneval"]
    assert summary["pass@1"] == 0.0 or summary["statuses"]["failed"] >= 1
    assert summary["pass@2"] >= summary["pass@1"]
    assert "check(has_close_elements)" in program(task, record, wrong)
