"""Data parallelism on CPU: two gloo processes give the loss curve of one process that sees the
same global batch (there as 2 micro-batches of gradient accumulation), and a two-process run
killed after its checkpoint resumes to the same curve."""

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
            "save_every": 2,  # both processes write their RNG state into the checkpoint
            "seed": 3,
        },
        "output_dir": str(output_dir),
    }


# `nara train`, but every process exits at once after update NARA_TEST_STOP (a killed job)
DYING_TRAIN = """
import os, sys
from nara.cli import main
from nara.training.trainer import Trainer

after_update = Trainer._after_update

def dying(self):
    after_update(self)
    if self.state.step == int(os.environ["NARA_TEST_STOP"]):
        os._exit(3)

Trainer._after_update = dying
sys.exit(main(sys.argv[1:]))
"""


def torchrun(*args: str, stop: int | None = None) -> subprocess.CompletedProcess:
    """Two CPU processes; torchrun gives two ranks here, `accelerate launch --num_processes 2
    --cpu` would start one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if stop is not None:
        env["NARA_TEST_STOP"] = str(stop)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        *args, "--no-progress",
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_model_dir, arith_files, tmp_path):
    train_file, _ = arith_files
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(recipe(tiny_model_dir, train_file, tmp_path / "ddp")))
    done = torchrun("-m", "nara.cli", "train", str(config_path))
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

    # the two-process run killed after update 3 (checkpoint: update 2), then resumed
    script = tmp_path / "dying_train.py"
    script.write_text(DYING_TRAIN)
    killed = ["train", str(config_path), f"output_dir={tmp_path / 'killed'}"]
    assert torchrun(str(script), *killed, stop=3).returncode != 0
    saved = tmp_path / "killed" / "checkpoints" / "step_0000002"
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= {
        p.name for p in saved.iterdir()
    }
    done = torchrun("-m", "nara.cli", *killed, "training.resume=latest")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {saved} at update 2" in done.stdout
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(ddp, resumed):
        for key in ("loss", "lam", "lr", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)
