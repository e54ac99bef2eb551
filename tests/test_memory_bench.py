"""`nara bench --only memory`: the analytic terms against hand formulas at LLaDA-8B shapes, the
measured terms against tensor sizes on a small model, and the command end to end. No timing."""

from __future__ import annotations

import json

import pytest
import torch

from nara.benchmarking import memory
from nara.cli import main
from nara.diffusion.loss import HEAD_CHUNK_BYTES
from nara.models import LLaDAConfig, tiny_config

R = 32
D, L, M, V = 4096, 32, 12288, 126464  # LLaDA-8B: width, layers, MLP width, vocabulary


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_parameter_and_optimizer_bytes_by_hand() -> None:
    split = memory.parameter_split(memory.adapted_model(LLaDAConfig(), "LoRA", R))
    # LoRA on q, k, v, attn_out (all d × d at 8B): A (r × d) and B (d × r) each
    assert split["trainable"] == L * 4 * 2 * R * D
    # per block: q, k, v, attn_out (d²) and gate, up, down (d·m); two norms of d
    assert split["block_linear"] == L * (4 * D * D + 3 * D * M)
    assert split["kept"] == 2 * V * D + L * 2 * D + D  # embedding, head, norms, final norm
    bf16 = memory.parameter_bytes(split, "bf16")
    assert bf16 == 2 * split["block_linear"] + 2 * split["kept"] + 4 * split["trainable"]
    nf4 = memory.parameter_bytes(split, "4bit")
    # 4 bits, one 8-bit absmax per 64 weights, one float32 per 256 absmax
    per_weight = 4 / 8 + 1 / 64 + 4 / 64 / 256
    expected = split["block_linear"] * per_weight + 2 * split["kept"] + 4 * split["trainable"]
    assert nf4 == pytest.approx(expected, abs=1)
    assert memory.optimizer_bytes(split["trainable"]) == 12 * split["trainable"]  # m, v, grad
    with pytest.raises(ValueError, match="weights must be one of"):
        memory.parameter_bytes(split, "int3")


