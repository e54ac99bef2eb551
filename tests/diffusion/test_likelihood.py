"""log_likelihood: exact for one-token answers, converges to the enumerated bound for two."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_support import MASK

from nara.diffusion import log_likelihood


def _log_prob(model, prompt: list[int], answer: list[int], masked: tuple[int, ...]) -> float:
    """Σ log p(answer_i | prompt, unmasked answer) over the masked answer positions i."""
    ids = torch.tensor([prompt + answer])
    noisy = ids.clone()
    for i in masked:
        noisy[0, len(prompt) + i] = MASK
    logp = torch.log_softmax(model(noisy).logits[0].double(), -1)
    return sum(logp[len(prompt) + i, answer[i]].item() for i in masked)


def test_one_token_answer_is_exact(model) -> None:
    prompt, answer = [3, 14, 15, 92], [65]
    got = log_likelihood(model, prompt, answer, mask_token_id=MASK, n_samples=4, batch_size=3)
    assert isinstance(got, float)
    assert got == pytest.approx(_log_prob(model, prompt, answer, (0,)), rel=1e-5)


def test_two_token_answer_approaches_the_enumerated_bound(model, noise_calls) -> None:
    prompt, answer = [3, 14, 15], [9, 26]
    # E_l E_M[(L/l) Σ log p]: l = 1 masks either token (weight 2), l = 2 masks both (weight 1).
    one = [2 * _log_prob(model, prompt, answer, (i,)) for i in range(2)]
    both = _log_prob(model, prompt, answer, (0, 1))
    exact = 0.5 * (sum(one) / 2) + 0.5 * both
    n = 256
    got = log_likelihood(
        model,
        torch.tensor(prompt),
        torch.tensor(answer),
        mask_token_id=MASK,
        n_samples=n,
        batch_size=64,
        generator=torch.Generator().manual_seed(0),
    )
    # Stratification fixes l (n/2 rows each); only the l = 1 position is random.
    std = 0.5 * abs(one[0] - one[1]) / 2 / math.sqrt(n / 2)
    assert got == pytest.approx(exact, abs=5 * std + 1e-9)
    # Each row's adapters saw λ = l / L.
    lams = torch.cat([c.lam for c in noise_calls])
    assert sorted(set(lams.tolist())) == [0.5, 1.0]
    assert (lams == 0.5).sum() == n // 2


def test_a_list_of_pairs_equals_the_pairs_scored_alone(model) -> None:
    pairs = [([1, 2, 3, 4], [7]), ([5], [8]), ([9, 10], [11])]  # packed with left padding
    together = log_likelihood(
        model,
        [q for q, _ in pairs],
        [a for _, a in pairs],
        mask_token_id=MASK,
        n_samples=2,
        batch_size=4,
    )
    assert together.shape == (3,)
    for i, (q, a) in enumerate(pairs):
        assert together[i].item() == pytest.approx(
            log_likelihood(model, q, a, mask_token_id=MASK, n_samples=1), rel=1e-6
        )


def test_mask_counts_are_stratified_over_the_answer_length(model, noise_calls) -> None:
    log_likelihood(model, [1, 2], [3, 4, 5, 6], mask_token_id=MASK, n_samples=8, batch_size=8)
    counts = (torch.cat([c.lam for c in noise_calls]) * 4).round().long()
    assert sorted(counts.tolist()) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert all(c.lam.shape == (8,) for c in noise_calls)


@pytest.mark.parametrize(
    ("prompts", "answers", "kwargs", "message"),
    [
        ([1, 2], [], {}, "empty"),
        ([1, MASK], [3], {}, "contains mask_token_id"),
        ([1, 2], [3], {"n_samples": 0}, "n_samples"),
        ([[1], [2]], [[3]], {}, "pair them up"),
        ([[1]], [3], {}, "one prompt with one answer"),
        ([1], [3], {"mask_token_id": 999}, "vocabulary"),
    ],
)
def test_invalid_arguments_raise_clear_errors(model, prompts, answers, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        log_likelihood(model, prompts, answers, **({"mask_token_id": MASK} | kwargs))
