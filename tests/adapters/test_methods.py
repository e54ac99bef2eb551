"""The shared table: every adapter method goes through the same behavioural checks."""

from __future__ import annotations

import pytest
import torch
from adapters_util import CASE_PARAMS, DENSITY, LAM, randomize, run

import nara
from nara.adapters import adapter_layers, inject
from nara.adapters.layer import LAYERS


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 32, (4, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_zero_init_equals_base_model(make_config, tiny_lm, ids):
    base = tiny_lm()(ids)
    model = nara.add_adapters(tiny_lm(), make_config())
    torch.testing.assert_close(run(model, ids), base, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_only_adapters_train(make_config, tiny_lm, ids):
    model = nara.add_adapters(tiny_lm(), make_config())
    randomize(model)
    adapter_ids = {id(p) for p in inject.adapter_parameters(model).values()}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) in adapter_ids), name
    run(model, ids).square().mean().backward()
    for name, p in inject.adapter_parameters(model).items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    count = nara.trainable_parameters(model)
    assert count.trainable == sum(p.numel() for p in inject.adapter_parameters(model).values())
    assert "trainable" in str(count)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_save_load_round_trip_is_exact(make_config, tiny_lm, ids, tmp_path):
    model = nara.add_adapters(tiny_lm(), make_config())
    randomize(model)
    expected = run(model, ids)
    nara.save_adapters(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    torch.manual_seed(123)  # the fresh adapters draw different random values (Fourier w, A)
    loaded = nara.load_adapters(tiny_lm(), tmp_path)
    assert torch.equal(run(loaded, ids), expected)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_merge_then_unmerge(make_config, tiny_lm, ids):
    model = nara.add_adapters(tiny_lm(), make_config())
    randomize(model, std=0.1)
    model.eval()
    original = {n: layer.weight.clone() for n, layer in adapter_layers(model).items()}
    biases = {n: layer.bias for n, layer in adapter_layers(model).items()}
    hub = model.nara_hub
    if LAYERS[hub.method].merge_refusal:  # not a weight update: refused, nothing changed
        with pytest.raises(ValueError, match=f"{hub.method} adapters cannot be merged: "):
            nara.merge_adapters(model)  # refused before any request for a fixed λ
        assert not any(layer.merged for layer in adapter_layers(model).values())
        return
    if hub.needs_noise:
        with pytest.raises(ValueError, match=r"cannot be merged for all λ; .*lam=0\.5"):
            nara.merge_adapters(model)
        lam = 0.4
        expected = run(model, ids, lam=lam, density=0.5)
        nara.merge_adapters(model, lam=lam, density=0.5)
    else:
        expected = run(model, ids)
        nara.merge_adapters(model)
    merged = model(ids)  # merged: no noise level needed any more
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)
    nara.unmerge_adapters(model)
    for n, layer in adapter_layers(model).items():
        assert torch.equal(layer.weight, original[n]), n
        assert layer.bias is biases[n], n  # the original bias tensor (or None) is back
    torch.testing.assert_close(run(model, ids, lam=0.4, density=0.5), expected)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_mixed_lambda_batch_equals_one_by_one(make_config, tiny_lm, ids):
    model = nara.add_adapters(tiny_lm(), make_config())
    randomize(model)
    batch = run(model, ids)
    for i in range(len(ids)):
        single = run(model, ids[i : i + 1], lam=LAM[i : i + 1], density=DENSITY[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_gradient_checkpointing_gives_same_gradients(make_config, tiny_lm, ids):
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = nara.add_adapters(tiny_lm(), make_config())
        randomize(model)
        model.checkpointing = checkpointing
        with nara.noise_level(model, LAM, DENSITY):
            loss = model(ids).square().mean()
        loss.backward()  # outside the context: recomputed blocks must find the same C
        return {n: p.grad for n, p in inject.adapter_parameters(model).items()}

    plain, checkpointed = grads(False), grads(True)
    for name, g in plain.items():
        torch.testing.assert_close(checkpointed[name], g, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("make_config", CASE_PARAMS)
def test_autocast_bf16_runs(make_config, tiny_lm, ids):
    model = nara.add_adapters(tiny_lm(), make_config())
    randomize(model, std=0.1)
    full = run(model, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run(model, ids)
        low.float().square().mean().backward()
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), full, rtol=0.1, atol=0.1)
    assert all(p.grad is not None for p in inject.adapter_parameters(model).values())
