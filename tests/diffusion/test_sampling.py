"""generate(): schedule, prompt safety, determinism, padding, guidance, threshold, EOS, λ."""

from __future__ import annotations

import pytest
import torch
from diffusion_support import EOS, MASK, ScriptedModel

from nara.diffusion import generate, transfer_schedule


def _prompts() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Three prompts of lengths 5, 2 and 4, left-padded with EOS (= pad) to length 5."""
    torch.manual_seed(3)
    alone = [torch.randint(0, 120, (n,)) for n in (5, 2, 4)]
    ids = torch.full((3, 5), EOS)
    attention = torch.zeros(3, 5, dtype=torch.long)
    for i, p in enumerate(alone):
        ids[i, 5 - len(p) :] = p
        attention[i, 5 - len(p) :] = 1
    return ids, attention, alone


def _states(out, prompt: torch.Tensor, gen_length: int) -> torch.Tensor:
    """(S + 1, B, T): the initial all-masked state followed by the history."""
    start = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), MASK)], 1)
    return torch.cat([start[None], out.history])


def test_transfer_schedule_spreads_evenly() -> None:
    sched = transfer_schedule(torch.tensor([10, 3, 0, 8]), 4)
    assert sched.tolist() == [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0], [2, 2, 2, 2]]


def test_commits_exactly_the_scheduled_tokens_inside_the_current_block(model) -> None:
    ids, attention, _ = _prompts()
    gen_length, block_length, steps = 10, 5, 6  # 2 blocks, 3 steps each: 2, 2, 1 tokens
    out = generate(
        model,
        ids,
        attention,
        mask_token_id=MASK,
        gen_length=gen_length,
        steps=steps,
        block_length=block_length,
        return_history=True,
    )
    states = _states(out, ids, gen_length)
    assert states.shape == (steps + 1, 3, 15)
    for s in range(steps):
        before, after = states[s], states[s + 1]
        assert torch.equal(after[:, :5], ids), "the prompt changed"
        newly = (before == MASK) & (after != MASK)
        changed = before != after
        assert torch.equal(newly, changed), "a committed token changed"
        block = s // 3
        in_block = torch.zeros(15, dtype=torch.bool)
        in_block[5 + 5 * block : 10 + 5 * block] = True
        assert not newly[:, ~in_block].any(), "committed outside the current block"
        assert newly.sum(-1).tolist() == [[2, 2, 1][s % 3]] * 3
    assert not (out.sequences == MASK).any()
    assert torch.equal(out.sequences, states[-1][:, 5:])


def test_never_touches_the_prompt_even_when_it_holds_the_mask_token(model) -> None:
    prompt = torch.tensor([[5, MASK, 7, MASK]])
    out = generate(model, prompt, mask_token_id=MASK, gen_length=4, steps=4, return_history=True)
    assert (out.history[:, :, :4] == prompt).all()
    assert not (out.sequences == MASK).any()


@pytest.mark.parametrize("remasking", ["low_confidence", "margin", "entropy", "random"])
def test_deterministic_at_temperature_zero_and_seeded_otherwise(model, remasking: str) -> None:
    ids, attention, _ = _prompts()
    kwargs = dict(mask_token_id=MASK, gen_length=8, steps=4, remasking=remasking)
    greedy = [
        generate(model, ids, attention, generator=torch.Generator().manual_seed(s), **kwargs)
        for s in (0, 0)
    ]
    assert torch.equal(greedy[0], greedy[1])
    hot = [
        generate(
            model,
            ids,
            attention,
            temperature=1.0,
            generator=torch.Generator().manual_seed(s),
            **kwargs,
        )
        for s in (1, 1, 2)
    ]
    assert torch.equal(hot[0], hot[1])
    assert not torch.equal(hot[0], hot[2])


@pytest.mark.parametrize(
    "options",
    [
        dict(gen_length=8, steps=8, block_length=4),
        dict(gen_length=8, steps=4, cfg_scale=1.5, remasking="margin"),
        dict(gen_length=8, steps=8, threshold=0.3, eos_token_id=EOS),
    ],
)
def test_a_sample_alone_equals_the_sample_inside_a_padded_batch(model, options: dict) -> None:
    ids, attention, alone = _prompts()
    batched = generate(model, ids, attention, mask_token_id=MASK, **options)
    for i, prompt in enumerate(alone):
        single = generate(model, prompt[None], mask_token_id=MASK, **options)
        assert torch.equal(batched[i], single[0]), f"sample {i} differs"


def _guided_argmax(model, ids, attention, gen_length: int, w: float) -> torch.Tensor:
    """One-step guided decoding written out: two passes, the second with the real prompt masked."""
    x = torch.cat([ids, torch.full((ids.shape[0], gen_length), MASK)], 1)
    real_prompt = torch.zeros_like(x, dtype=torch.bool)
    real_prompt[:, : ids.shape[1]] = True if attention is None else attention.bool()
    full = (
        None if attention is None else torch.cat([attention, torch.ones_like(x[:, :gen_length])], 1)
    )
    cond = model(x, attention_mask=full).logits
    uncond = model(x.masked_fill(real_prompt, MASK), attention_mask=full).logits
    guided = uncond + (w + 1) * (cond - uncond)
    guided[..., MASK] = float("-inf")
    return guided[:, ids.shape[1] :].argmax(-1)


@pytest.mark.parametrize("padded", [True, False])
def test_classifier_free_guidance_matches_a_manual_two_pass(model, noise_calls, padded) -> None:
    ids, attention, _ = _prompts()
    if not padded:
        ids, attention = ids[:1], None
    out = generate(model, ids, attention, mask_token_id=MASK, gen_length=6, steps=1, cfg_scale=2.0)
    assert torch.equal(out, _guided_argmax(model, ids, attention, 6, 2.0))
    assert noise_calls[0].lam.tolist() == [1.0] * (2 * ids.shape[0])  # doubled batch of λ


def _block_confidence(model, state: torch.Tensor, start: int, end: int):
    logits = model(state).logits[:, start:end].float()
    logits[..., MASK] = float("-inf")  # the sampler never predicts the mask token
    return torch.softmax(logits, -1).max(-1)


def test_threshold_decoding_commits_everything_confident_and_at_least_one(model) -> None:
    prompt = torch.randint(0, 120, (1, 4), generator=torch.Generator().manual_seed(0))
    threshold = 0.3
    out = generate(
        model,
        prompt,
        mask_token_id=MASK,
        gen_length=12,
        steps=6,
        block_length=6,
        threshold=threshold,
        return_history=True,
    )
    states = _states(out, prompt, 12)
    several = 0
    for before, after in zip(states[:-1], states[1:]):
        block = 0 if (before[0, 4:10] == MASK).any() else 1
        start, end = 4 + 6 * block, 10 + 6 * block
        conf, token = _block_confidence(model, before, start, end)
        masked = before[0, start:end] == MASK
        newly = masked & (after[0, start:end] != MASK)
        expected = masked & (conf[0] >= threshold)
        if not expected.any():
            expected = torch.zeros_like(masked)
            expected[conf[0].masked_fill(~masked, -1).argmax()] = True
        assert torch.equal(newly, expected)
        assert torch.equal(after[0, start:end][newly], token[0][newly])
        several += int(newly.sum() > 1)
    assert several > 0, "the threshold never committed more than one token: test is vacuous"
    assert not (out.sequences == MASK).any()
    assert len(out.history) < 12  # fewer steps than tokens


def test_stops_at_eos_once_everything_before_it_is_decided() -> None:
    # Sample 0 wants [1, 2, EOS, 3, 4, 5], sample 1 wants [1, 2, 3, 4, EOS, 5]. Confidence
    # falls left to right except sample 1's EOS, which is the most confident token: it is
    # committed first but must not end the sample while positions before it are masked.
    targets = torch.tensor([[9, 9, 1, 2, EOS, 3, 4, 5], [9, 9, 1, 2, 3, 4, EOS, 5]])
    scores = torch.tensor([[0.0, 0, 8, 7, 6, 5, 4, 3], [0.0, 0, 8, 7, 6, 5, 10, 3]])
    model = ScriptedModel(targets, scores)
    prompt = torch.tensor([[9, 9], [9, 9]])
    out = generate(
        model,
        prompt,
        mask_token_id=MASK,
        gen_length=6,
        steps=6,
        eos_token_id=EOS,
        return_history=True,
    )
    assert out.sequences.tolist() == [[1, 2, EOS, EOS, EOS, EOS], [1, 2, 3, 4, EOS, EOS]]
    # Sample 1: EOS at step 1, then 1, 2, 3, 4 → done after 5 steps; sample 0 after 3.
    assert len(out.history) == 5
    assert out.history[2, 0, 2:].tolist() == [1, 2, EOS, EOS, EOS, EOS]
    assert out.history[3, 1, 2:].tolist() == [1, 2, 3, MASK, EOS, MASK]  # not stopped early


def test_passes_each_samples_answer_masked_fraction_to_the_adapters(model, noise_calls) -> None:
    ids, attention, _ = _prompts()
    out = generate(
        model,
        ids,
        attention,
        mask_token_id=MASK,
        gen_length=8,
        steps=8,
        block_length=4,
        return_history=True,
    )
    states = _states(out, ids, 8)
    assert len(noise_calls) == 8
    for s, call in enumerate(noise_calls):
        expected = (states[s][:, 5:] == MASK).double().mean(-1)  # independent of masked_fraction
        assert call.lam.tolist() == pytest.approx(expected.tolist())
        assert call.lam.tolist() == pytest.approx([1 - s / 8] * 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(gen_length=10, block_length=4), "multiple of block_length"),
        (dict(gen_length=8, block_length=4, steps=3), "multiple of the number of blocks"),
        (dict(gen_length=4, steps=8), "exceeds gen_length"),
        (dict(remasking="lowest"), "remasking"),
        (dict(temperature=-1.0), "temperature"),
        (dict(cfg_scale=-1.0), "cfg_scale"),
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=1.5), "threshold"),
        (dict(threshold=0.9, remasking="random"), "needs a model confidence"),
        (dict(mask_token_id=1000), "vocabulary"),
        (dict(eos_token_id=-2), "eos_token_id"),
        (dict(attention_mask=torch.tensor([[1, 1, 0]])), "left-padded"),
        (dict(attention_mask=torch.tensor([[1, 1]])), "shape"),
    ],
)
def test_invalid_arguments_raise_clear_errors(model, change: dict, message: str) -> None:
    kwargs = dict(input_ids=torch.tensor([[3, 4, 5]]), mask_token_id=MASK, gen_length=8, steps=8)
    with pytest.raises(ValueError, match=message):
        generate(model, **(kwargs | change))


def _reference_confidence(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """Dream's confidence measures, written independently: (L, V) probabilities → (L,)."""
    if kind == "low_confidence":
        return probs.max(-1).values
    if kind == "margin":
        top = probs.sort(-1, descending=True).values
        return top[:, 0] - top[:, 1]
    return (probs * probs.clamp_min(1e-30).log()).sum(-1)  # negative entropy


@pytest.mark.parametrize("kind", ["low_confidence", "margin", "entropy"])
def test_first_commit_is_the_most_confident_position(model, kind: str) -> None:
    prompt = torch.tensor([[11, 12, 13]])
    out = generate(
        model,
        prompt,
        mask_token_id=MASK,
        gen_length=8,
        steps=8,
        remasking=kind,
        return_history=True,
    )
    x = torch.cat([prompt, torch.full((1, 8), MASK)], 1)
    logits = model(x).logits[0, 3:].float()
    logits[:, MASK] = float("-inf")
    score = _reference_confidence(torch.softmax(logits, -1), kind)
    first = (out.history[0, 0, 3:] != MASK).nonzero().flatten().tolist()
    assert first == [int(score.argmax())]
