"""The masked-head loss: the output head and cross-entropy run only at masked positions, in
checkpointed chunks, and give the loss and gradients of the full (B, T, V) logits path.

Checked on tiny LLaDA, Dream (shifted logits) and MDLM (SUBS, log-linear schedule) models built
in code, in float64 (the cross-entropy runs in float32 on both paths, hence float32
tolerances), with NaRA attached (one λ per sample), right padding, chunks that do not
divide the masked count, and pre-training masks that reach position 0 (where Dream's shift
makes two tokens share a logit).
"""

from __future__ import annotations

import pytest
import torch

from nara import NaRAConfig, add_adapters
from nara.diffusion import diffusion_loss, sft_maskable
from nara.diffusion.loss import splits_head
from nara.models import DreamModel, LLaDAModelLM, tiny_config, tiny_dream_config
from nara.models.families import logit_positions, token_logits
from nara.models.mdlm import MDLMModel, tiny_mdlm_config

MASK = 127
TARGETS = {
    "llada": ["q_proj", "v_proj", "ff_out"],
    "dream": ["q_proj", "v_proj", "down_proj"],
    "mdlm": ["attn_qkv", "attn_out"],
}
BUILD = {
    "llada": lambda: LLaDAModelLM(tiny_config(init_std=0.3)),
    "dream": lambda: DreamModel(tiny_dream_config()),
    "mdlm": lambda: MDLMModel(tiny_mdlm_config()),
}


def _model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = BUILD[family]().double()
    add_adapters(model, NaRAConfig(r=2, target_modules=TARGETS[family]))
    with torch.no_grad():  # NaRA's up-projection starts at 0: give the adapter a real effect
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    model.get_input_embeddings().weight.requires_grad_(True)  # a trainable base tensor too
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (3, 12), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0  # right padding
    attention[2, 7:] = 0
    prompt_lengths = torch.tensor([3, 2, 0])
    return ids, attention, sft_maskable(prompt_lengths, attention)


def _run(model: torch.nn.Module, masked_head: bool, **kwargs) -> tuple:
    ids, attention, maskable = _batch()
    model.zero_grad()
    out = diffusion_loss(
        model,
        ids,
        maskable,
        MASK,
        attention_mask=attention,
        t=torch.tensor([0.6, 0.3, 0.8]),
        generator=torch.Generator().manual_seed(2),
        masked_head=masked_head,
        **kwargs,
    )
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("family", sorted(BUILD))
@pytest.mark.parametrize("chunk", [None, 2])
def test_masked_head_equals_full_logits(family: str, chunk: int | None) -> None:
    model = _model(family)
    assert splits_head(model)
    full, full_grads = _run(model, masked_head=False)
    fast, fast_grads = _run(model, masked_head=True, head_chunk=chunk)
    assert int(full.masked.sum(-1).max()) > 4  # three chunks of 2 or more
    assert len(set(full.lam.tolist())) == 3  # one λ per sample reaches NaRA
    for field in ("loss", "sample_loss", "masked_ce", "accuracy"):
        torch.testing.assert_close(getattr(fast, field), getattr(full, field), rtol=1e-6, atol=0)
    assert full_grads.keys() == fast_grads.keys() and len(full_grads) > 2
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_pretraining_masks_reach_position_zero_under_the_shift() -> None:
    """Every real token maskable: Dream's position 0 and 1 both read logit 0."""
    model = _model("dream")
    ids, attention, _ = _batch()
    kwargs = dict(attention_mask=attention, t=torch.ones(3), generator=torch.Generator())
    maskable = attention.bool()
    full = diffusion_loss(model, ids, maskable, MASK, masked_head=False, **kwargs)
    fast = diffusion_loss(model, ids, maskable, MASK, head_chunk=4, **kwargs)
    assert bool(full.masked[:, 0].all())
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-6, atol=0)


def test_logit_positions_is_how_token_logits_reads() -> None:
    logits = torch.randn(2, 6, 5)
    for family in ("llada", "dream"):
        model = BUILD[family]()
        source = logit_positions(model, torch.arange(6))
        assert torch.equal(token_logits(model, logits), logits[:, source])
    assert logit_positions(model, torch.tensor([0, 1, 4])).tolist() == [0, 0, 3]


def test_models_without_a_split_head_take_the_full_logits() -> None:
    """A forward hook on the root (as prompt tuning's) or a model without ``head_logits``."""
    model = LLaDAModelLM(tiny_config())
    assert splits_head(model)
    handle = model.register_forward_hook(lambda module, args, output: output)
    assert not splits_head(model)
    handle.remove()
    assert not splits_head(torch.nn.Linear(2, 2))


def test_head_chunk_must_be_positive() -> None:
    model = LLaDAModelLM(tiny_config())
    ids, attention, maskable = _batch()
    with pytest.raises(ValueError, match="head_chunk must be a positive int"):
        diffusion_loss(model, ids, maskable, MASK, attention_mask=attention, head_chunk=0)
