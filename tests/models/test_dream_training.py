"""Fine-tuning Dream: every adapter method on Dream's module names, and the CLI end to end.

Dream names its linears as Qwen2 does (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``);
each method of nara is attached there on a random tiny Dream, takes an optimisation step of the
diffusion loss (read through the shifted-logit convention), saves, loads back exactly, and
samples with Dream's sampler. Then ``nara train`` runs a NaRA SFT recipe of configs/dream7b/ on a
tiny Dream folder and ``nara generate`` samples from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from models_support import method_config, two_step_overrides

import nara
from nara.cli import main
from nara.diffusion import diffusion_loss, generate
from nara.models import DreamModel, tiny_dream_config
from nara.training.adapters import adapter_methods

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_support import arith_files, build_char_tokenizer  # noqa: E402,F401  (fixture)

DREAM_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPES = Path(__file__).parents[2] / "configs" / "dream7b"
METHODS = sorted(set(adapter_methods()) - {"trajectory_router"})  # composes trained modules


def _config(method: str):
    return method_config(method, DREAM_LINEARS, "down_proj")  # Dream's feed-forward output


def _dream(seed: int = 0) -> DreamModel:
    torch.manual_seed(seed)
    return DreamModel(tiny_dream_config())


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 126, (2, 10), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :3] = False
    return ids, maskable


def _loss(model: torch.nn.Module) -> torch.Tensor:
    ids, maskable = _batch()
    t = torch.tensor([0.3, 0.8])
    return diffusion_loss(model, ids, maskable, 127, t=t, generator=torch.Generator()).loss


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_loads_and_samples_on_dream(method, tmp_path):
    model = nara.add_adapters(_dream(), _config(method))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, method
    before = _loss(model)
    before.backward()
    with torch.no_grad():
        for p in trainable:
            p -= 0.05 * p.grad.sign()  # a step that moves every adapter tensor
    after = _loss(model).detach()
    assert torch.isfinite(after) and after != before.detach()

    nara.save_adapters(model, tmp_path)
    loaded = nara.load_adapters(_dream(), tmp_path).eval()
    model.eval()
    ids, _ = _batch()
    lam = torch.tensor([0.5, 0.5])
    with torch.no_grad(), nara.noise_level(model, lam), nara.noise_level(loaded, lam):
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    answers = generate(loaded, ids[:, :3], mask_token_id=127, gen_length=4, steps=2)
    assert answers.shape == (2, 4)


def test_trajectory_modules_compose_on_dream(tmp_path):
    sources = []
    for seed in (1, 2):
        model = nara.add_adapters(_dream(), _config("trajectory"))
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(seed))
        nara.save_adapters(model, tmp_path / str(seed))
        sources.append(str(tmp_path / str(seed)))
    composed = nara.compose_trajectories(_dream(), sources)
    _loss(composed).backward()
    router = [p for p in composed.parameters() if p.requires_grad]
    assert router and all(p.grad is not None for p in router)


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory) -> Path:
    """A saved random tiny Dream (released config layout) with a character tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_dream")
    _dream().save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


def test_nara_train_dream_recipe_then_generate(dream_dir, arith_files, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    overrides = two_step_overrides(
        dream_dir, arith_files, out, "model.dtype=float32", "data.val_max_examples=8",
        "adapter.hidden_sizes=[16]", "training.gradient_checkpointing=false",
    )  # fmt: skip
    assert main(["train", str(RECIPES / "math_nara.yaml"), *overrides, "--no-progress"]) == 0
    adapter = out / "final"
    assert (adapter / "adapter_model.safetensors").is_file()
    capsys.readouterr()

    prompt = ["--prompt", "1+2=", "--gen-length", "4", "--steps", "2"]
    assert main(["generate", "--model", str(dream_dir), "--adapter", str(adapter), *prompt]) == 0
    assert main(["generate", "--model", str(dream_dir), *prompt, "--top-k", "3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2
