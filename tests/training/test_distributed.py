"""Data parallelism on CPU: two gloo processes give the loss curve of one process that sees the
same global batch (there as 2 micro-batches of gradient accumulation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from nara.training.config import load_recipe
from nara.training.metrics import read_metrics
from nara.training.trainer import Trainer


def recipe(tiny_model_dir, train_file, output_dir) -> dict:
    return {
        "model": {"name": str(tiny_model_dir)},
        "adapter": {"method": "nara", "r": 4, "hidden_sizes": [16]},
        "data": {"source": str(train_file), "max_examples": 32, "max_length": 16},
        "training": {
            "lr": 3e-3,
            "batch_size": 2,
            "global_batch_size": 4,  # 2 x 2 processes, or 2 x 2 accumulation steps
            "max_steps": 4,
            "seed": 3,
        },
        "output_dir": str(output_dir),
    }


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_model_dir, arith_files, tmp_path):
    train_file, _ = arith_files
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(recipe(tiny_model_dir, train_file, tmp_path / "ddp")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # torchrun gives two ranks here; `accelerate launch --num_processes 2 --cpu` would start one
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "nara.cli", "train", str(config_path), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "ddp" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["grad_accum"] == 1
    assert "MULTI_CPU" in info["distributed_type"]

    single = load_recipe(config_path, [f"output_dir={tmp_path / 'single'}"])
    Trainer(single, show_progress=False).train()
    assert json.loads((tmp_path / "single" / "run_info.json").read_text())["grad_accum"] == 2

    ddp = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    one = read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in ddp] == [r["step"] for r in one] == [1, 2, 3, 4]
    for a, b in zip(one, ddp):
        for key in ("loss", "lam", "lr", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
