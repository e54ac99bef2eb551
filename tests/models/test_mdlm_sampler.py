"""MDLM's sampler and fine-tuning: equal to the release, the cache, every weight adapter.

The unconditional samples under tests/models/data/ were drawn by the released cached ancestral
sampler (``_sample`` with ``ddpm_cache`` and noise removal) on the released-format tiny
checkpoint, from torch's generator seeded as recorded (scripts/make_mdlm_reference.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from models_support import method_config
from safetensors.torch import load_file

import nara
from nara.diffusion import diffusion_loss, generate
from nara.diffusion.mdlm_sampling import mdlm_sample
from nara.models import MDLMModel, load_model, tiny_mdlm_config
from nara.training.adapters import adapter_methods

DATA = Path(__file__).parent / "data"
MDLM_LINEARS = ["attn_qkv", "attn_out", "mlp.0", "mlp.2"]
NEEDS_TOKEN_EMBEDDINGS = {"prompt_tuning", "p_tuning", "prefix_tuning"}
METHODS = sorted(set(adapter_methods()) - NEEDS_TOKEN_EMBEDDINGS - {"trajectory_router"})


@pytest.fixture(scope="module")
def released() -> MDLMModel:
    return load_model(DATA / "mdlm_tiny").model


@pytest.mark.parametrize(("steps", "seed"), [(4, 0), (8, 1), (12, 2)])
def test_unconditional_samples_equal_released_sampler(released, steps, seed):
    expected = load_file(DATA / "mdlm_reference.safetensors")[f"sample_{steps}_{seed}"]
    empty = torch.zeros(2, 0, dtype=torch.long)
    out = generate(
        released,
        empty,
        mask_token_id=63,
        gen_length=12,
        steps=steps,
        generator=torch.Generator().manual_seed(seed),
    )
    assert torch.equal(out, expected)


def _count_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _random_nara(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = nara.add_adapters(MDLMModel(tiny_mdlm_config()), _config("nara"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.2)
    return model.eval()


def test_cache_reuses_predictions_and_agrees_with_recomputing_under_a_noise_aware_adapter():
    """With NaRA attached the network sees λ, a function of its input: an unchanged input has
    the same λ, so the cached sampler draws exactly what the uncached one draws, with fewer
    forward passes (the first step of 32 over 8 tokens changes nothing with high probability)."""
    model = _random_nara()
    prompt = torch.randint(0, 127, (2, 3), generator=torch.Generator().manual_seed(0))
    calls = _count_calls(model)
    runs = {}
    for cache in (True, False):
        calls[0] = 0
        runs[cache] = mdlm_sample(
            model,
            prompt,
            None,
            mask_token_id=127,
            gen_length=8,
            steps=32,
            return_history=False,
            generator=torch.Generator().manual_seed(5),
            cache=cache,
        )[0]
        runs[f"calls_{cache}"] = calls[0]
    assert torch.equal(runs[True], runs[False])
    assert runs["calls_False"] == 33 and runs["calls_True"] < 33


def test_time_conditioned_mdlm_is_refused_at_the_first_step():
    torch.manual_seed(0)
    model = MDLMModel(tiny_mdlm_config(time_conditioning=True)).eval()
    calls = _count_calls(model)
    with pytest.raises(ValueError, match="timesteps"):
        generate(
            model, torch.zeros(1, 2, dtype=torch.long), mask_token_id=127, gen_length=4, steps=4
        )
    assert calls[0] == 1


def test_prompt_is_kept_and_answer_complete(released):
    prompt = torch.tensor([[5, 6, 7], [62, 8, 9]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    out = generate(
        released, prompt, mask, mask_token_id=63, gen_length=6, steps=6, return_history=True
    )
    assert torch.equal(out.history[0][:, :3], prompt)
    assert not bool((out.sequences == 63).any())


def _config(method: str):
    return method_config(method, MDLM_LINEARS, "mlp.2")  # (IA)³ on the MLP's output linear


@pytest.mark.parametrize("method", METHODS)
def test_every_weight_method_trains_saves_loads_and_samples_on_mdlm(method, tmp_path):
    torch.manual_seed(0)
    model = nara.add_adapters(MDLMModel(tiny_mdlm_config()), _config(method))
    ids = torch.randint(0, 127, (2, 10), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :3] = False
    loss = diffusion_loss(model, ids, maskable, 127, t=torch.tensor([0.3, 0.8])).loss
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    nara.save_adapters(model, tmp_path)
    torch.manual_seed(0)
    loaded = nara.load_adapters(MDLMModel(tiny_mdlm_config()), tmp_path).eval()
    model.eval()
    lam = torch.tensor([0.5, 0.5])
    with torch.no_grad(), nara.noise_level(model, lam), nara.noise_level(loaded, lam):
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert generate(loaded, ids[:, :3], mask_token_id=127, gen_length=4, steps=2).shape == (2, 4)


@pytest.mark.parametrize("method", sorted(NEEDS_TOKEN_EMBEDDINGS))
def test_methods_on_token_embeddings_are_refused_clearly(method):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="input_ids|kv_prefix"):
        model = nara.add_adapters(MDLMModel(tiny_mdlm_config()), _config(method))
        with nara.noise_level(model, torch.tensor([0.5])):
            model(torch.zeros(1, 4, dtype=torch.long))


def test_mdlm_loss_is_the_released_continuous_time_nelbo():
    """Per sample: Σ over masked tokens of −log p(x₀) · dσ/expm1(σ) at MDLM's t' = (1 − ε)t + ε,
    with σ(t) = −log(1 − (1 − ε)t) and dσ = (1 − ε)/(1 − (1 − ε)t) (the released log-linear
    schedule), computed here from the masked positions and log-probabilities the loss used."""
    torch.manual_seed(0)
    model = MDLMModel(tiny_mdlm_config()).eval()
    ids = torch.randint(0, 127, (3, 12), generator=torch.Generator().manual_seed(1))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    t = torch.tensor([0.05, 0.5, 0.95])
    out = diffusion_loss(model, ids, maskable, 127, t=t, generator=torch.Generator().manual_seed(2))
    eps = 1e-3
    t_mdlm = (1 - eps) * t + eps
    sigma = -torch.log1p(-(1 - eps) * t_mdlm)
    dsigma = (1 - eps) / (1 - (1 - eps) * t_mdlm)
    noisy = ids.masked_fill(out.masked, 127)
    with torch.no_grad():
        log_p = model(noisy).logits.gather(-1, ids[..., None]).squeeze(-1)  # (B, T)
    expected = (-log_p * out.masked).sum(-1) * (dsigma / torch.expm1(sigma))
    torch.testing.assert_close(out.sample_loss, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.p, (1 - eps) * t_mdlm)
    linear = diffusion_loss(
        model,
        ids,
        maskable,
        127,
        t=t,
        generator=torch.Generator().manual_seed(2),
        schedule="linear",
    )
    torch.testing.assert_close(linear.p, (1 - eps) * t + eps)
    with pytest.raises(ValueError, match="schedule must be one of"):
        diffusion_loss(model, ids, maskable, 127, schedule="cosine")
