"""diffusion_loss against hand computations, masking properties and λ statistics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusion_support import MASK

from nara.diffusion import diffusion_loss, forward_process, sft_maskable

EPS = 1e-3


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two right-padded SFT samples: prompt 3 / answer 7, prompt 2 / answer 4 + 4 padding."""
    torch.manual_seed(1)
    ids = torch.randint(0, 120, (2, 10))
    attention = torch.ones(2, 10, dtype=torch.long)
    attention[1, 6:] = 0
    maskable = sft_maskable(torch.tensor([3, 2]), attention)
    return ids, attention, maskable


def test_sft_maskable_is_the_real_answer_tokens() -> None:
    _, attention, maskable = _batch()
    expected = torch.zeros(2, 10, dtype=torch.bool)
    expected[0, 3:] = True
    expected[1, 2:6] = True
    assert torch.equal(maskable, expected)


@pytest.mark.parametrize("normalization", ["answer_length", "token", "batch"])
def test_loss_matches_hand_computation(model, noise_calls, normalization: str) -> None:
    ids, attention, maskable = _batch()
    t = torch.tensor([0.3, 0.8])
    out = diffusion_loss(
        model,
        ids,
        maskable,
        MASK,
        attention_mask=attention,
        normalization=normalization,
        t=t,
        generator=torch.Generator().manual_seed(5),
    )
    # The mask is forward_process's with the same t and seed.
    _, masked, _ = forward_process(
        ids, maskable, MASK, t=t, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(out.masked, masked)
    assert out.masked.any(-1).all()

    p = [(1 - EPS) * 0.3 + EPS, (1 - EPS) * 0.8 + EPS]
    noisy = ids.masked_fill(masked, MASK)
    logp = torch.log_softmax(model(noisy, attention_mask=attention).logits.float(), -1)
    sums, counts, n_masked = [], [], []
    for i in range(2):
        positions = [j for j in range(10) if masked[i, j]]
        sums.append(sum(-logp[i, j, ids[i, j]].item() for j in positions) / p[i])
        counts.append(int(maskable[i].sum()))
        n_masked.append(len(positions))
    expected = {
        "answer_length": (sums[0] / counts[0] + sums[1] / counts[1]) / 2,
        "token": (sums[0] + sums[1]) / (counts[0] + counts[1]),
        "batch": (sums[0] + sums[1]) / 2,
    }[normalization]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.sample_loss.tolist() == pytest.approx(sums, rel=1e-5)
    assert out.p.tolist() == pytest.approx(p)
    assert out.lam.tolist() == pytest.approx([n_masked[i] / counts[i] for i in range(2)])
    assert int(out.num_masked) == sum(n_masked)
    # The adapters saw exactly this λ (and the density), once.
    assert len(noise_calls) == 1
    assert torch.equal(noise_calls[0].lam, out.lam)
    assert torch.equal(noise_calls[0].density, out.density)


def test_prompt_and_padding_are_never_masked(model) -> None:
    ids, attention, maskable = _batch()
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        out = diffusion_loss(model, ids, maskable, MASK, attention_mask=attention, generator=gen)
        assert not (out.masked & ~maskable).any()
    # At t = 1 (p = 1) everything maskable is masked, nothing else.
    out = diffusion_loss(model, ids, maskable, MASK, attention_mask=attention, t=torch.ones(2))
    assert torch.equal(out.masked, maskable)
    assert out.lam.tolist() == [1.0, 1.0]


class _Uniform(torch.nn.Module):
    """A model whose logits do not depend on the input: cheap for many-draw statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(128))

    def forward(self, input_ids, attention_mask=None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, 128))


def test_lambda_statistics_match_t() -> None:
    """λ = masked fraction is an unbiased, binomially spread estimate of p(t)."""
    b, n = 4000, 32
    ids = torch.zeros(b, n, dtype=torch.long)
    out = diffusion_loss(
        _Uniform(),
        ids,
        torch.ones(b, n, dtype=torch.bool),
        MASK,
        generator=torch.Generator().manual_seed(0),
    )
    var = out.p * (1 - out.p) / n  # Var(λ | p) for a binomial count over n positions
    diff = out.lam - out.p
    assert abs(diff.mean().item()) < 4 * math.sqrt(var.sum().item()) / b
    # The spread matches the binomial one (ratio of mean squares within 10 %).
    assert (diff**2).mean().item() == pytest.approx(var.mean().item(), rel=0.1)
    assert out.t.min() >= 0 and out.t.max() <= 1
    assert out.t.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(1 / 12 / b))


def test_sample_without_maskable_tokens_gives_no_nan(model) -> None:
    ids, attention, maskable = _batch()
    maskable[1] = False
    for normalization in ("answer_length", "token", "batch"):
        out = diffusion_loss(
            model,
            ids,
            maskable,
            MASK,
            attention_mask=attention,
            normalization=normalization,
            t=torch.tensor([0.5, 0.5]),
        )
        assert torch.isfinite(out.loss)
        assert out.sample_loss[1] == 0 and out.lam[1] == 0 and out.masked_ce[1] == 0


def test_nothing_maskable_at_all_gives_zero_loss(model) -> None:
    ids, attention, _ = _batch()
    out = diffusion_loss(model, ids, torch.zeros_like(ids, dtype=torch.bool), MASK)
    assert out.loss.item() == 0.0 and out.accuracy.item() == 0.0


def test_loss_backpropagates_in_float32_from_bf16_model() -> None:
    from nara.models import LLaDAModelLM, tiny_config

    torch.manual_seed(0)
    bf16 = LLaDAModelLM(tiny_config()).to(torch.bfloat16)
    ids, attention, maskable = _batch()
    out = diffusion_loss(bf16, ids, maskable, MASK, attention_mask=attention)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert bf16.model.transformer.wte.weight.grad is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(maskable=torch.ones(2, 9, dtype=torch.bool)), "maskable"),
        (dict(attention_mask=torch.ones(2, 9)), "attention_mask"),
        (dict(normalization="sum"), "normalization"),
        (dict(mask_token_id=-1), "mask_token_id"),
        (dict(mask_token_id=500), "vocabulary"),
        (dict(input_ids=torch.full((2, 10), MASK)), "already holds"),
        (dict(maskable=torch.ones(2, 10, dtype=torch.bool)), "padding"),
    ],
)
def test_invalid_arguments_raise_clear_errors(model, change: dict, message: str) -> None:
    ids, attention, maskable = _batch()
    kwargs = (
        dict(input_ids=ids, maskable=maskable, mask_token_id=MASK, attention_mask=attention)
        | change
    )
    with pytest.raises(ValueError, match=message):
        diffusion_loss(model, **kwargs)
