"""The native Dream model against the released Dream code's outputs, and its loading plumbing.

The reference data under tests/models/data/ were written by scripts/make_dream_reference.py,
which ran the released modeling code (transformers 4.46.2) on a random tiny checkpoint that the
release saved itself (dream_tiny/): nara reads the released format and must reproduce the
released float32 logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nara.models import DreamConfig, DreamModel, load_model, tiny_dream_config

DATA = Path(__file__).parent / "data"
RELEASED = DATA / "dream_tiny"


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(DATA / "dream_reference.safetensors")


@pytest.fixture(scope="module")
def released() -> DreamModel:
    model, tokenizer, mask_token_id = load_model(RELEASED)
    assert isinstance(model, DreamModel) and tokenizer is None
    assert mask_token_id == 63 == model.config.mask_token_id
    return model


def test_loads_released_checkpoint_with_every_key(released):
    stored = set(load_file(RELEASED / "model.safetensors"))
    assert set(released.state_dict()) == stored
    assert "model.layers.1.self_attn.q_proj.bias" in stored
    assert json.loads((RELEASED / "config.json").read_text())["model_type"] == "Dream"


def test_logits_equal_released_code(released, reference):
    with torch.no_grad():
        logits = released(reference["ids"]).logits
    assert logits.dtype == torch.float32
    assert (logits - reference["logits"]).abs().max() <= 1e-4


def test_padded_logits_equal_released_code_at_real_positions(released, reference):
    """Left padding, called as a user would (2-D mask) and as the released sampler does (4-D mask
    and position ids from the first real token): equal at every real position."""
    mask = reference["padded_mask"]
    with torch.no_grad():
        logits = released(reference["padded_ids"], attention_mask=mask).logits
    real = mask.bool()
    for key in ("padded_logits", "padded_logits_sampler"):
        assert (logits[real] - reference[key][real]).abs().max() <= 1e-4


def test_attention_is_bidirectional():
    torch.manual_seed(0)
    model = DreamModel(tiny_dream_config()).eval()
    ids = torch.randint(0, 126, (1, 6))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 126
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DreamModel(tiny_dream_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).model
    ids = torch.randint(0, 126, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())


def test_inputs_embeds_and_hidden_states():
    torch.manual_seed(0)
    model = DreamModel(tiny_dream_config()).eval()
    ids = torch.randint(0, 126, (2, 5))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        via_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert torch.equal(out.logits, via_embeds)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    with pytest.raises(ValueError, match="exactly one"):
        model()


def test_released_config_defaults_are_dream_7b():
    config = DreamConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (
        3584,
        28,
        4,
    )
    assert config.mask_token_id == 151666 and config.vocab_size == 152064


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"num_attention_heads": 3}, ValueError, "num_attention_heads"),
        ({"num_key_value_heads": 3}, ValueError, "num_key_value_heads"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, NotImplementedError, "rope"),
        ({"hidden_act": "gelu"}, NotImplementedError, "hidden_act"),
        ({"attention_dropout": 0.1}, NotImplementedError, "attention_dropout"),
    ],
)
def test_config_refuses_what_it_does_not_implement(overrides, error, match):
    with pytest.raises(error, match=match):
        tiny_dream_config(**overrides)


def _dream_tokenizer_files(folder: Path, vocab: int) -> None:
    """Tokenizer files in the released layout: Qwen2's byte-level BPE (vocab.json, merges.txt)
    named as the remote-code class ``DreamTokenizer``, with EOS, BOS and mask added at the end."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    text = ["What is 3 + 4? The answer is 7.", "def add(a, b):\n    return a + b"] * 20
    bpe.train_from_iterator(text, vocab_size=vocab - 3, min_frequency=1)
    bpe.save_model(str(folder))
    n = len(json.loads((folder / "vocab.json").read_text()))
    names = ["<|endoftext|>", "<|beginoftext|>", "<|mask|>"]
    added = {str(n + i): {"content": name, "special": True} for i, name in enumerate(names)}
    config = {
        "tokenizer_class": "DreamTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "added_tokens_decoder": added,
        "bos_token": "<|beginoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "mask_token": "<|mask|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def test_released_tokenizer_layout_loads_without_remote_code(tmp_path):
    _dream_tokenizer_files(tmp_path, vocab=300)
    n = len(json.loads((tmp_path / "vocab.json").read_text()))
    config = tiny_dream_config(vocab_size=n + 3, mask_token_id=n + 2, pad_token_id=n)
    DreamModel(config).save_pretrained(tmp_path)
    model, tokenizer, mask_token_id = load_model(tmp_path)  # trust_remote_code stays False
    assert mask_token_id == tokenizer.mask_token_id == n + 2
    assert tokenizer.eos_token_id == n
    text = "What is 3 + 4?"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text and max(ids) < n
