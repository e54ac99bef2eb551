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
    assert full == 2 * 2048 * V + 4 * 2 * 1024 * V  # bf16 logits, float32 CE in and log-softmax
    chunk = HEAD_CHUNK_BYTES // (4 * V)
    assert memory.logits_bytes(V, 1, 2048, masked_head=True) == 8 * V * chunk
    assert memory.logits_bytes(V, 1, 8, masked_head=True) == 8 * V * 4  # the 4 masked positions
    config = LLaDAConfig()
    off = memory.activation_elements(config, 1, 512, checkpointing=False)
    assert off == L * 512 * (10 * D + 2 * D + 4 * M)
    on = memory.activation_elements(config, 1, 512, checkpointing=True)
    assert on == L * 512 * D + off // L
    terms = memory.analytic_terms(
        config,
        memory.parameter_split(memory.adapted_model(config, "NaRA", R)),
        batch=1,
        seq=512,
        weights="bf16",
        checkpointing=False,
    )
    parts = ("parameters", "optimizer", "activations", "logits")
    assert terms["total"]["bytes"] == sum(terms[k]["bytes"] for k in parts)
    assert terms["activations"]["bytes"] == 2 * off
    assert all(terms[k]["method"].startswith("analytic") for k in parts)


def test_measured_terms_are_the_tensor_sizes_on_a_small_model() -> None:
    config = tiny_config()
    split = memory.parameter_split(memory.adapted_model(config, "NaRA", 4))
    got = memory.measured_step(config, "NaRA", 4, batch=2, seq=16, masked_head=True)
    assert got["parameters"] == 4 * sum(split.values())  # float32 on CPU
    assert got["optimizer"] == memory.optimizer_bytes(split["trainable"])
    assert got["step_peak"] > 0


def test_bench_only_memory(tmp_path, capsys, keep_threads) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "memory", "--sizes", "mid", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["memory"]
    assert set(results) == {"mid", "8b"}
    rows = results["8b"]["rows"]
    assert len(rows) == 2 * 3 * 2 * 2  # method × seq × checkpointing × weights
    for row in rows:
        parts = sum(row[k] for k in ("parameters", "optimizer", "activations", "logits"))
        assert row["total"] == pytest.approx(parts, abs=0.03)
    assert {
        (r["method"], r["masked_head"], r["checkpointing"]) for r in results["mid"]["rows"]
    } == {(m, *s) for m in ("LoRA", "NaRA") for s in memory.MEASURED_SETTINGS}
    printed = capsys.readouterr().out
    assert "Training-step memory at LLaDA-8B shapes" in printed and "step peak" in printed
