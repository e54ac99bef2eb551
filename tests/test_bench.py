"""`nara bench --quick` end to end, in-process, on a few rows: valid JSON with the promised fields.

No timing thresholds: the figures depend on the machine; only their presence and consistency
(a row's ratio to itself is 1) are checked.
"""

from __future__ import annotations

import json

import pytest
import torch

from nara.cli import main


@pytest.fixture
def keep_threads():
    """The bench sets torch's thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_quick_writes_json(tmp_path, capsys, keep_threads):
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "training,parameters", "--sizes", "tiny"]
    argv += ["--methods", "PEFT LoRA,nara LoRA,NaRA", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "smoke test" in printed.out and "smoke test" in printed.err
    assert "### Targets" in printed.out and "USDT" not in printed.err
    results = json.loads(out.read_text())
    rows = results["training"]["tiny"]["variants"]
    assert set(rows) == {"frozen base (forward)", "floor", "PEFT LoRA", "nara LoRA", "NaRA"}
    assert rows["nara LoRA"]["vs_nara_lora"] == 1.0 and rows["floor"]["vs_floor"] == 1.0
    assert all(r["median_s"] > 0 and r["peak_mb"] >= 0 for r in rows.values())
    params = results["parameters"]
    assert set(params) == {"tiny", "8b"}
    lora, nara = (params["8b"]["methods"][m]["trainable"] for m in ("nara LoRA", "NaRA"))
    # NaRA = LoRA + one global hypernetwork 64 → 256 → 512 → r² (r = 32)
    hyper = 64 * 256 + 256 + 256 * 512 + 512 + 512 * 32**2 + 32**2
    assert nara - lora == hyper == params["8b"]["nara_over_lora"]
    # a smoke test's timings judge nothing: only the parameter target is reported
    assert [t["target"] for t in results["targets"]] == ["NaRA params over LoRA, % of base"]
    assert results["meta"]["machine"]["torch_threads"] == 2


def test_profiler_lines_are_dropped_and_other_output_kept(capfd):
    import os

    from nara.benchmarking.timing import _without_profiler_lines

    with _without_profiler_lines():
        os.write(2, b"USDT:2026-12-02 14:36:18 17494:17494 SyncActivityProfilerHandler.cpp:52] x\n")
        os.write(2, b"a real warning\n")
    assert capfd.readouterr().err == "a real warning\n"
