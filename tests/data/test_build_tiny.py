"""scripts/build_tiny.py: a build stopped and resumed from its checkpoint ends with the same weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nara.models import load_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_tiny.py"
QUICK = ["--quick", "--eval-examples", "1", "--threads", "1"]  # 12 steps, logged every 4


@pytest.fixture(scope="module")
def build_tiny():
    spec = importlib.util.spec_from_file_location("build_tiny", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stop_and_resume_gives_the_uninterrupted_weights(build_tiny, tmp_path):
    build_tiny.main([*QUICK, "--out", str(tmp_path / "whole")])
    resumed = ["--out", str(tmp_path / "split")]
    build_tiny.main([*QUICK, *resumed, "--stop-at", "5"])  # mid-phase, mid-log window
    assert not (tmp_path / "split" / "model.safetensors").exists()
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5  # and the checkpoint folder loads as a model:
    loaded = load_model(tmp_path / "split" / "checkpoint").model.state_dict()
    saved = load_file(tmp_path / "split" / "checkpoint" / "model.safetensors")
    assert all((loaded[name] == tensor).all() for name, tensor in saved.items())
    build_tiny.main([*QUICK, *resumed, "--resume"])
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    split = load_file(tmp_path / "split" / "model.safetensors")
    assert whole.keys() == split.keys()
    for name, tensor in whole.items():
        assert (tensor == split[name]).all(), name
    log = [
        json.loads(x) for x in (tmp_path / "split" / "training_log.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in log] == [4, 8, 12]  # the resumed run appends to the log


def test_resume_refuses_other_options_and_a_missing_checkpoint(build_tiny, tmp_path):
    out = ["--out", str(tmp_path / "b")]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        build_tiny.main([*QUICK, *out, "--resume"])
    build_tiny.main([*QUICK, *out, "--stop-at", "2"])
    with pytest.raises(ValueError, match="'lr': \\(0.002, 0.001\\)"):
        build_tiny.main([*QUICK, *out, "--resume", "--lr", "1e-3"])
