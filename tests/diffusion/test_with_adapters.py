"""The diffusion code with real adapters: λ reaches NaRA's hypernetwork, LoRA learns."""

from __future__ import annotations

import pytest
import torch
from diffusion_support import MASK

from nara import LoRAConfig, NaRAConfig, add_adapters
from nara.adapters.hyper import Hypernetwork
from nara.diffusion import diffusion_loss, generate, sft_maskable
from nara.models import LLaDAModelLM, tiny_config


def _record_hypernetwork_inputs(model: torch.nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """Every (λ, density) NaRA's hypernetworks receive, via forward hooks."""
    seen: list[tuple[torch.Tensor, ...]] = []
    for module in model.modules():
        if isinstance(module, Hypernetwork):
            module.register_forward_hook(
                lambda mod, args, out: seen.append(tuple(a.clone() for a in args))
            )
    return seen


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_nara_sees_the_answer_masked_fraction_at_every_step(cfg_scale: float) -> None:
    torch.manual_seed(0)
    model = add_adapters(LLaDAModelLM(tiny_config()), NaRAConfig(r=4, input_mode="both")).eval()
    seen = _record_hypernetwork_inputs(model)
    prompt = torch.tensor([[126, 126, 5, 6], [7, 8, 9, 10]])  # first prompt left-padded
    attention = (torch.arange(4) >= torch.tensor([[2], [0]])).long()
    out = generate(
        model,
        prompt,
        attention,
        mask_token_id=MASK,
        gen_length=6,
        steps=4,
        block_length=3,
        cfg_scale=cfg_scale,
        return_history=True,
    )
    assert len(seen) == 4  # one hypernetwork call per model forward (global sharing)
    before = torch.cat([torch.full((1, 2, 6), MASK), out.history[:-1, :, 4:]])  # (S, B, G)
    copies = 2 if cfg_scale else 1
    for s, (lam, density) in enumerate(seen):
        expected = (before[s] == MASK).float().mean(-1).repeat(copies)  # masked share of answer
        assert lam.tolist() == pytest.approx(expected.tolist())
        assert density.shape == lam.shape and bool(((density >= 0) & (density <= 1)).all())


def test_nara_sees_the_training_mask_fraction() -> None:
    torch.manual_seed(0)
    model = add_adapters(LLaDAModelLM(tiny_config()), NaRAConfig(r=4))
    seen = _record_hypernetwork_inputs(model)
    ids = torch.randint(0, 120, (3, 12))
    maskable = sft_maskable(torch.tensor([4, 2, 6]), torch.ones_like(ids))
    out = diffusion_loss(model, ids, maskable, MASK, generator=torch.Generator().manual_seed(1))
    expected = (out.masked.sum(-1) / maskable.sum(-1)).tolist()  # not t: the drawn mask
    assert seen[0][0].tolist() == pytest.approx(expected)


@pytest.mark.parametrize("config", [LoRAConfig(r=4, alpha=8.0), NaRAConfig(r=4, alpha=8.0)])
def test_a_few_dozen_adapter_steps_lower_the_loss(config) -> None:
    """A real training signal: the adapter learns a fixed answer for each of four prompts."""
    torch.manual_seed(0)
    # init_std 0.1: with the default 0.02 the frozen head cannot express a peaked distribution.
    model = add_adapters(LLaDAModelLM(tiny_config(init_std=0.1)), config)
    ids = torch.cat([torch.arange(4)[:, None] + 1, torch.randint(10, 30, (4, 7))], 1)  # (4, 8)
    ids = ids.repeat(4, 1)  # each sequence under four masks per step
    maskable = sft_maskable(torch.ones(16, dtype=torch.long), torch.ones_like(ids))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)

    def evaluate() -> float:
        gen = torch.Generator().manual_seed(123)  # the same masks before and after training
        with torch.no_grad():
            return sum(
                diffusion_loss(model, ids, maskable, MASK, generator=gen).loss.item()
                for _ in range(4)
            )

    before = evaluate()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        optimizer.zero_grad()
        diffusion_loss(model, ids, maskable, MASK, generator=gen).loss.backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.7 * before, (before, after)
