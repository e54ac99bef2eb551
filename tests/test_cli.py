"""The `nara` command end to end, in-process, on a tiny random model saved with a tokenizer:
train a few steps, resume, generate, evaluate; help texts; config errors."""

from __future__ import annotations

import json
import re
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


@pytest.fixture
def no_model_load(monkeypatch):
    """Make any model load fail the test: argument errors must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("nara.models.load_model", refuse)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--steps", "0"], r"steps must be an integer >= 1, got 0"),
        (["--steps", "-3"], r"steps must be an integer >= 1, got -3"),
        (["--gen-length", "8", "--steps", "9"], r"steps=9 exceeds gen_length=8"),
        (["--gen-length", "0"], r"gen_length must be an integer >= 1, got 0"),
        (["--gen-length", "8", "--block-length", "3"], r"multiple of block_length=3"),
        (["--gen-length", "8", "--block-length", "4", "--steps", "3"], r"number of blocks"),
        (["--temperature", "nan"], r"temperature must be a finite number >= 0 .* got nan"),
        (["--temperature", "inf"], r"temperature .* got inf"),
        (["--temperature", "-1"], r"temperature .* got -1\.0"),
        (["--device", "gpu"], r"--device 'gpu' is not a device torch knows; use auto, cpu"),
        (["--adapter", "/nonexistent/adapter"], r"adapter folder '/nonexistent/adapter' does not"),
    ],
)
def test_generate_argument_errors_come_before_loading(no_model_load, capsys, options, message):
    assert main(["generate", "--prompt", "1+2=", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nara generate: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_an_empty_prompt_is_an_error(no_model_load, capsys, prompt):
    assert main(["generate", "--prompt", "2+2=", "--prompt", prompt]) == 2
    assert "--prompt number 2 of 2 is empty" in capsys.readouterr().err


def test_a_model_folder_given_as_adapter_is_named(no_model_load, tiny_model_dir, capsys):  # noqa: F811
    assert main(["generate", "--prompt", "1+2=", "--adapter", str(tiny_model_dir)]) == 2
    assert "is not an adapter folder: adapter_config.json is missing" in capsys.readouterr().err


def test_cuda_on_a_cpu_only_torch_build_is_named(no_model_load, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["generate", "--prompt", "1+2=", "--device", "cuda"]) == 2
    expected = (
        f"CUDA is not available in this torch build (torch {torch.__version__}, cpu); "
        "use --device cpu or install a CUDA torch"
    )
    assert expected in capsys.readouterr().err
    monkeypatch.setattr(torch.version, "cuda", "12.4")  # a CUDA build on a machine without GPU
    assert main(["generate", "--prompt", "1+2=", "--device", "cuda:0"]) == 2
    assert "has CUDA 12.4 but sees no GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["generate", "--prompt", "1+2=", "--device", "cuda:2"]) == 2
    assert "only 2 GPU(s) are visible (cuda:0 to cuda:1)" in capsys.readouterr().err


def test_unknown_hub_model_is_one_line(monkeypatch, capsys):
    from transformers import PretrainedConfig

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub to load the files.")

    monkeypatch.setattr(PretrainedConfig, "get_config_dict", offline)
    assert main(["generate", "--prompt", "1+2=", "--model", "someone/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        "could not find model 'someone/no-such-model' locally or on the Hugging Face hub "
        "(offline?): pass a local folder, or set HF_HUB_OFFLINE=0 and check the name" in err
    )


def test_gen_length_past_the_model_maximum_is_refused(tiny_model_dir, monkeypatch, capsys):  # noqa: F811
    import nara.models

    args = ["generate", "--model", str(tiny_model_dir), "--prompt", "1+2="]
    with monkeypatch.context() as patch:  # past the maximum alone: refused before loading
        patch.setattr(nara.models, "load_model", None)
        assert main([*args, "--gen-length", "100000", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        "gen_length=100000 is 100000 tokens, more than this model's maximum sequence length " in err
    )
    assert "512; use gen_length <= 512\n" in err
    # fits alone but not with the prompt: refused once tokenized, before sampling
    assert main([*args, "--gen-length", "512", "--steps", "1"]) == 2
    assert re.search(r"the prompt \(\d+ tokens\) plus gen_length=512 is", capsys.readouterr().err)


@pytest.fixture
def nan_adapter(tmp_path):
    """A LoRA adapter for the tiny LLaDA whose first tensor is all NaN, saved intact."""
    import torch

    import nara
    from nara.adapters.inject import adapter_parameters
    from nara.models import LLaDAModelLM, tiny_config

    model = nara.add_adapters(LLaDAModelLM(tiny_config()), nara.LoRAConfig(r=2))
    with torch.no_grad():
        next(iter(adapter_parameters(model).values())).fill_(float("nan"))
    return nara.save_adapters(model, tmp_path / "adapter")


def test_nan_or_damaged_adapters_are_refused_before_loading(no_model_load, nan_adapter, capsys):
    args = ["generate", "--adapter", str(nan_adapter), "--prompt", "1+2="]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"adapter tensor '[\w.]+\.lora_A' in .* holds 128 NaN/inf value\(s\) of 128", err
    )
    weights = nan_adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one flipped bit
    assert main(args) == 2
    assert "adapter_model.safetensors does not match the sha256" in capsys.readouterr().err


def test_steps_above_a_task_length_are_lowered_with_a_note(tiny_model_dir, capsys):  # noqa: F811
    from nara.commands._common import make_generate_fn
    from nara.models import load_model

    loaded = load_model(tiny_model_dir)
    fn = make_generate_fn(loaded.model, loaded.tokenizer, loaded.mask_token_id, steps=16)
    assert len(fn(["1+2="], 4)) == 1 and len(fn(["3+4="], 4)) == 1
    err = capsys.readouterr().err
    assert err.count("note: 16 steps exceed the answer length 4; sampling it with 4 steps") == 1