def test_logits_and_activation_terms_by_hand() -> None:
    full = memory.logits_bytes(V, batch=1, seq=2048, masked_head=False)
    # float32 log-softmax and logit gradient at the 1024 masked positions, bf16 (B, T, V) gradient
    assert full == 2 * 4 * 1024 * V + 2 * 2048 * V
    chunk = HEAD_CHUNK_BYTES // (4 * V)
    assert memory.logits_bytes(V, 1, 2048, masked_head=True) == 3 * 4 * V * chunk
    assert memory.logits_bytes(V, 1, 8, masked_head=True) == 3 * 4 * V * 4  # 4 masked positions
    config, tokens, hd = LLaDAConfig(), 512, D // 32
    # per token of one block: bf16 5d + 3m + 4 targets × r (LoRA), float32 2d + 2 + 32 heads
    block = tokens * (2 * (5 * D + 3 * M + 4 * R) + 4 * (2 * D + 2 + 32))
    head = 4 * tokens * (D + 1) + 2 * (tokens // 2) * D  # final norm; masked hidden states
    rotary = 2 * 4 * tokens * hd
    shape = {"method": "LoRA", "rank": R}
    off = memory.saved_activation_bytes(config, 1, 512, checkpointing=False, **shape)
    assert off == L * block - 4 * tokens * (D + 1) + rotary + head  # block 0's first norm: none
    on = memory.saved_activation_bytes(config, 1, 512, checkpointing=True, **shape)
    assert on == L * tokens * D * 2 + rotary + head
    mlp = 2 * 3 * M * tokens
    assert memory.transient_bytes(config, 1, 512, checkpointing=False, **shape) == mlp
    assert memory.transient_bytes(config, 1, 512, checkpointing=True, **shape) == mlp + block
    nara = memory.saved_activation_bytes(config, 1, 512, checkpointing=False, method="NaRA", rank=R)
    assert nara - off == L * tokens * 2 * 4 * R  # NaRA also saves the mixed r-vector per target
    terms = memory.analytic_terms(
        config,
        memory.parameter_split(memory.adapted_model(config, "NaRA", R)),
        method="NaRA",
        rank=R,
        batch=1,
        seq=512,
        weights="bf16",
        checkpointing=False,
    )
    assert terms["activations"]["bytes"] == nara + mlp
    fixed = terms["parameters"]["bytes"] + terms["optimizer"]["bytes"] + nara
    assert terms["total"]["bytes"] == fixed + max(mlp, terms["logits"]["bytes"])
    parts = ("parameters", "optimizer", "activations", "logits")
    assert all(terms[k]["method"].startswith("analytic") for k in parts)


# A small float32 model on which every term is measured: the tensors autograd saves (hooks on
# saved tensors) and the step's peak (profiler memory events), against the formulas.
SMALL = {
    "d_model": 128, "n_heads": 4, "n_kv_heads": 4, "n_layers": 3, "mlp_hidden_size": 384,
    "vocab_size": 4096, "embedding_size": 4096, "mask_token_id": 4095, "eos_token_id": 4094,
    "pad_token_id": 4094,
}  # fmt: skip


@pytest.mark.parametrize("method", ["LoRA", "NaRA"])
@pytest.mark.parametrize(("masked_head", "checkpointing"), memory.MEASURED_SETTINGS)
def test_terms_add_up_to_the_measured_peak(method, masked_head, checkpointing) -> None:
    """Tolerances: saved tensors within 3 % (LoRA) and 5 % (NaRA): the number of masked
    positions is random around T/2, a few int64 index tensors are left out, and so is NaRA's
    per-sample conditioning (18 kB here, nothing at 8B). The peak lies within 5 % of the range
    [formula - gradients, formula]: the adapters' gradients are counted, but the peak can come
    before backward allocates them (the head's backward runs first; NaRA's hypernetwork's come
    last), and the MLP's gradient temporaries are bounded by 3m per token where 2.2-2.8m are
    measured."""
    config = tiny_config(**SMALL)
    step = memory.TrainingStep(config, method, 8, 2, 128, masked_head, checkpointing)
    got, formula = step.measured(), step.analytic()
    assert got["parameters"] == formula["parameters"]  # float32 tensor sizes
    assert got["optimizer"] == formula["optimizer"]
    tolerance = 0.03 if method == "LoRA" else 0.05
    assert got["saved"] == pytest.approx(formula["saved"], rel=tolerance)
    gradients = formula["optimizer"] // 3
    assert 0.95 * (formula["step_peak"] - gradients) <= got["step_peak"]
    assert got["step_peak"] <= 1.05 * formula["step_peak"]


def test_bench_only_memory(tmp_path, capsys, keep_threads) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "memory", "--sizes", "mid", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["memory"]
    assert set(results) == {"mid", "8b"}
    rows = results["8b"]["rows"]
    assert len(rows) == 2 * 3 * 2 * 2  # method × seq × checkpointing × weights
    for (
        row
    ) in rows:  # total = fixed + saved + max(transient, logits); activations = saved + transient
        fixed = row["parameters"] + row["optimizer"]
        assert fixed + row["activations"] - 0.03 <= row["total"]
        assert row["total"] <= fixed + row["activations"] + row["logits"] + 0.03
    assert {
        (r["method"], r["masked_head"], r["checkpointing"]) for r in results["mid"]["rows"]
    } == {(m, *s) for m in ("LoRA", "NaRA") for s in memory.MEASURED_SETTINGS}
    printed = capsys.readouterr().out
    assert "Training-step memory at LLaDA-8B shapes" in printed and "step peak" in printed


def test_nf4_parameter_bytes_are_the_stored_bytes_of_a_4bit_load(tmp_path) -> None:
    """The 4-bit parameters formula against what bitsandbytes stores for a real NF4 load: the
    packed codes, the 8-bit absmax per 64 weights and the float32 constants per 256 absmax
    (block linears of 16384 and 32768 weights, so every block of 64 and 256 is full); the
    16- and 256-entry lookup tables per layer are left out, as in the formula."""
    from nara.models import LLaDAModelLM, load_model

    config = tiny_config(d_model=128, n_heads=4, n_kv_heads=4, mlp_hidden_size=256)
    LLaDAModelLM(config).save_pretrained(tmp_path)
    model = load_model(tmp_path, load_in_4bit=True).model
    split = memory.parameter_split(memory.adapted_model(config, "LoRA", R))
    stored = 0
    for name, module in model.named_modules():
        quant_state = getattr(getattr(module, "weight", None), "quant_state", None)
        if quant_state is not None:
            assert ".blocks." in name  # only the block linears are quantised
            stored += module.weight.nbytes + quant_state.absmax.nbytes
            stored += quant_state.state2.absmax.nbytes
    kept = sum(p.nbytes for p in model.parameters() if p.dtype == torch.bfloat16)
    assert kept == 2 * split["kept"]
    assert stored + kept + 4 * split["trainable"] == memory.parameter_bytes(split, "4bit")
