"""The native LLaDA model against an independent reference forward, and its transformers plumbing."""

from __future__ import annotations

import pytest
import torch
from reference_llada import reference_logits
from safetensors.torch import load_file
from transformers import AutoModel

from nara.models import LLaDAConfig, LLaDAModelLM, tiny_config


def _model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    model = LLaDAModelLM(tiny_config(**overrides)).eval()
    with torch.no_grad():  # norms start at 1; make them matter for the reference comparison
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "ln_f" in name:
                param.uniform_(0.5, 1.5)
    return model


def _reference(model: LLaDAModelLM, ids: torch.Tensor, real: torch.Tensor | None = None):
    c = model.config
    return reference_logits(
        model.state_dict(),
        ids,
        n_layers=c.n_layers,
        n_heads=c.n_heads,
        n_kv_heads=c.n_kv_heads,
        theta=c.rope_theta,
        eps=c.rms_norm_eps,
        real=real,
    )


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_matches_reference_forward(n_kv_heads):
    model = _model(n_kv_heads=n_kv_heads)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    logits = model(ids).logits
    assert logits.shape == (2, 9, 128)
    torch.testing.assert_close(logits.double(), _reference(model, ids), atol=1e-4, rtol=1e-4)


def test_matches_reference_with_padding_mask():
    model = _model()
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0]])
    logits = model(ids, attention_mask=mask).logits
    expected = _reference(model, ids, real=mask.bool())
    torch.testing.assert_close(logits.double(), expected, atol=1e-4, rtol=1e-4)


def test_left_padded_sample_matches_alone():
    model = _model()
    gen = torch.Generator().manual_seed(3)
    long, short = (
        torch.randint(0, 126, (1, 10), generator=gen),
        torch.randint(0, 126, (1, 6), generator=gen),
    )
    pad = torch.full((1, 4), model.config.pad_token_id)
    batch = torch.cat([long, torch.cat([pad, short], 1)])
    mask = torch.cat([torch.ones(1, 10), torch.cat([torch.zeros(1, 4), torch.ones(1, 6)], 1)])
    logits = model(batch, attention_mask=mask).logits
    torch.testing.assert_close(logits[1, 4:], model(short).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[0], model(long).logits[0], atol=1e-5, rtol=1e-5)


def test_attention_is_bidirectional():
    model = _model()
    ids = torch.randint(0, 126, (1, 6))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 126
    assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])


def test_inputs_embeds_equal_input_ids():
    model = _model()
    ids = torch.randint(0, 128, (2, 5))
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=embeds)


def test_state_dict_keys_follow_llada_scheme():
    model = _model(n_layers=3)
    expected = {
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
    }
    names = [
        "attn_norm",
        "ff_norm",
        "q_proj",
        "k_proj",
        "v_proj",
        "attn_out",
        "ff_proj",
        "up_proj",
        "ff_out",
    ]
    expected |= {f"model.transformer.blocks.{i}.{n}.weight" for i in range(3) for n in names}
    assert set(model.state_dict()) == expected


def test_save_load_round_trip_is_exact(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    loaded = LLaDAModelLM.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids = torch.randint(0, 128, (2, 7))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    auto = AutoModel.from_pretrained(tmp_path)  # registered: no trust_remote_code needed
    assert isinstance(auto, LLaDAModelLM)


def test_weight_tying_reuses_embedding(tmp_path):
    model = _model(weight_tying=True)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    loaded = LLaDAModelLM.from_pretrained(tmp_path)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    ids = torch.randint(0, 128, (1, 5))
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_bias_option_adds_biases_everywhere():
    model = _model(include_bias=True)
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert "model.transformer.blocks.0.q_proj.bias" in biases
    assert "model.transformer.blocks.1.ff_out.bias" in biases
    assert "model.transformer.ff_out.bias" in biases


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renamed the method
def test_gradient_checkpointing_gives_same_gradients():
    ids = torch.randint(0, 128, (2, 8))
    grads = []
    for checkpointing in (False, True):
        model = _model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.model.transformer["blocks"][0].gradient_checkpointing
        model(ids).logits.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_bfloat16_keeps_dtype():
    model = _model().to(torch.bfloat16)
    logits = model(torch.randint(0, 128, (1, 6)), attention_mask=torch.ones(1, 6)).logits
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()


def test_config_defaults_are_llada_8b():
    c = LLaDAConfig()
    assert (c.d_model, c.n_heads, c.n_kv_heads, c.n_layers, c.mlp_hidden_size) == (
        4096,
        32,
        32,
        32,
        12288,
    )
    assert (c.vocab_size, c.embedding_size, c.rope_theta, c.rms_norm_eps) == (
        126464,
        126464,
        500000.0,
        1e-5,
    )
    assert (c.mask_token_id, c.eos_token_id, c.max_sequence_length) == (126336, 126081, 4096)
    assert not c.weight_tying and not c.include_bias


def test_config_rejects_unsupported_variants():
    with pytest.raises(NotImplementedError, match="block_type"):
        tiny_config(block_type="sequential")
    with pytest.raises(NotImplementedError, match="alibi"):
        tiny_config(alibi=True)
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny_config(n_kv_heads=3)
