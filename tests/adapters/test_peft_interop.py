"""nara's LoRA, DoRA and HiRA match PEFT's given the same weights; PEFT folders load into nara."""

from __future__ import annotations

import pytest
import torch
from adapters_util import TARGETS, run
from peft import HiraConfig, LoraConfig, get_peft_model

import nara
from nara.adapters import adapter_layers, load_peft_adapters


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 32, (3, 7), generator=torch.Generator().manual_seed(0))


def peft_model(tiny_lm, config):
    """A PEFT model on the tiny LM with every adapter tensor moved off its init."""
    model = get_peft_model(tiny_lm(), config)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def peft_merged_weights(model) -> dict[str, torch.Tensor]:
    merged = model.merge_and_unload()
    return {n: m.weight for n, m in merged.named_modules() if n.endswith(tuple(TARGETS))}


def assert_merged_match(model, expected: dict[str, torch.Tensor]) -> None:
    nara.merge_adapters(model)
    for name, layer in adapter_layers(model).items():
        torch.testing.assert_close(layer.weight, expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_peft_lora_and_dora_folders_load_and_match(tiny_lm, ids, tmp_path, use_dora):
    reference = peft_model(
        tiny_lm, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=use_dora)
    )
    expected = reference(ids)
    reference.save_pretrained(tmp_path)
    model = nara.load_adapters(tiny_lm(), tmp_path).eval()  # detects the PEFT folder
    assert model.nara_hub.config.method == ("dora" if use_dora else "lora")
    torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-6)
    assert_merged_match(model, peft_merged_weights(reference))


def test_hira_matches_peft_hira(tiny_lm, ids):
    reference = peft_model(tiny_lm, HiraConfig(r=4, target_modules=TARGETS))
    model = nara.add_adapters(tiny_lm(), nara.HiRAConfig(r=4, target_modules=TARGETS)).eval()
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            theirs = reference.base_model.model.get_submodule(name)
            layer.hira_A.copy_(theirs.hira_A["default"])
            layer.hira_B.copy_(theirs.hira_B["default"])
    torch.testing.assert_close(model(ids), reference(ids), rtol=1e-5, atol=1e-6)
    assert_merged_match(model, peft_merged_weights(reference))


def test_peft_lora_starts_a_nara_adapter_with_identical_outputs(tiny_lm, ids, tmp_path):
    reference = peft_model(tiny_lm, LoraConfig(r=4, lora_alpha=16, target_modules=TARGETS))
    expected = reference(ids)
    reference.save_pretrained(tmp_path)
    model = load_peft_adapters(tiny_lm(), tmp_path, method="nara", eta=0.1).eval()
    assert model.nara_hub.config.scaling == 4.0  # PEFT's lora_alpha / r, kept explicitly
    for lam in [0.0, 0.5, torch.tensor([0.2, 0.6, 1.0])]:
        torch.testing.assert_close(run(model, ids, lam=lam, density=None), expected)


def test_peft_dora_cannot_load_as_plain_lora(tiny_lm, tmp_path):
    reference = peft_model(tiny_lm, LoraConfig(r=2, target_modules=TARGETS, use_dora=True))
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is DoRA .* use method='dora' or 'nara_dora'"):
        load_peft_adapters(tiny_lm(), tmp_path, method="lora")
