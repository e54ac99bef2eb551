"""Switching the method of a shipped recipe by override: `nara train RECIPE adapter.method=<m>`
drops the recipe's fields the new method does not have, with a one-line notice, and trains."""

from __future__ import annotations

import json

import pytest

from nara.cli import main
from nara.training.adapters import ALIASES, adapter_methods
from nara.training.config import ConfigError, load_recipe
from nara.training.recipes import find_recipes, resolve_recipe

METHODS = sorted({*adapter_methods(), *ALIASES})
RECIPES = sorted(r.name for r in find_recipes())


NEEDS_MORE = {"trajectory_router": "sources"}  # composes modules trained before: name them


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_loads_on_every_recipe(recipe, method, capsys):
    source = load_recipe(resolve_recipe(recipe)).adapter
    capsys.readouterr()
    if method in NEEDS_MORE:
        with pytest.raises(ConfigError, match=NEEDS_MORE[method]):
            load_recipe(resolve_recipe(recipe), [f"adapter.method={method}"])
        return
    config = load_recipe(resolve_recipe(recipe), [f"adapter.method={method}"])
    assert config.adapter.method == method
    kept = set(config.adapter.options)
    assert {k: source.options[k] for k in kept} == config.adapter.options  # carried over as is
    dropped = set(source.options) - kept
    err = capsys.readouterr().err
    if dropped:
        assert err.count("\n") == 1 and "dropped" in err
        assert all(name in err for name in dropped)
    else:
        assert "dropped" not in err


def test_targets_carry_over_only_between_methods_with_the_same_default_targets(capsys):
    """LoRA keeps NaRA's attention + MLP targets (a fair comparison); (IA)3 rescales keys, values
    and the MLP by design, so the recipe's targets give way to its own."""
    lora = load_recipe(resolve_recipe("demo"), ["adapter.method=lora"]).adapter.build()
    recipe_targets = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
    assert lora.target_modules == recipe_targets
    capsys.readouterr()
    ia3 = load_recipe(resolve_recipe("demo"), ["adapter.method=ia3"]).adapter.build()
    assert ia3.target_modules == ["k_proj", "v_proj", "ff_out"]
    assert "target_modules" in capsys.readouterr().err
    given = ["adapter.method=ia3", "adapter.target_modules=[v_proj,ff_out]"]
    assert load_recipe(resolve_recipe("demo"), given).adapter.build().target_modules == [
        "v_proj",
        "ff_out",
    ]


def test_a_field_given_with_the_new_method_is_kept_and_checked(capsys):
    with pytest.raises(ConfigError, match="unknown key 'adapter.eta'"):
        load_recipe(resolve_recipe("demo"), ["adapter.method=lora", "adapter.eta=0.2"])
    capsys.readouterr()
    config = load_recipe(resolve_recipe("demo"), ["adapter.method=nara_dora", "adapter.eta=0.2"])
    assert config.adapter.build().eta == 0.2
    assert "dropped" not in capsys.readouterr().err


@pytest.mark.parametrize("method", METHODS)
def test_demo_trains_with_every_method_by_override(method, tmp_path, capsys):
    """One update of each method on the demo recipe as shipped (the embedded model)."""
    out = tmp_path / method
    args = ["train", "demo", f"adapter.method={method}", f"output_dir={out}"]
    fast = [
        "data.max_examples=8",
        "data.val_max_examples=4",
        "training.max_steps=1",
        "training.batch_size=4",
        "--no-progress",
    ]
    if method in NEEDS_MORE:  # the router composes two trajectory modules trained first
        modules = [tmp_path / "a", tmp_path / "b"]
        for module in modules:
            assert main(["train", "demo", "adapter.method=trajectory", f"output_dir={module}", *fast]) == 0  # fmt: skip
        args.append(f"adapter.sources=[{modules[0] / 'final'}, {modules[1] / 'final'}]")
    assert main([*args, *fast]) == 0, capsys.readouterr().err
    assert json.loads((out / "final" / "adapter_config.json").read_text())
