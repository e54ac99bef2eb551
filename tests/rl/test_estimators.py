"""The RL estimators and losses against hand computations on tiny random models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nara import LoRAConfig, NaRAConfig, add_adapters, merge_adapters, noise_level
from nara.adapters.inject import adapter_layers
from nara.models import DreamModel, LLaDAModelLM, tiny_config, tiny_dream_config
from nara.rl import (
    adapter_snapshot,
    adapter_weights,
    adapters_disabled,
    group_advantages,
    grpo_loss,
    kl_k3,
    one_step_inputs,
    per_token_logprobs,
    reference_logprobs,
    wd1_loss,
    wd1_weights,
)

MASK = 127


def _batch() -> tuple[torch.Tensor, ...]:
    """Two left-padded prompts of width 5 and right-padded completions of width 4."""
    prompt = torch.tensor([[126, 126, 5, 6, 7], [8, 9, 10, 11, 12]])
    prompt_attention = (torch.arange(5) >= torch.tensor([[2], [0]])).long()
    completion = torch.tensor([[20, 21, 22, 126], [30, 31, 32, 33]])
    completion_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    return prompt, prompt_attention, completion, completion_mask


def _lora_model(nonzero: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = add_adapters(LLaDAModelLM(tiny_config()), LoRAConfig(r=4)).eval()
    if nonzero:
        with torch.no_grad():
            for layer in adapter_layers(model).values():
                layer.lora_B.normal_(0.0, 0.5)
    return model


def _hand_logprobs(model, prompt, prompt_attention, completion, completion_mask, seed, lam):
    """Mask by hand (same CPU draw), call the raw model, realign, gather at the completion."""
    draw = torch.rand(prompt.shape, generator=torch.Generator().manual_seed(seed))
    masked_prompt = (draw < 0.3) & prompt_attention.bool()
    ids = torch.cat([prompt.masked_fill(masked_prompt, MASK), torch.full_like(completion, MASK)], 1)
    attention = torch.cat([prompt_attention, completion_mask], 1)
    with noise_level(model, lam, density=torch.ones(2)):
        logits = model(ids, attention_mask=attention).logits
    if isinstance(model, DreamModel):  # logit i predicts token i + 1
        logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)
    out = torch.zeros(completion.shape)
    for i in range(2):
        for k in range(completion.shape[1]):
            if completion_mask[i, k]:
                row = F.log_softmax(logits[i, prompt.shape[1] + k].float(), -1)
                out[i, k] = row[completion[i, k]]
    return out


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_estimate_equals_a_hand_computation(family: str) -> None:
    torch.manual_seed(0)
    base = LLaDAModelLM(tiny_config()) if family == "llada" else DreamModel(tiny_dream_config())
    targets = ["q_proj", "v_proj"] if family == "dream" else "all-linear"
    model = add_adapters(base, NaRAConfig(r=4, target_modules=targets)).eval()
    prompt, pa, completion, cm = _batch()
    with torch.no_grad():
        got = per_token_logprobs(
            model,
            prompt,
            completion,
            mask_token_id=MASK,
            prompt_mask_prob=0.3,
            generator=torch.Generator().manual_seed(3),
            prompt_attention=pa,
            completion_mask=cm,
        )
        want = _hand_logprobs(model, prompt, pa, completion, cm, 3, torch.ones(2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got[0, 3] == 0.0  # padding


def test_lambda_is_the_masked_fraction_of_the_completion() -> None:
    model = add_adapters(LLaDAModelLM(tiny_config()), NaRAConfig(r=4)).eval()
    seen: list[torch.Tensor] = []
    for layer in model.modules():
        if type(layer).__name__ == "Hypernetwork":
            layer.register_forward_hook(lambda m, a, o: seen.append(a[0].clone()))
    prompt, pa, completion, cm = _batch()
    with torch.no_grad():
        per_token_logprobs(
            model, prompt, completion, mask_token_id=MASK, prompt_attention=pa, completion_mask=cm
        )
    assert seen and all(torch.equal(s.flatten(), torch.ones(2)) for s in seen)


def test_one_seed_gives_one_mask_and_another_differs() -> None:
    prompt = torch.randint(0, 100, (4, 40))
    completion = torch.randint(0, 100, (4, 6))

    def mask(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return one_step_inputs(prompt, completion, mask_token_id=MASK, generator=g)[1]

    a, b, c = mask(1), mask(1), mask(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(a[:, 40:].all())  # the completion is fully masked
    frac = a[:, :40].float().mean().item()
    assert 0.03 < frac < 0.35  # about p = 0.15 of 160 prompt tokens


def test_advantages_equal_numpy() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.25, 2.0, 2.0, 2.0, 2.0, 0.0, 3.0, 1.0, 1.0])
    r = rewards.numpy().reshape(3, 4)
    want = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(group_advantages(rewards, 4).numpy(), want.ravel(), rtol=1e-5)
    assert bool((group_advantages(rewards, 4)[4:8] == 0).all())  # equal rewards: no signal
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(rewards, 5)


def test_clipped_objective_value_and_gradient_by_hand() -> None:
    eps = 0.2
    old = torch.zeros(4, 1)
    # ratios 1.5 (A>0: clipped), 1.1 (A>0: not clipped), 0.5 (A<0: clipped), 1.5 (A<0: not)
    logp = torch.log(torch.tensor([[1.5], [1.1], [0.5], [1.5]])).requires_grad_(True)
    adv = torch.tensor([2.0, 1.0, -1.0, -0.5])
    out = grpo_loss(logp, old, adv, torch.ones(4, 1), clip_eps=eps, beta=0.0)
    want = -np.mean([1.2 * 2.0, 1.1 * 1.0, 0.8 * -1.0, 1.5 * -0.5])
    assert out.loss.item() == pytest.approx(want, rel=1e-6)
    out.loss.backward()
    # d(-obj/4)/dlogp = -A·ρ/4 where unclipped, 0 where clipped
    torch.testing.assert_close(logp.grad.flatten(), torch.tensor([0.0, -1.1 / 4, 0.0, 0.75 / 4]))
    assert out.clip_fraction.item() == 0.5


def test_kl_term_by_hand_and_padding_ignored() -> None:
    logp = torch.tensor([[-1.0, -2.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    k = [np.exp(-0.5) + 0.5 - 1, np.exp(1.0) - 1.0 - 1]
    torch.testing.assert_close(kl_k3(logp, ref)[0, :2], torch.tensor(k, dtype=torch.float32))
    logp.requires_grad_(True)
    out = grpo_loss(logp, logp.detach(), torch.zeros(1), mask, ref_logp=ref, beta=0.5)
    assert out.loss.item() == pytest.approx(0.5 * np.mean(k), rel=1e-6)
    assert out.kl.item() == pytest.approx(np.mean(k), rel=1e-6)
    out.loss.backward()
    # d k3 / d logp = 1 − exp(ref − logp); the loss is 0.5 · mean of the two real tokens
    grad = [0.5 * (1 - np.exp(-0.5)) / 2, 0.5 * (1 - np.exp(1.0)) / 2, 0.0]
    torch.testing.assert_close(logp.grad[0], torch.tensor(grad, dtype=torch.float32))


def _logprobs(model, seed: int = 5, ref: bool = False, **kwargs) -> torch.Tensor:
    prompt, pa, completion, cm = _batch()
    fn = reference_logprobs if ref else per_token_logprobs
    return fn(
        model,
        prompt,
        completion,
        mask_token_id=MASK,
        generator=torch.Generator().manual_seed(seed),
        prompt_attention=pa,
        completion_mask=cm,
        **kwargs,
    )


def test_kl_is_zero_for_a_zero_initialised_lora() -> None:
    model = _lora_model()
    logp, ref = _logprobs(model), _logprobs(model, ref=True)
    torch.testing.assert_close(logp, ref)
    out = grpo_loss(logp, logp.detach(), torch.ones(2), _batch()[3], ref_logp=ref)
    assert out.kl.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("config", [LoRAConfig(r=4), NaRAConfig(r=4)], ids=["lora", "nara"])
def test_reference_pass_switches_the_adapter_off(config) -> None:
    torch.manual_seed(0)
    base = LLaDAModelLM(tiny_config()).eval()
    plain = copy.deepcopy(base)  # the same weights, no adapter at all
    model = add_adapters(base, config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
        want = _logprobs(plain)
        logp = _logprobs(model)
    ref = _logprobs(model, ref=True)
    torch.testing.assert_close(ref, want)  # the base model, up to float error
    assert (logp - ref).abs().max() > 1e-2  # the adapter matters outside the block
    assert not any(layer.merged for layer in adapter_layers(model).values())  # restored
    assert not model.nara_hub.merged


def test_disabling_restores_the_adapters_after_an_error() -> None:
    model = _lora_model(nonzero=True)
    with pytest.raises(RuntimeError, match="inside"), adapters_disabled(model):
        raise RuntimeError("inside")
    assert not any(layer.merged for layer in adapter_layers(model).values())
    assert not model.nara_hub.merged


def test_disabling_refuses_merged_adapters_and_models_without_any() -> None:
    bare = LLaDAModelLM(tiny_config())
    with pytest.raises(ValueError, match="no nara adapters"), adapters_disabled(bare):
        pass
    model = merge_adapters(_lora_model(nonzero=True))
    with pytest.raises(ValueError, match="unmerge_adapters"), adapters_disabled(model):
        pass


@pytest.mark.parametrize("config", [LoRAConfig(r=4), NaRAConfig(r=4)], ids=["lora", "nara"])
def test_reference_with_a_snapshot_is_the_starting_adapter(config) -> None:
    """A starting adapter's snapshot is the reference: after the policy moved, the reference
    pass equals the starting adapter computed directly (an independent copy of the model), and
    the policy's own tensors are back afterwards."""
    torch.manual_seed(0)
    model = add_adapters(LLaDAModelLM(tiny_config()), config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    start = copy.deepcopy(model)  # the starting adapter, kept independently
    snapshot = adapter_snapshot(model)
    with torch.no_grad():
        for p in model.parameters():  # "RL" moves the policy
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    moved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        want, policy = _logprobs(start), _logprobs(model)
    ref = _logprobs(model, ref=True, reference=snapshot)
    torch.testing.assert_close(ref, want, rtol=0, atol=0)
    assert (policy - ref).abs().max() > 1e-2
    assert all(torch.equal(p, moved[n]) for n, p in model.named_parameters() if n in moved)
    start_kl = grpo_loss(want, want, torch.ones(2), _batch()[3], ref_logp=ref).kl
    assert start_kl.item() == 0.0  # the policy at RL start has KL exactly 0 to the reference


def test_swapped_weights_are_restored_after_an_error_and_checked() -> None:
    model = _lora_model(nonzero=True)
    own = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    zeros = {k: torch.zeros_like(v) for k, v in adapter_snapshot(model).items()}
    with pytest.raises(RuntimeError, match="inside"), adapter_weights(model, zeros):
        assert all(not p.any() for n, p in model.named_parameters() if n in own)
        raise RuntimeError("inside")
    assert all(torch.equal(p, own[n]) for n, p in model.named_parameters() if n in own)
    name = next(iter(zeros))
    fewer = {k: v for k, v in zeros.items() if k != name}
    with pytest.raises(ValueError, match=f"missing \\['{name}'\\]"), adapter_weights(model, fewer):
        pass
    wrong = {**zeros, name: torch.zeros(1, dtype=torch.float64)}
    message = f"reference tensor {name} is \\(1,\\) torch.float64"
    with pytest.raises(ValueError, match=message), adapter_weights(model, wrong):
        pass


@pytest.mark.parametrize("objective", ["grpo", "wd1"])
def test_a_few_steps_raise_the_target_token_likelihood(objective: str) -> None:
    """Reward = fraction of the target token in fixed completions; the policy should move
    probability toward the better completions, so the reward-weighted surrogate rises."""
    model = _lora_model()
    target = 40
    prompt = torch.tensor([[5, 6, 7, 8]]).repeat(4, 1)
    completion = torch.tensor(
        [[40, 40, 40, 40], [40, 40, 9, 9], [9, 9, 9, 9], [40, 9, 9, 9]], dtype=torch.long
    )
    cm = torch.ones_like(completion)
    rewards = (completion == target).float().mean(-1)
    adv = group_advantages(rewards, 4)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)

    def logp() -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return per_token_logprobs(model, prompt, completion, mask_token_id=MASK, generator=g)

    def surrogate() -> float:  # Σ_i A_i · mean_t logp: ascent raises the expected reward
        with torch.no_grad():
            return float((adv * logp().mean(-1)).sum())

    before = surrogate()
    old = logp().detach()
    for _ in range(5):
        lp = logp()
        if objective == "grpo":
            ref = _logprobs_ref(model, prompt, completion)
            loss = grpo_loss(lp, old, adv, cm, ref_logp=ref).loss
        else:
            loss = wd1_loss(lp, rewards, cm, 4)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert surrogate() > before + 0.1


