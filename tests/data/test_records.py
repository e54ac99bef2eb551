"""Record loaders: the four formats, JSON list and JSONL, and clear errors on malformed data."""

import json

import pytest

from nara.data.records import RecordFormatError, load_records
from nara.data.templates import llm_adapters_prompt

LA = {
    "instruction": "Is the sky blue?",
    "input": "",
    "output": "the correct answer is true",
    "answer": "true",
}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_llm_adapters_json_list_and_jsonl_give_same_records(tmp_path):
    listed = load_records(write(tmp_path, "a.json", json.dumps([LA, LA])))
    lines = load_records(write(tmp_path, "a.jsonl", json.dumps(LA) + "\n\n" + json.dumps(LA)))
    assert listed == lines
    assert listed[0].prompt == llm_adapters_prompt("Is the sky blue?")
    assert listed[0].answer == "true" and listed[0].target == LA["output"]
    assert [r.meta["id"] for r in listed] == ["0", "1"]


def test_template_with_and_without_input():
    plain = llm_adapters_prompt("Add.")
    assert plain.startswith("Below is an instruction that describes a task. Write a response")
    assert plain.endswith("### Instruction:\nAdd.\n\n### Response:\n")
    with_input = llm_adapters_prompt("Add.", "2 and 3")
    assert "paired with an input that provides further context" in with_input
    assert "### Input:\n2 and 3\n\n### Response:\n" in with_input


def test_prompt_answer_numeric_answer_and_code_formats(tmp_path):
    recs = load_records(write(tmp_path, "p.jsonl", '{"prompt": "2+2=", "answer": 4}\n'))
    assert recs[0].prompt == "2+2=" and recs[0].answer == "4" and recs[0].target is None
    he = {
        "task_id": "H/0",
        "prompt": "def f():\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(c):\n    assert c() == 1\n",
        "entry_point": "f",
    }
    rec = load_records(write(tmp_path, "he.jsonl", json.dumps(he)))[0]
    assert rec.meta["id"] == "H/0" and rec.meta["entry_point"] == "f"
    mb = {
        "task_id": 7,
        "text": "Return one.",
        "code": "def f(): return 1",
        "test_list": ["assert f() == 1"],
        "test_setup_code": "",
        "challenge_test_list": [],
    }
    rec = load_records(write(tmp_path, "mb.jsonl", json.dumps(mb)))[0]
    assert rec.meta["id"] == "7" and "assert f() == 1" in rec.prompt


@pytest.mark.parametrize(
    ("name", "text", "needles"),
    [
        (
            "missing.json",
            json.dumps([LA, {k: v for k, v in LA.items() if k != "answer"}]),
            ["missing.json", "record 1", "missing field 'answer'", "llm-adapters"],
        ),
        (
            "type.jsonl",
            json.dumps(LA) + "\n" + json.dumps({**LA, "input": 3}),
            ["type.jsonl", "record 1 (line 2)", "field 'input' is a int", "instruction, input"],
        ),
        (
            "badline.jsonl",
            json.dumps(LA) + "\n{oops\n",
            ["badline.jsonl", "line 2", "not valid JSON", "one JSON object per line"],
        ),
        ("notobj.json", json.dumps([LA, [1, 2]]), ["notobj.json", "record 1", "not a JSON object"]),
        ("broken.json", "[" + json.dumps(LA), ["broken.json", "invalid JSON", "JSON list"]),
        (
            "pa.jsonl",
            '{"prompt": "x"}\n',
            [
                "pa.jsonl",
                "record 0 (line 1)",
                "missing field 'answer'",
                "{prompt, answer, target?}",
            ],
        ),
    ],
)
def test_malformed_records_name_file_record_field_and_format(tmp_path, name, text, needles):
    with pytest.raises(RecordFormatError) as info:
        load_records(write(tmp_path, name, text))
    for needle in needles:
        assert needle in str(info.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        load_records(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="unknown record format"):
        load_records(write(tmp_path, "a.json", json.dumps([LA])), format="csv")
