"""Bad sampler and loss inputs give a clear ValueError naming the value, never a silent result:
step counts, NaN/inf/negative temperature and guidance, lengths past the model's maximum,
NaN weights (non-finite logits), t outside [0, 1]; an empty prompt samples unconditionally."""

from __future__ import annotations

import pytest
import torch
from diffusion_support import MASK

import nara
from nara.diffusion import diffusion_loss, generate
from nara.diffusion.sampling import max_length

PROMPT = torch.tensor([[3, 4, 5]])
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(steps=0), r"steps must be an integer >= 1, got 0"),
        (dict(steps=-4), r"steps must be an integer >= 1, got -4"),
        (dict(steps=2.5), r"steps must be an integer >= 1, got 2\.5"),
        (dict(gen_length=0), r"gen_length must be an integer >= 1, got 0"),
        (dict(block_length=0), r"block_length must be an integer >= 1, got 0"),
        (dict(steps=9), r"steps=9 exceeds gen_length=8"),
        (dict(block_length=4, steps=3), r"steps=3 must be a multiple of the number of blocks"),
        (dict(temperature=NAN), r"temperature must be a finite number >= 0 .* got nan"),
        (dict(temperature=INF), r"temperature must be a finite number >= 0 .* got inf"),
        (dict(temperature=-0.5), r"temperature .* got -0\.5"),
        (dict(cfg_scale=NAN), r"cfg_scale must be a finite number >= 0 .* got nan"),
        (dict(cfg_scale=-INF), r"cfg_scale .* got -inf"),
    ],
)
def test_bad_sampler_settings_are_named(model, change: dict, message: str) -> None:
    kwargs = dict(input_ids=PROMPT, mask_token_id=MASK, gen_length=8, steps=8) | change
    with pytest.raises(ValueError, match=message):
        generate(model, **kwargs)


def test_gen_length_past_the_models_maximum_is_refused_before_sampling(model) -> None:
    assert max_length(model) == model.config.max_sequence_length == 128
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"3 tokens\) plus gen_length=126 is 129 tokens, .* 128; "):
        generate(model, PROMPT, mask_token_id=MASK, gen_length=126, steps=1)
    with pytest.raises(ValueError, match=r"use gen_length <= 125"):
        generate(model, PROMPT, mask_token_id=MASK, gen_length=100_000, steps=1)
    assert calls == []  # refused before any forward pass
    out = generate(model, PROMPT, mask_token_id=MASK, gen_length=125, steps=1)  # exactly fits
    assert out.shape == (1, 125) and calls == [1]


def test_a_model_without_a_stated_maximum_is_not_limited() -> None:
    assert max_length(torch.nn.Linear(2, 2)) is None


def test_nan_weights_stop_generation_with_the_likely_cause(model) -> None:
    with torch.no_grad():
        model.model.transformer.blocks[0].q_proj.weight[0, 0] = NAN
    with pytest.raises(ValueError, match=r"non-finite logits .* step 0 of block 0: .*NaN/inf"):
        generate(model, PROMPT, mask_token_id=MASK, gen_length=8, steps=8)


def test_nan_adapter_weights_stop_generation(model) -> None:
    adapted = nara.add_adapters(model, nara.LoRAConfig(r=2, target_modules=["v_proj"]))
    with torch.no_grad():
        adapted.model.transformer.blocks[1].v_proj.lora_B.fill_(NAN)
    with pytest.raises(ValueError, match=r"non-finite logits"):
        generate(adapted, PROMPT, mask_token_id=MASK, gen_length=4, steps=2, block_length=2)


def test_an_empty_prompt_samples_unconditionally(model) -> None:
    empty = torch.zeros(2, 0, dtype=torch.long)
    out = generate(model, empty, mask_token_id=MASK, gen_length=6, steps=3)
    assert out.shape == (2, 6) and not bool((out == MASK).any())
    # an empty prompt inside a left-padded batch: that row is all padding
    ids = torch.tensor([[126, 126], [3, 4]])
    mask = torch.tensor([[0, 0], [1, 1]])
    out = generate(model, ids, mask, mask_token_id=MASK, gen_length=4, steps=4)
    assert out.shape == (2, 4) and not bool((out == MASK).any())


def _loss_batch() -> dict:
    ids = torch.randint(0, 120, (2, 6), generator=torch.Generator().manual_seed(0))
    maskable = torch.zeros(2, 6, dtype=torch.bool)
    maskable[:, 2:] = True
    return dict(input_ids=ids, maskable=maskable, mask_token_id=MASK)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            dict(t=torch.tensor([0.5, NAN])),
            r"every t must lie in \[0, 1\] \(no NaN\), got \[0\.5, nan\]",
        ),
        (dict(t=torch.tensor([1.5, 0.2])), r"every t must lie in \[0, 1\] .* got \[1\.5, 0\.2"),
        (dict(t=torch.tensor([-0.1, 0.2])), r"every t must lie in \[0, 1\]"),
        (dict(t=torch.tensor([INF, 0.2])), r"every t must lie in \[0, 1\]"),
        (dict(t=torch.tensor([0.5])), r"t must be a tensor of shape \(2,\)"),
        (dict(t=0.5), r"t must be a tensor of shape \(2,\), got 0\.5"),
        (dict(eps=NAN), r"eps must lie in \[0, 1\), got nan"),
        (dict(eps=1.0), r"eps must lie in \[0, 1\), got 1\.0"),
    ],
)
def test_bad_loss_noise_times_are_named(model, change: dict, message: str) -> None:
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=message):
        diffusion_loss(model, **(_loss_batch() | change))
    assert calls == []


def test_noise_times_at_the_ends_of_the_range_are_valid(model) -> None:
    out = diffusion_loss(model, **_loss_batch(), t=torch.tensor([0.0, 1.0]))
    assert bool(torch.isfinite(out.loss))
    assert out.masked[1, 2:].all()  # t = 1 masks everything maskable (p = 1)


def test_nan_weights_stop_the_dream_sampler_too() -> None:
    from nara.models import DreamModel, tiny_dream_config

    torch.manual_seed(0)
    dream = DreamModel(tiny_dream_config()).eval()
    with torch.no_grad():
        dream.get_output_embeddings().weight[5] = NAN  # one vocabulary row of the head
    with pytest.raises(ValueError, match=r"non-finite logits .* at step 0: "):
        generate(dream, PROMPT, mask_token_id=MASK, gen_length=4, steps=4, sampler="dream")