def _logprobs_ref(model, prompt, completion) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return reference_logprobs(model, prompt, completion, mask_token_id=MASK, generator=g)


def test_wd1_weights_and_loss_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    a = group_advantages(rewards, 2).view(2, 2).numpy()
    sm = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    smn = np.exp(-a) / np.exp(-a).sum(1, keepdims=True)
    w = (sm - smn).ravel()
    np.testing.assert_allclose(wd1_weights(rewards, 2).numpy(), w, rtol=1e-5)
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -2.0], [-0.5, 0.0], [-4.0, -1.0]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1]])
    seq = np.array([-2.0, -2.0, -0.5, -2.5])
    want = -(w * seq).mean()
    assert wd1_loss(logp, rewards, mask, 2).item() == pytest.approx(want, rel=1e-5)


def test_bad_inputs_name_the_value() -> None:
    model = _lora_model()
    prompt, pa, completion, cm = _batch()
    with pytest.raises(ValueError, match="prompt_mask_prob"):
        per_token_logprobs(model, prompt, completion, mask_token_id=MASK, prompt_mask_prob=1.0)
    with pytest.raises(ValueError, match="repeat each prompt"):
        per_token_logprobs(model, prompt[:1], completion, mask_token_id=MASK)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="clip_eps"):
        grpo_loss(
            torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3), clip_eps=0
        )
