"""load_model on checkpoint folders written by other software, other architectures, and bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from reference_llada import reference_logits
from safetensors.torch import save_file

from nara.models import LLaDAModelLM, load_model, loading

# A config.json as the released LLaDA checkpoints write it (remote-code fields included), shrunk.
RELEASED_STYLE_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 32,
    "embedding_dropout": 0.0,
    "embedding_size": 64,
    "eos_token_id": 60,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 62,
    "max_sequence_length": 64,
    "mlp_hidden_size": 48,
    "mlp_ratio": 4,
    "model_type": "llada",
    "n_heads": 4,
    "n_kv_heads": 2,
    "n_layers": 2,
    "pad_token_id": 60,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 63,
    "weight_tying": False,
}


def _released_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the LLaDA key scheme, built without nara's model class."""
    g = torch.Generator().manual_seed(seed)
    c = RELEASED_STYLE_CONFIG
    d, hd, mlp, vocab = (
        c["d_model"],
        c["d_model"] // c["n_heads"],
        c["mlp_hidden_size"],
        c["embedding_size"],
    )
    shapes = {"wte.weight": (vocab, d), "ln_f.weight": (d,), "ff_out.weight": (vocab, d)}
    for i in range(c["n_layers"]):
        b = f"blocks.{i}."
        shapes |= {
            b + "attn_norm.weight": (d,),
            b + "ff_norm.weight": (d,),
            b + "q_proj.weight": (d, d),
            b + "k_proj.weight": (c["n_kv_heads"] * hd, d),
            b + "v_proj.weight": (c["n_kv_heads"] * hd, d),
            b + "attn_out.weight": (d, d),
            b + "ff_proj.weight": (mlp, d),
            b + "up_proj.weight": (mlp, d),
            b + "ff_out.weight": (d, mlp),
        }
    return {
        "model.transformer." + k: torch.randn(s, generator=g) * (0.3 if len(s) == 2 else 1.0)
        + (len(s) == 1)
        for k, s in shapes.items()
    }


def _write_folder(folder, state_dict, config=RELEASED_STYLE_CONFIG):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_folder_written_by_other_software_loads_and_matches_reference(tmp_path):
    sd = _released_state_dict()
    loaded = load_model(_write_folder(tmp_path / "llada", sd))
    assert isinstance(loaded.model, LLaDAModelLM)
    assert loaded.mask_token_id == 62
    assert loaded.tokenizer is None  # the folder ships none
    assert not loaded.model.training
    ids = torch.randint(0, 63, (2, 7), generator=torch.Generator().manual_seed(4))
    real = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    c = RELEASED_STYLE_CONFIG
    expected = reference_logits(
        sd,
        ids,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        theta=c["rope_theta"],
        eps=c["rms_norm_eps"],
        real=real.bool(),
    )
    logits = loaded.model(ids, attention_mask=real).logits
    assert logits.shape == (2, 7, 64)
    torch.testing.assert_close(logits.double(), expected, atol=1e-4, rtol=1e-4)


def test_dtype_is_applied(tmp_path):
    loaded = load_model(_write_folder(tmp_path / "llada", _released_state_dict()), dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_missing_weight_is_an_error(tmp_path):
    sd = _released_state_dict()
    del sd["model.transformer.blocks.1.up_proj.weight"]
    with pytest.raises(ValueError, match=r"missing weights.*blocks\.1\.up_proj"):
        load_model(_write_folder(tmp_path / "llada", sd))


def test_wrong_shape_is_an_error(tmp_path):
    sd = _released_state_dict()
    sd["model.transformer.blocks.0.q_proj.weight"] = torch.zeros(8, 32)
    with pytest.raises(ValueError, match=r"wrong shapes.*blocks\.0\.q_proj"):
        load_model(_write_folder(tmp_path / "llada", sd))


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_a_hub_name_that_cannot_be_found_says_so(monkeypatch):
    from transformers import PretrainedConfig

    def offline(*args, **kwargs):  # what the hub library raises offline or for an unknown name
        raise OSError("We couldn't connect to the hub.\nCheck your connection.")

    monkeypatch.setattr(PretrainedConfig, "get_config_dict", offline)
    message = (
        r"could not find model 'someone/no-such-model' locally or on the Hugging Face hub "
        r"\(offline\?\): pass a local folder, or set HF_HUB_OFFLINE=0 and check the name "
        r"\(We couldn't connect to the hub\.\)$"
    )
    with pytest.raises(FileNotFoundError, match=message):
        load_model("someone/no-such-model")


def test_unbuilt_tiny_model_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "TINY_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/build_tiny.py"):
        load_model("tiny")


def test_other_architectures_load_through_auto_classes(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="mask_token_id"):
        load_model(tmp_path)  # neither config nor (absent) tokenizer names a mask token
    loaded = load_model(tmp_path, mask_token_id=3)
    assert isinstance(loaded.model, BertForMaskedLM)
    assert loaded.mask_token_id == 3


def test_known_families_supply_mask_token_id():
    find = loading._find_mask_token_id
    assert find(SimpleNamespace(model_type="Dream"), None, "x") == 151666
    assert find(SimpleNamespace(model_type="llada"), None, "x") == 126336
    assert find(SimpleNamespace(), SimpleNamespace(mask_token_id=7), "x") == 7


def test_shipped_tiny_model_is_consistent():
    if not (loading.TINY_DIR / "model.safetensors").is_file():
        pytest.skip("the tiny model is not built (python scripts/build_tiny.py)")
    model, tokenizer, mask_token_id = load_model("tiny")
    config = model.config
    assert isinstance(model, LLaDAModelLM)
    assert mask_token_id == config.mask_token_id == tokenizer.mask_token_id
    assert config.eos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
    assert len(tokenizer) == config.vocab_size
    text = "Question: What does this Python code print?\nprint(12 + 7)\nAnswer:\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert (loading.TINY_DIR / "model.safetensors").stat().st_size <= 25e6
