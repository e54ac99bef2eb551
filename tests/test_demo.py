"""`nara demo` on a tiny random model: other settings into a used folder are refused, the same
settings reuse only this run's finished parts, --overwrite recomputes everything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "evaluation"))
from eval_support import long_model_dir  # noqa: E402,F401  (fixture)

from nara.cli import main  # noqa: E402


def demo(model_dir: Path, output: Path, *extra: str, limit: int = 2) -> list[str]:
    """A demo of two updates of LoRA on the tiny random model, `limit` test examples."""
    overrides = [
        f"model.name={model_dir}",
        "training.max_steps=2",
        "training.batch_size=4",
        "training.eval_every=2",
        "training.save_every=1",
        "data.max_examples=8",
        "data.val_max_examples=4",
        "data.max_length=224",
    ]
    return ["demo", "--methods", "lora", "--limit", str(limit), "--output", str(output),
            "--no-progress", *extra, "--set", *overrides]  # fmt: skip


def rows(output: Path) -> dict[str, dict]:
    return {r["method"]: r for r in json.loads((output / "results.json").read_text())["rows"]}


def test_demo_refuses_other_settings_and_reuses_only_its_own_run(
    long_model_dir,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    import nara.training.trainer as trainer_module

    output = tmp_path / "demo"
    assert main(demo(long_model_dir, output)) == 0
    first = rows(output)
    assert set(first) == {"base", "lora"}
    assert json.loads((output / "run.json").read_text())["fields"]["limit"] == 2
    capsys.readouterr()

    # other settings: refused before anything runs, naming the field and the ways out
    assert main(demo(long_model_dir, output, limit=3)) == 2
    err = capsys.readouterr().err
    assert "limit: 2 (saved) vs 3 (now)" in err and "--overwrite" in err
    assert rows(output) == first

    # same settings: the finished adapter row is reused, nothing is trained again
    class NoTraining:
        def __init__(self, *args, **kwargs):
            raise AssertionError("trained again although this run finished it")

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "Trainer", NoTraining)
        assert main(demo(long_model_dir, output)) == 0
    assert "continuing the same demo run" in capsys.readouterr().out
    assert rows(output)["lora"] == first["lora"]
    base = json.loads((output / "base" / "eval" / "embedded:arithmetic.summary.json").read_text())
    assert base["n"] == 2 and base["n_resumed"] == 2

    # a half-done method of the same run (no row yet) is trained and evaluated afresh
    (output / "lora" / "demo_row.json").unlink()
    assert main(demo(long_model_dir, output)) == 0
    lora_eval = output / "lora" / "eval" / "embedded:arithmetic.summary.json"
    assert json.loads(lora_eval.read_text())["n_resumed"] == 0

    # --overwrite recomputes everything with the new settings
    assert main(demo(long_model_dir, output, "--overwrite", limit=3)) == 0
    assert json.loads((output / "results.json").read_text())["test_examples"] == 3
    assert json.loads(lora_eval.read_text())["n"] == 3
    assert json.loads(lora_eval.read_text())["n_resumed"] == 0


def test_demo_limit_must_be_positive(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--limit", "0"])
    assert info.value.code == 2
    assert "argument --limit: must be a positive integer, got 0" in capsys.readouterr().err
