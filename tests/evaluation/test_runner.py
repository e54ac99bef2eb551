"""run_eval: outputs, resume from a partial per-example file, wrong code fails, tables, errors."""

import json

import pytest

from nara.data.records import load_records
from nara.evaluation import resolve, run_eval
from nara.evaluation.tasks import data_dir, program


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


def test_resume_skips_done_ids_and_drops_a_torn_line(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    run_eval(
        None,
        None,
        "boolq",
        output_dir=out,
        data=data,
        limit=4,
        generate_fn=always_true,
        progress=False,
        print_table=False,
    )
    path = out / "boolq.jsonl"
    path.write_text(path.read_text() + '{"id": "4", "prom')  # killed mid-write
    calls = []

    def counting(prompts, gen_length):
        calls.extend(prompts)
        return always_true(prompts, gen_length)

    result = run_eval(
        None,
        None,
        "boolq",
        output_dir=out,
        data=data,
        generate_fn=counting,
        batch_size=3,
        progress=False,
        print_table=False,
    )
    assert len(calls) == 6  # ids 4..9 only
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == [str(i) for i in range(10)]
    assert result["tasks"]["boolq"]["n"] == 10


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
