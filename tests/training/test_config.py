"""The recipe schema: coercion, overrides, and errors that name the key and the valid choices."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from nara.training.config import ConfigError, RecipeConfig, coerce, load_recipe
from nara.training.recipes import find_recipes


def recipe(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_settings():
    c = load_recipe(None)
    t = c.training
    assert (t.betas, t.weight_decay, t.warmup_ratio, t.max_grad_norm) == (
        (0.9, 0.95),
        0.05,
        0.05,
        1.0,
    )
    assert t.schedule == "linear" and c.adapter.method == "nara"


def test_yaml_and_overrides_are_coerced_from_the_schema(tmp_path):
    # PyYAML reads 1e-4 as a *string*; the schema makes it a float
    path = recipe(tmp_path, "training:\n  lr: 1e-4\n  batch_size: '8'\nadapter:\n  method: lora\n")
    c = load_recipe(
        path,
        [
            "training.betas=0.8,0.99",
            "training.max_steps=10",
            "training.hyper_lr=none",
            "training.gradient_checkpointing=yes",
            "adapter.r=4",
            "adapter.target_modules=q_proj,v_proj",
            "output_dir=runs/x",
        ],
    )
    assert c.training.lr == 1e-4 and isinstance(c.training.lr, float)
    assert c.training.batch_size == 8 and c.training.max_steps == 10
    assert c.training.betas == (0.8, 0.99) and c.training.hyper_lr is None
    assert c.training.gradient_checkpointing is True
    built = c.adapter.build()
    assert type(built).__name__ == "LoRAConfig"
    assert built.r == 4 and built.target_modules == ["q_proj", "v_proj"]
    assert c.output_dir == "runs/x"


def test_union_fields_keep_a_plain_string():
    assert coerce("all-linear", list[str] | str, "adapter.target_modules") == "all-linear"
    assert coerce("[a, b]", list[str] | str, "k") == ["a", "b"]
    assert coerce(["a"], list[str] | str, "k") == ["a"]


def test_round_trip_through_dict():
    c = load_recipe(None, ["adapter.method=nara", "adapter.eta=0.2", "training.lr=3e-4"])
    again = RecipeConfig.from_dict(yaml.safe_load(c.to_yaml()))
    assert dataclasses.asdict(again.training) == dataclasses.asdict(c.training)
    assert again.adapter.to_dict() == c.adapter.to_dict()


def test_nara_c_is_nara_with_a_constant_input():
    built = load_recipe(None, ["adapter.method=nara_c", "adapter.r=4"]).adapter.build()
    assert type(built).__name__ == "NaRAConfig" and built.input_mode == "constant"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.lrr=1", ["training.lrr", "Did you mean 'lr'", "hyper_lr", "warmup_ratio"]),
        ("trainin.lr=1", ["trainin.lr", "model", "training"]),
        ("training.lr=fast", ["training.lr", "float", "'fast'"]),
        ("training.lr=-1", ["training.lr", "> 0"]),
        ("training.lr=inf", ["training.lr", "finite number", "'inf'"]),
        ("training.betas=0.9,nan", ["training.betas", "finite number"]),
        ("adapter.dropout=nan", ["adapter.dropout", "finite number"]),
        ("training.warmup_ratio=1.5", ["training.warmup_ratio", "[0, 1)"]),
        ("data.truncation=cut", ["data.truncation", "drop, truncate, error"]),
        ("training.batch_size=2.5", ["training.batch_size", "int"]),
        ("training.report_to=mlflow", ["training.report_to", "tensorboard, wandb"]),
        ("adapter.method=qlora", ["adapter.method", "'qlora'", "lora", "nara", "nara_c"]),
        ("adapter.rank=4", ["adapter.rank", "NaRAConfig", "r, alpha", "target_modules"]),
        ("adapter.r=0", ["adapter", "r must be a positive integer"]),
        ("training", ["training", "key=value"]),
        (
            "training.resume=latest training.overwrite=true",
            ["training.overwrite", "not both"],
        ),
    ],
)
def test_bad_keys_and_values_name_the_key_and_the_choices(override, expected):
    with pytest.raises(ConfigError) as info:
        load_recipe(None, override.split())
    for text in expected:
        assert text in str(info.value)


def test_unknown_key_in_the_yaml_file(tmp_path):
    path = recipe(tmp_path, "data:\n  source: x.jsonl\n  max_len: 5\n")
    with pytest.raises(ConfigError, match=r"'data.max_len'.*Did you mean 'max_length'"):
        load_recipe(path)


def test_global_batch_size_sets_the_accumulation():
    t = load_recipe(None, ["training.batch_size=4", "training.global_batch_size=32"]).training
    assert t.accumulation(world_size=1) == 8 and t.accumulation(world_size=8) == 1
    with pytest.raises(ConfigError, match="multiple of"):
        t.accumulation(world_size=3)
    bad = load_recipe(None, ["training.global_batch_size=32", "training.grad_accum=2"]).training
    with pytest.raises(ConfigError, match="contradicts"):
        bad.accumulation(world_size=1)


def test_every_shipped_recipe_validates():
    recipes = find_recipes()
    assert {"demo", "llada8b/math_nara", "llada8b/commonsense_lora"} <= {r.name for r in recipes}
    for r in recipes:
        config = load_recipe(r.path)
        config.adapter.build()
        assert r.summary, f"{r.path} needs a header comment"
        assert "nara train" in r.path.read_text().split("\n\n")[0], f"{r.path}: header command"


def test_paper_recipes_use_the_paper_settings():
    by_name = {r.name: load_recipe(r.path) for r in find_recipes()}
    for task in ("commonsense", "math", "code"):
        for method in ("lora", "nara"):
            c = by_name[f"llada8b/{task}_{method}"]
            a = c.adapter.build()
            assert a.r == 32 and a.dropout == 0.05
            assert list(a.target_modules) == ["q_proj", "k_proj", "v_proj", "attn_out"]
            t = c.training
            assert t.global_batch_size == 32 and t.max_grad_norm == 1.0
            assert t.lr == (1e-5 if task == "commonsense" else 1e-4)
            assert t.epochs == (10 if task == "math" else 1)
            assert c.data.max_length == 512
