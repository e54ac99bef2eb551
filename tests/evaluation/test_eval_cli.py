"""`nara eval` in-process: bad inputs are one-line errors before any model loads, runs never mix
(oracle then model, LoRA after NaRA, a smaller --limit), and a finished run resumes honestly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from eval_support import long_model_dir  # noqa: E402,F401  (fixture)

import nara.commands.eval as eval_command  # noqa: E402
from nara.cli import main  # noqa: E402


@pytest.fixture
def boolq(tmp_path: Path) -> Path:
    rows = [
        {"instruction": f"Is {i} even?", "input": "", "output": "x", "answer": "true"}
        for i in range(4)
    ]
    path = tmp_path / "boolq.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command loads a model."""

    def refuse(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(eval_command, "load_for_inference", refuse)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(["eval", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--limit", "0"), ("--limit", "-5"), ("--batch-size", "-1"), ("--batch-size", "0")],
)
def test_non_positive_counts_are_refused_by_the_parser(flag, value, boolq, capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--task", "boolq", "--data", str(boolq), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"nara eval: error: argument {flag}: must be a positive integer, got {value}" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", ""], "task '' names no task"),
        (["--task", ","], "task ',' names no task"),
        (["--task", "boolq", "--top-p", "1.5"], "top_p must lie in (0, 1], got 1.5"),
        (["--task", "boolq", "--top-k", "0"], "top_k must be an int >= 1, got 0"),
        (["--task", "boolq", "--alg-temp", "-1"], "alg_temp must be >= 0"),
    ],
)
def test_bad_inputs_are_one_line_errors_before_loading(argv, message, boolq, no_model, capsys):
    code, _, err = run_cli([*argv, "--data", str(boolq)], capsys)
    assert code == 2
    assert err.startswith(f"nara eval: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_data_file_is_an_error_not_zero(content, tmp_path, no_model, capsys):
    path = tmp_path / "empty.json"
    path.write_text(content)
    code, out, err = run_cli(["--task", "boolq", "--data", str(path)], capsys)
    assert code == 2 and "0.00" not in out
    assert "nara eval: error: task 'boolq' has no examples" in err


def test_missing_adapter_is_an_error_before_loading(tmp_path, boolq, no_model, capsys):
    argv = ["--task", "boolq", "--data", str(boolq), "--adapter", str(tmp_path / "nowhere")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("nara eval: error: adapter folder")
    assert "nowhere" in err and "adapter_config.json" in err


def test_output_that_is_a_file_is_an_error(tmp_path, boolq, no_model, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run_cli(
        ["--task", "boolq", "--data", str(boolq), "--output", str(target)], capsys
    )
    assert code == 2 and "is a file; pass a folder path" in err
    assert target.read_text() == "mine"


def test_model_run_into_an_oracle_folder_is_refused_before_loading(
    tmp_path, boolq, no_model, capsys
):
    out = tmp_path / "out"
    common = ["--task", "boolq", "--data", str(boolq), "--output", str(out)]
    assert run_cli([*common, "--oracle"], capsys)[0] == 0
    code, _, err = run_cli(common, capsys)
    assert code == 2
    assert "oracle: true (saved) vs false (now)" in err
    assert "a new --output folder, or --overwrite" in err
    assert json.loads((out / "boolq.summary.json").read_text())["oracle"] is True


def make_adapter(model_dir: Path, folder: Path, config) -> Path:
    from nara.adapters import add_adapters, save_adapters
    from nara.models import load_model

    return save_adapters(add_adapters(load_model(model_dir).model, config), folder)


def test_lora_after_nara_goes_to_its_own_default_folder(
    long_model_dir,  # noqa: F811
    boolq,
    tmp_path,
    monkeypatch,
    capsys,
):
    from nara.adapters import LoRAConfig, NaRAConfig

    nara = make_adapter(long_model_dir, tmp_path / "nara" / "final", NaRAConfig(r=2))
    lora = make_adapter(long_model_dir, tmp_path / "lora" / "final", LoRAConfig(r=2))
    monkeypatch.chdir(tmp_path)
    common = ["--model", str(long_model_dir), "--task", "boolq", "--data", str(boolq)]
    common += ["--limit", "2", "--gen-length", "4", "--steps", "2"]
    assert run_cli([*common, "--adapter", str(nara)], capsys)[0] == 0
    assert run_cli([*common, "--adapter", str(lora)], capsys)[0] == 0
    folders = sorted(p.name for p in (tmp_path / "runs" / "eval").iterdir())
    assert len(folders) == 2
    assert folders[0].startswith("boolq-tiny_long") and "-lora-final-" in folders[0]
    assert "-nara-final-" in folders[1]
    for name in folders:
        summary = json.loads((tmp_path / "runs" / "eval" / name / "boolq.summary.json").read_text())
        assert summary["n"] == 2 and summary["n_resumed"] == 0  # each scored its own examples


def test_same_run_again_resumes_without_loading_the_model(
    long_model_dir,  # noqa: F811
    boolq,
    tmp_path,
    monkeypatch,
    capsys,
):
    out = tmp_path / "out"
    common = ["--model", str(long_model_dir), "--task", "boolq", "--data", str(boolq)]
    common += ["--limit", "3", "--gen-length", "4", "--steps", "2", "--output", str(out)]
    code, first, _ = run_cli(common, capsys)
    assert code == 0 and "(n=3, new run)" in first
    monkeypatch.setattr(eval_command, "load_for_inference", lambda args: pytest.fail("loaded"))
    code, again, _ = run_cli(common, capsys)
    assert code == 0 and "(n=3, resumed)" in again
    code, _, err = run_cli([*common, "--temperature", "0.5"], capsys)
    assert code == 2 and "generator.sampler.temperature: 0.0 (saved) vs 0.5 (now)" in err


def test_sampler_choice_runs_and_is_part_of_the_run(
    long_model_dir,  # noqa: F811
    boolq,
    tmp_path,
    capsys,
):
    out = tmp_path / "out"
    common = ["--model", str(long_model_dir), "--task", "boolq", "--data", str(boolq)]
    common += ["--limit", "2", "--gen-length", "4", "--steps", "2", "--output", str(out)]
    dream = [*common, "--sampler", "dream", "--top-k", "3"]
    code, first, err = run_cli(dream, capsys)
    assert code == 0 and "(n=2, new run)" in first, err
    sampler = json.loads((out / "run.json").read_text())["fields"]["generator"]["sampler"]
    assert sampler["sampler"] == "dream" and sampler["top_k"] == 3 and sampler["top_p"] is None
    code, _, err = run_cli([*common, "--sampler", "llada"], capsys)
    assert code == 2 and 'generator.sampler.sampler: "dream" (saved) vs "llada" (now)' in err
    other = ["--output", str(tmp_path / "other"), "--block-length", "2"]  # LLaDA's option
    code, _, err = run_cli([*dream, *other], capsys)
    assert code == 2 and "block_length does not apply to the 'dream' sampler" in err
