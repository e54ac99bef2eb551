"""The native MDLM against the released DiT and SUBS code's outputs, and its loading plumbing.

The reference data under tests/models/data/ were written by scripts/make_mdlm_reference.py,
which ran the released ``models/dit.py`` backbone (with plain-torch stand-ins for its two
flash-attention kernels) and the released SUBS parameterisation on a random tiny checkpoint in
the released Hugging Face layout (mdlm_tiny/).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nara.models import MDLMModel, load_model, mdlm_tokenizer, tiny_mdlm_config

DATA = Path(__file__).parent / "data"
MASK = 63


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(DATA / "mdlm_reference.safetensors")


@pytest.fixture(scope="module")
def released() -> MDLMModel:
    model, tokenizer, mask_token_id = load_model(DATA / "mdlm_tiny")
    assert isinstance(model, MDLMModel) and tokenizer is None
    assert mask_token_id == MASK  # appended last: vocab_size - 1
    return model


def test_loads_every_released_key(released):
    stored = set(load_file(DATA / "mdlm_tiny" / "model.safetensors"))
    assert set(released.state_dict()) == stored - {"backbone.rotary_emb.inv_freq"}


def test_raw_logits_equal_released_dit(released, reference):
    with torch.no_grad():
        raw = released(reference["ids"], subs=False).logits
    assert (raw - reference["raw"]).abs().max() <= 1e-4


def test_subs_equals_released_parameterisation(released, reference):
    """Equal log-probabilities; the mask column sits at about −10⁶ in both (float32 spacing there
    is 0.0625, so it is compared as 'impossible', not digit for digit)."""
    ids = reference["ids"]
    with torch.no_grad():
        subs = released(ids).logits
    expected = reference["subs"]
    assert (subs[..., :MASK] - expected[..., :MASK]).abs().max() <= 1e-4
    assert bool((subs[..., MASK] < -9e5).all()) and bool((expected[..., MASK] < -9e5).all())
    kept = ids != MASK
    assert bool((subs[kept].argmax(-1) == ids[kept]).all())  # committed tokens carried over
    assert torch.allclose(subs[~kept].exp().sum(-1), torch.ones(int((~kept).sum())))


def test_padding_keys_are_ignored():
    torch.manual_seed(0)
    model = MDLMModel(tiny_mdlm_config()).eval()
    ids = torch.randint(0, 127, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    with torch.no_grad():
        alone = model(ids).logits
        batch = model(padded, attention_mask=mask).logits[:, :6]
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)


def test_time_conditioning_is_off_as_released():
    torch.manual_seed(0)
    model = MDLMModel(tiny_mdlm_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    ids = torch.randint(0, 127, (2, 5))
    zero, one = torch.zeros(2), torch.ones(2)
    with torch.no_grad():
        assert torch.equal(
            model(ids, subs=False).logits, model(ids, timesteps=one, subs=False).logits
        )
        model.config.time_conditioning = True
        with pytest.raises(ValueError, match="timesteps"):
            model(ids)  # nara's loss and samplers pass no σ: refused, not run at σ = 0
        at_zero = model(ids, timesteps=zero, subs=False).logits
        assert not torch.equal(at_zero, model(ids, timesteps=one, subs=False).logits)


def test_inputs_embeds_and_bad_configs_are_refused():
    model = MDLMModel(tiny_mdlm_config())
    with pytest.raises(ValueError, match="input_ids"):
        model(inputs_embeds=torch.zeros(1, 3, 64))
    with pytest.raises(ValueError, match="n_heads"):
        tiny_mdlm_config(n_heads=3)
    with pytest.raises(ValueError, match="mask_token_id"):
        tiny_mdlm_config(mask_token_id=128)


def _gpt2_like(folder: Path) -> int:
    """A small byte-level BPE tokenizer whose last token is GPT-2's <|endoftext|>; its size."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["What is 3 + 4? It is 7."] * 20, vocab_size=300, min_frequency=1)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


def test_mdlm_tokenizer_appends_the_mask_token_and_loads_with_the_model(tmp_path):
    from transformers import AutoTokenizer

    n = _gpt2_like(tmp_path / "gpt2")
    model = MDLMModel(tiny_mdlm_config(vocab_size=n + 1))  # the mask token last: n
    tokenizer = mdlm_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "gpt2"), model.config)
    assert tokenizer.mask_token_id == n and len(tokenizer) == n + 1
    model.save_pretrained(tmp_path / "mdlm")
    tokenizer.save_pretrained(tmp_path / "mdlm")
    loaded = load_model(tmp_path / "mdlm")
    assert loaded.mask_token_id == loaded.tokenizer.mask_token_id == n
    assert loaded.tokenizer.decode(loaded.tokenizer("It is 7.")["input_ids"]) == "It is 7."
    wrong = tiny_mdlm_config(vocab_size=n + 5)
    with pytest.raises(ValueError, match=f"expects mask id {n + 4}"):
        mdlm_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "gpt2"), wrong)
