"""The `nara` command end to end, in-process, on a tiny random model saved with a tokenizer:
train a few steps, resume, generate, evaluate; help texts; config errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "training"))
from training_support import arith_files, tiny_model_dir  # noqa: E402,F401  (fixtures)

from nara.cli import main  # noqa: E402


def test_help_lists_every_subcommand_with_examples(capsys):
    assert main([]) == 2
    text = capsys.readouterr().out
    for name in ("train", "generate", "eval", "demo", "recipes"):
        assert name in text
    for name in ("train", "generate", "eval", "demo", "recipes"):
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "training.warmup_ratio" in capsys.readouterr().out  # generated from the schema


def test_recipes_come_from_the_folder(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "llada8b/math_nara" in out and "accelerate" not in out


def test_config_errors_exit_2_and_name_the_key(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("training:\n  lr: 1e-4\n")
    assert main(["train", str(path), "training.warmup=0.1"]) == 2
    err = capsys.readouterr().err
    assert "training.warmup" in err and "warmup_ratio" in err
    assert main(["train", str(path), "--print-config", "adapter.method=lora"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["adapter"]["method"] == "lora"


def test_train_resume_generate_eval(tiny_model_dir, arith_files, tmp_path, capsys):  # noqa: F811
    train_file, val_file = arith_files
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"name": str(tiny_model_dir)},
                "adapter": {"method": "lora", "r": 4},
                "data": {"source": str(train_file), "val_source": str(val_file), "max_length": 16},
                "training": {"lr": 1e-3, "batch_size": 4, "max_steps": 4, "save_every": 2},
                "output_dir": str(out),
            }
        )
    )
    # a first run that stops after 2 updates (its checkpoint), then a resumed one to 4
    assert main(["train", str(recipe), "training.max_steps=4", "--no-progress"]) == 0
    first = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert main(["train", str(recipe), "training.resume=latest", "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().out
    again = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert [r["step"] for r in again] == [r["step"] for r in first]
    assert [r["loss"] for r in again if "loss" in r] == pytest.approx(
        [r["loss"] for r in first if "loss" in r], rel=1e-6
    )
    adapter = out / "final"
    assert (adapter / "adapter_model.safetensors").is_file()

    args = ["--model", str(tiny_model_dir), "--adapter", str(adapter)]
    gen = ["generate", *args, "--prompt", "1+2=", "--gen-length", "4", "--steps", "2"]
    assert main(gen) == 0
    assert capsys.readouterr().out.strip() is not None

    data = tmp_path / "boolq.json"
    rows = [
        {"instruction": f"Is {i} even?", "input": "", "output": "true", "answer": "true"}
        for i in range(3)
    ]
    data.write_text(json.dumps(rows))
    evaluation = ["eval", *args, "--task", "boolq", "--data", str(data), "--limit", "3"]
    evaluation += ["--output", str(tmp_path / "eval"), "--gen-length", "4", "--no-progress"]
    assert main(evaluation) == 0
    predictions = (tmp_path / "eval" / "boolq.jsonl").read_text().splitlines()
    assert len(predictions) == 3
    assert "average" in capsys.readouterr().out
