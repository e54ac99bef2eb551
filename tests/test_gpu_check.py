"""benchmarks/gpu_check.py, the prepared GPU check, run with --tiny on the CPU: every section
runs through the same code as on a GPU and writes its JSON. No timing is judged."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_every_section(tmp_path, capsys) -> None:
    threads = torch.get_num_threads()
    out = tmp_path / "gpu_check.json"
    args = ["--tiny", "--reps", "1", "--seqs", "16", "--batch", "2", "--batch-seq", "8"]
    try:
        assert _gpu_check().main([*args, "--gen-length", "4", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())
    assert results["environment"]["bitsandbytes"] and results["shape"]["n_layers"] == 2
    rows = results["training"]
    keys = {(r["method"], r["checkpointing"], r["weights"]) for r in rows}
    assert keys == {
        (m, c, w) for m in ("LoRA", "NaRA") for c in (False, True) for w in ("bf16", "4bit")
    }
    assert all(r["seq"] == 16 and r["median_s"] > 0 and "oom" not in r for r in rows)
    assert all(r["analytic_total_gib"] >= 0 and r["peak_gib"] is None for r in rows)  # no CUDA
    batching = results["batching"]
    assert batching["batch"] == 2 and batching["speedup"] > 0
    assert batching["batched_samples_per_s"] > 0 and batching["single_samples_per_s"] > 0
    assert [r["cache"] for r in results["sampling"]] == ["none", "prefix", "dual"]
    assert all(r["tokens_per_s"] > 0 for r in results["sampling"])
    assert json.loads(capsys.readouterr().out) == results


def test_without_a_gpu_it_asks_for_tiny(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        _gpu_check().parse_args([])
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _gpu_check().parse_args(["--tiny", "--sections", "training,speed"])
    assert "--sections: unknown ['speed']" in capsys.readouterr().err
