"""The noise context: errors a user can act on, checkpointing on the real LLaDA, plain models."""

from __future__ import annotations

import pytest
import torch
from adapters_util import randomize, run

import nara
from nara.adapters import inject
from nara.models import LLaDAModelLM, tiny_config

NO_LAMBDA = r"Wrap the call in `with nara\.noise_level\(model, lam\):`"


@pytest.fixture
def nara_lm(tiny_lm):
    return nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4))


def test_noise_aware_call_without_noise_level_says_how_to_set_it(nara_lm):
    ids = torch.randint(0, 32, (2, 5))
    with pytest.raises(RuntimeError, match=NO_LAMBDA):
        nara_lm(ids)
    run(nara_lm, ids, lam=0.5, density=None)  # inside the context it works
    with pytest.raises(RuntimeError, match=NO_LAMBDA):
        nara_lm(ids)  # and after it the error is back
    block = nara_lm.transformer["blocks"][0]
    with pytest.raises(RuntimeError, match=NO_LAMBDA):
        block(torch.randn(2, 5, 16))  # a submodule called directly, after a forward


@pytest.mark.parametrize("lam", [1.5, -0.1, float("nan"), torch.tensor([0.2, 1.01])])
def test_lambda_outside_unit_interval_is_rejected(nara_lm, lam):
    with (
        pytest.raises(ValueError, match=r"must lie in \[0, 1\].*masked_fraction"),
        nara.noise_level(nara_lm, lam),
    ):
        pass


def test_lambda_of_wrong_shape_or_size_is_rejected(nara_lm):
    with (
        pytest.raises(ValueError, match=r"shape \(batch,\)"),
        nara.noise_level(nara_lm, torch.zeros(2, 2)),
    ):
        pass
    with pytest.raises(ValueError, match=r"got 3 noise values .* batch size 4 .* shape \(4,\)"):
        run(nara_lm, torch.randint(0, 32, (4, 5)), lam=torch.tensor([0.1, 0.2, 0.3]), density=None)


def test_density_mode_without_density_says_what_to_pass(tiny_lm):
    model = nara.add_adapters(tiny_lm(), nara.NaRAConfig(r=4, input_mode="density"))
    with pytest.raises(ValueError, match=r"density=\.\.\..*local_mask_density"):
        run(model, torch.randint(0, 32, (2, 5)), lam=0.5, density=None)


def test_plain_and_static_models_accept_and_ignore_the_context(tiny_lm):
    ids = torch.randint(0, 32, (2, 5))
    plain = tiny_lm()
    torch.testing.assert_close(run(plain, ids, lam=0.3, density=None), plain(ids))
    lora = nara.add_adapters(tiny_lm(), nara.LoRAConfig(r=4))
    randomize(lora)
    torch.testing.assert_close(
        run(lora, ids, lam=torch.tensor([0.1, 0.9]), density=None), lora(ids)
    )


def test_hypernetwork_runs_once_per_forward(nara_lm):
    calls = []
    hyper = nara_lm.nara_hub.conditioners["global"]
    hyper.register_forward_hook(lambda *args: calls.append(1))
    run(nara_lm, torch.randint(0, 32, (2, 5)), lam=torch.tensor([0.1, 0.9]), density=None)
    assert len(calls) == 1  # 8 adapted layers, one hypernetwork call


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_llada_gradient_checkpointing_gives_same_gradients(reentrant):
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = nara.add_adapters(LLaDAModelLM(tiny_config()), nara.NaRADoRAConfig(r=4))
        randomize(model, std=0.1)
        if checkpointing:
            # transformers 5 renamed gradient_checkpointing_enable; both take the kwargs first
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)({"use_reentrant": reentrant})
        model.train()
        ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(0))
        with nara.noise_level(model, torch.tensor([0.2, 0.8])):
            loss = model(ids).logits.square().mean()
        loss.backward()
        return {n: p.grad for n, p in inject.adapter_parameters(model).items()}

    plain, checkpointed = grads(False), grads(True)
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, rtol=1e-5, atol=1e-8, msg=name)
