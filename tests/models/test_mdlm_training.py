"""Fine-tuning MDLM from the command line: ``nara train`` runs each recipe of configs/mdlm/ on a
random tiny MDLM folder (adapters on attn_qkv, attn_out, mlp.0, mlp.2; MDLM's NELBO loss), and
``nara generate`` samples from it with MDLM's ancestral sampler, with and without the adapter.

The folder's tokenizer is the character tokenizer of the training tests: like MDLM's (GPT-2's
with [MASK] appended last), its mask token is the vocabulary's last id, 127 of the tiny config's
128.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from models_support import two_step_overrides
from safetensors import safe_open

from nara.cli import main
from nara.models import MDLMModel, tiny_mdlm_config

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import arith_files, build_char_tokenizer  # noqa: E402,F401  (fixture)

RECIPES = Path(__file__).parents[2] / "configs" / "mdlm"
MDLM_LINEARS = {"attn_qkv", "attn_out", "mlp.0", "mlp.2"}


@pytest.fixture(scope="module")
def mdlm_dir(tmp_path_factory) -> Path:
    """A saved random tiny MDLM (released key layout) with a tokenizer whose mask id is last."""
    folder = tmp_path_factory.mktemp("tiny_mdlm")
    torch.manual_seed(0)
    MDLMModel(tiny_mdlm_config()).save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("recipe", ["math_lora", "math_nara"])
def test_nara_train_mdlm_recipe_then_generate(recipe, mdlm_dir, arith_files, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    overrides = two_step_overrides(mdlm_dir, arith_files, out, "data.val_max_examples=8")
    if recipe == "math_nara":
        overrides.append("adapter.hidden_sizes=[16]")
    assert main(["train", str(RECIPES / f"{recipe}.yaml"), *overrides, "--no-progress"]) == 0
    adapter = out / "final"
    assert (adapter / "adapter_model.safetensors").is_file()

    # the adapter sits on exactly MDLM's four linears of every block, not on the time embedding
    with safe_open(adapter / "adapter_model.safetensors", "pt") as saved:
        modules = {key.rsplit(".", 1)[0] for key in saved.keys()}  # noqa: SIM118
    adapted = {name for name in modules if name.startswith("backbone.")}  # NaRA's hub aside
    blocks = range(tiny_mdlm_config().n_blocks)
    assert adapted == {f"backbone.blocks.{i}.{name}" for i in blocks for name in MDLM_LINEARS}
    capsys.readouterr()

    prompt = ["--prompt", "1+2=", "--gen-length", "4", "--steps", "2"]
    assert main(["generate", "--model", str(mdlm_dir), "--adapter", str(adapter), *prompt]) == 0
    assert main(["generate", "--model", str(mdlm_dir), *prompt]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2
