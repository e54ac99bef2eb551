"""A user's own data: files in JSON, JSONL and CSV with mapped columns, the notice when there is
no validation data, data paths checked before a model loads, and `nara eval --task FILE
--scorer NAME` (the README's "Your own data" commands, on a tiny model built in code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "training"))
from training_support import tiny_model_dir  # noqa: E402,F401  (fixture)

from nara.cli import main  # noqa: E402
from nara.data.records import RecordFormatError, load_records  # noqa: E402
from nara.evaluation.runner import run_eval  # noqa: E402
from nara.training.config import ConfigError, load_recipe  # noqa: E402
from nara.training.data import check_sources, load_source, split_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SUMS = [(a, b) for a in range(1, 5) for b in range(1, 5)]  # 16 problems


def write_sums(path: Path) -> Path:
    """The README's example file: one {prompt, answer} object a line."""
    lines = [json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) for a, b in SUMS]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_json_and_jsonl_with_mapped_columns_give_the_same_records(tmp_path):
    rows = [{"question": "Is ice cold?", "label": "yes"}, {"question": 'Say "a,b"', "label": "no"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text('question,label\nIs ice cold?,yes\n"Say ""a,b""",no\n')
    loaded = [
        load_records(tmp_path / f"d.{ext}", columns="prompt=question,answer=label")
        for ext in ("jsonl", "json", "csv")
    ]
    assert loaded[0] == loaded[1] == loaded[2]
    assert [(r.prompt, r.answer) for r in loaded[0]] == [
        ("Is ice cold?", "yes"),
        ('Say "a,b"', "no"),
    ]
    with pytest.raises(RecordFormatError, match=r"missing field 'prompt'.*--columns prompt="):
        load_records(tmp_path / "d.csv")
    with pytest.raises(RecordFormatError, match=r"no column 'text' to map.*'label', 'question'"):
        load_records(tmp_path / "d.csv", columns={"prompt": "text", "answer": "label"})


def test_recipe_columns_are_checked_and_applied(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("q,a\n1+1=,2\n2+2=,4\n")
    config = load_recipe(None, [f"data.source={path}", "data.columns=prompt=q,answer=a"])
    assert config.data.columns == {"prompt": "q", "answer": "a"}
    train, val = split_records(config.data, seed=0)
    assert [(r.prompt, r.answer) for r in train] == [("1+1=", "2"), ("2+2=", "4")] and val == []
    with pytest.raises(ConfigError, match=r"data.columns: .*maps to 'q', which is no record field"):
        load_recipe(None, ["data.columns=q=prompt"])  # written column=field


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the data checks must come first."""
    import nara.experiments.runner
    import nara.models

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(nara.models, "load_model", no_load)
    monkeypatch.setattr(nara.experiments.runner, "load_base", no_load)


RECIPES = sorted(  # nara train's 8B recipes (an RL recipe there is nara rl's)
    p.stem for p in (ROOT / "configs" / "llada8b").glob("*.yaml") if "\nrl:" not in p.read_text()
)
WHERE = {"math": "math_10k.json", "commonsense": "commonsense_170k.json", "code": "train.jsonl"}


@pytest.mark.parametrize("name", RECIPES)
def test_8b_recipe_without_its_data_fails_before_the_model_loads(
    name, tmp_path, monkeypatch, capsys, no_model_load
):
    monkeypatch.chdir(tmp_path)  # the recipes' data paths are relative to the working folder
    assert main(["train", f"llada8b/{name}", f"output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "data" / ("code" if name.startswith("code") else "llm-adapters")
    assert str(missing / WHERE[name.split("_")[0]]) in err and "docs/data.md" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("grid", ["llada8b_methods", "llada8b_ablations"])
def test_8b_grid_without_its_data_fails_before_the_model_loads(
    grid, tmp_path, monkeypatch, capsys, no_model_load
):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", str(ROOT / "configs" / "experiments" / f"{grid}.yaml")]) == 2
    err = capsys.readouterr().err
    assert "data file not found: data/llm-adapters/" in err and "docs/data.md" in err


def test_shared_copies_named_by_docs_data_md_load():
    """The no-download alternatives that docs/data.md names hold records nara reads."""
    text = (ROOT / "docs" / "data.md").read_text()
    shared = ROOT.parent / "shared" / "data" / "llm-adapters"
    math = "../shared/data/llm-adapters/ft-training_set/math_data.json"
    assert math in text
    assert len(load_source(str(shared / "ft-training_set" / "math_data.json"), "train")) == 3260
    mix = next(line for line in text.splitlines() if "boolq/train.json+" in line)
    source = mix.split("data.source=", 1)[1].split("`")[0]
    parts = [ROOT / part for part in source.split("+")]
    assert all(part.is_file() for part in parts), parts


def test_own_file_trains_with_a_notice_and_evaluates_by_scorer(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    data = write_sums(tmp_path / "my.jsonl")
    out = tmp_path / "runs" / "mine"
    args = ["train", "demo", f"data.source={data}", f"output_dir={out}"]
    fast = [f"model.name={tiny_model_dir}", "training.max_steps=2", "training.batch_size=4"]
    assert main([*args, *fast, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "note: no validation data" in printed and "data.val_fraction=0.05" in printed
    assert (out / "final" / "adapter_config.json").is_file()

    base = ["eval", "--model", str(tiny_model_dir), "--task", str(data), "--no-progress"]
    assert main([*base, "--adapter", str(out / "final"), "--scorer", "number", "--limit", "4",
                 "--gen-length", "4", "--output", str(tmp_path / "ev")]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "ev" / "my.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows] == [str(a + b) for a, b in SUMS[:4]]
    assert [r["prompt"] for r in rows] == [f"{a}+{b}=" for a, b in SUMS[:4]]

    assert main(base) == 2  # a file of one's own needs a scorer, and the error lists them
    err = capsys.readouterr().err
    assert "--scorer keyword|number|choice|exact|code" in err


@pytest.mark.parametrize(
    ("scorer", "answers", "generation", "correct"),
    [
        ("number", ["7", "12"], "The answer is 7.", [True, False]),
        ("keyword", ["yes", "no"], "I think yes", [True, False]),
        ("choice", ["B", "C"], "The answer is (B)", [True, False]),
        ("exact", ["b = 3", "b = 4"], "b = 3\nmore", [True, False]),
    ],
)
def test_scorers_are_chosen_by_name_for_a_file(tmp_path, scorer, answers, generation, correct):
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": a}) + "\n" for i, a in enumerate(answers)))  # fmt: skip
    result = run_eval(
        None,
        None,
        str(path),
        scorer=scorer,
        generate_fn=lambda prompts, n: [generation] * len(prompts),
        output_dir=tmp_path / "out",
        progress=False,
        print_table=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "out" / "own.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == correct
    assert result["tasks"]["own"]["score"] == 100.0 * sum(correct) / len(correct)


def test_hub_dataset_names_load_with_mapped_columns(monkeypatch):
    """A `datasets` name goes through load_dataset (a stand-in here: no downloads in tests)."""
    import types

    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "1+1=", "label": 2}, {"question": "2+3=", "label": 5}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    config = load_recipe(None, ["data.source=hf:someone/sums", "data.columns=prompt=question,answer=label"])  # fmt: skip
    check_sources(config.data)
    train, _ = split_records(config.data, seed=0)
    assert calls == [("someone/sums", None, "train")]
    assert [(r.prompt, r.answer) for r in train] == [("1+1=", "2"), ("2+3=", "5")]


def test_hub_name_without_datasets_is_named_before_the_model_loads(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    config = load_recipe(None, ["data.source=someone/sums"])
    with pytest.raises(ImportError, match=r"'someone/sums' is read as a Hugging Face dataset"):
        check_sources(config.data)
