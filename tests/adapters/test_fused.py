"""Shared-input groups (fused.py): q/k/v's A projections as one matmul give the same outputs and
gradients as one matmul per layer, on LLaDA and with gradient checkpointing; dropout and other
inputs stay unfused."""

from __future__ import annotations

import copy

import pytest
import torch
from adapters_util import CASE_PARAMS, DENSITY, LAM, randomize, run

import nara
from nara.adapters import adapter_layers, inject
from nara.adapters.lora import LoRALayer
from nara.models import LLaDAModelLM, tiny_config


def unfused(model: torch.nn.Module) -> torch.nn.Module:
    """The same model with every layer projecting alone (the reference)."""
    model = copy.deepcopy(model)
    for layer in adapter_layers(model).values():
        object.__setattr__(layer, "_shared_input", None)
    return model


def members(model: torch.nn.Module) -> set[str]:
    """Names of the layers that take part in a fused projection."""
    names = {id(m): n for n, m in adapter_layers(model).items()}
    groups = {
        id(g): g for m in adapter_layers(model).values() if (g := getattr(m, "_shared_input", None))
    }
    return {names[id(m)] for g in groups.values() for m in (g.members or [])}


def lora_core(model: torch.nn.Module) -> bool:
    """True for the methods built on LoRA's A/B core (all but HiRA and Multi-LoRA)."""
    return isinstance(next(iter(adapter_layers(model).values())), LoRALayer)


def train_steps(model: torch.nn.Module, ids: torch.Tensor, steps: int = 3) -> list[torch.Tensor]:
    """Outputs of ``steps`` forward/backward passes (gradients accumulate, weights unchanged)."""
    outs = []
    for _ in range(steps):
        out = run(model, ids)
        out = getattr(out, "logits", out)  # LLaDA returns an output object, TinyLM a tensor
        out.square().mean().backward()
        outs.append(out.detach())
    return outs


def assert_same(model_a, model_b, outs_a, outs_b) -> None:
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    grads_b = {n: p.grad for n, p in inject.adapter_parameters(model_b).items()}
    for name, p in inject.adapter_parameters(model_a).items():
        torch.testing.assert_close(p.grad, grads_b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_fused_equals_unfused_on_llada(make_config):
    torch.manual_seed(0)
    model = nara.add_adapters(LLaDAModelLM(tiny_config()), make_config())
    randomize(model)
    reference = unfused(model)
    ids = torch.randint(0, 120, (4, 9), generator=torch.Generator().manual_seed(0))
    assert_same(model, reference, train_steps(model, ids), train_steps(reference, ids))
    fused = members(model)
    if lora_core(model):
        # q, k and v read the normed hidden state; attn_out reads the attention output
        expected = {
            f"model.transformer.blocks.{i}.{p}"
            for i in range(2)
            for p in ("q_proj", "k_proj", "v_proj")
        }
        assert fused == {n for n in expected if n in adapter_layers(model)}
    else:
        assert fused == set()  # HiRA, Multi-LoRA: no LoRA core to fuse


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_fused_with_gradient_checkpointing(make_config, tiny_lm):
    ids = torch.randint(0, 32, (4, 7), generator=torch.Generator().manual_seed(0))
    model = nara.add_adapters(tiny_lm(), make_config())
    randomize(model)
    reference = unfused(model)
    model.checkpointing = True
    assert_same(model, reference, train_steps(model, ids), train_steps(reference, ids))
    assert bool(members(model)) == lora_core(model)  # the fused path ran in steps 2 and 3


def test_fused_in_eval_and_no_grad():
    torch.manual_seed(0)
    model = nara.add_adapters(LLaDAModelLM(tiny_config()), nara.NaRAConfig(r=4)).eval()
    randomize(model)
    reference = unfused(model)
    ids = torch.randint(0, 120, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [run(model, ids) for _ in range(3)]
        expected = run(reference, ids)
    for out in outs:
        torch.testing.assert_close(out.logits, expected.logits, rtol=1e-5, atol=1e-6)
    assert len(members(model)) == 6


def test_dropout_keeps_each_layer_alone():
    torch.manual_seed(0)
    model = nara.add_adapters(LLaDAModelLM(tiny_config()), nara.LoRAConfig(r=4, dropout=0.5))
    ids = torch.randint(0, 120, (2, 5))
    for _ in range(2):
        run(model, ids, lam=LAM[:2], density=DENSITY[:2])
    assert members(model) == set()  # in training, each layer drops its own copy of the input
