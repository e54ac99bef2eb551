"""Checkpoints that never run code and are never half-written; output folders that never mix two
runs. Fault injection: a malicious pickle, truncated files, a full disk, SIGKILL mid-save, Ctrl-C,
a second run into a used or locked folder, a torn metrics line."""

from __future__ import annotations

import ast
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_support import run_config

import nara
from nara.runs import RunFolderError, RunLock
from nara.training import checkpoint as ckpt
from nara.training.metrics import read_metrics
from nara.training.trainer import Trainer


class Killed(Exception):
    pass


def _train(config) -> Trainer:
    trainer = Trainer(config, show_progress=False)
    trainer.train()
    return trainer


def _killed_at(config, step: int, monkeypatch) -> None:
    """Train ``config`` and die right after update ``step``."""
    original = Trainer._after_update

    def dying(self):
        original(self)
        if self.state.step == step:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_after_update", dying)
        with pytest.raises(Killed):
            Trainer(config, show_progress=False).train()


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-6, atol=1e-7)


def _forge_complete(folder: Path) -> None:
    """Rewrite complete.json to match the files as they are now (what an attacker can do)."""
    step = json.loads((folder / ckpt.COMPLETE).read_text())["step"]
    (folder / ckpt.COMPLETE).unlink()
    files = {p.relative_to(folder).as_posix(): ckpt._sha256(p) for p in ckpt._files(folder)}
    (folder / ckpt.COMPLETE).write_text(json.dumps({"format": 1, "step": step, "files": files}))


class WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: code execution, visible as a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# ----------------------------------------------------------------------------- no pickle


def test_a_malicious_pickle_in_a_checkpoint_is_never_executed(
    tiny_model_dir, arith_files, tmp_path
):
    _train(run_config(tiny_model_dir, arith_files, tmp_path / "run", "training.max_steps=4"))
    good = ckpt.checkpoint_dir(tmp_path / "run", 3)
    marker = tmp_path / "pwned"

    def refused(folder: Path, reason: str) -> None:
        victim = run_config(
            tiny_model_dir,
            arith_files,
            tmp_path / "victim",
            "training.max_steps=4",
            f"training.resume={folder}",
        )
        with pytest.raises(ckpt.CheckpointError, match=reason):
            Trainer(victim, show_progress=False)
        assert not marker.exists()

    # the optimizer file replaced by a pickle that runs code, its checksum forged to match
    bad = tmp_path / "evil" / "step_0000003"
    shutil.copytree(good, bad)
    torch.save({"state": WritesMarker(marker), "param_groups": []}, bad / ckpt.OPTIMIZER)
    _forge_complete(bad)
    refused(bad, "could run code")

    # an RNG file that is a pickle, not safetensors
    shutil.copy(good / ckpt.OPTIMIZER, bad / ckpt.OPTIMIZER)
    torch.save(WritesMarker(marker), bad / ckpt.rng_name(0))
    _forge_complete(bad)
    refused(bad, "not a safetensors file")

    # the pickled custom state of an Accelerate checkpoint (older nara) is not even opened
    legacy = tmp_path / "evil" / "step_0000009"
    legacy.mkdir()
    torch.save(WritesMarker(marker), legacy / "custom_checkpoint_0.pkl")
    torch.save(WritesMarker(marker), legacy / "random_states_0.pkl")
    refused(legacy, "older nara")


def test_every_torch_load_in_nara_is_weights_only():
    calls = 0
    for file in Path(nara.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            func = getattr(node, "func", None)
            is_call = isinstance(node, ast.Call) and isinstance(func, ast.Attribute)
            if is_call and func.attr == "load" and getattr(func.value, "id", None) == "torch":
                calls += 1
                flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                assert flags.get("weights_only") is True, f"{file}:{node.lineno}"
    assert calls >= 1


def test_a_forged_marker_or_state_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "step_0000001"
    folder.mkdir()
    (folder / ckpt.COMPLETE).write_text('{"format": 1, "step": 1, "files": {}}')
    assert ckpt.problem(folder) == (
        "its complete.json does not list trainer_state.json, model.safetensors, "
        "optimizer.pt, rng_state_0.safetensors"
    )
    (folder / ckpt.TRAINER_STATE).write_text('{"step": 1')
    with pytest.raises(ckpt.CheckpointError, match="trainer_state.json is not valid JSON"):
        ckpt.load_json(folder / ckpt.TRAINER_STATE)


# ----------------------------------------------------------------------------- atomic saves


def test_resume_latest_skips_damaged_and_half_written_checkpoints(
    tiny_model_dir, arith_files, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    _killed_at(run_config(tiny_model_dir, arith_files, out), 7, monkeypatch)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_0000003", "step_0000006"]
    # the newest checkpoint's RNG file truncated, a newer one without its completion marker,
    # and a temporary folder of a save that was cut short
    rng = ckpt.checkpoint_dir(out, 6) / ckpt.rng_name(0)
    rng.write_bytes(rng.read_bytes()[:-20])
    unsealed = ckpt.checkpoint_dir(out, 7)
    shutil.copytree(ckpt.checkpoint_dir(out, 3), unsealed)
    (unsealed / ckpt.COMPLETE).unlink()
    partial = ckpt.temporary_dir(ckpt.checkpoint_dir(out, 8), 4242)
    partial.mkdir()

    resumed = run_config(tiny_model_dir, arith_files, out, "training.resume=latest")
    with pytest.warns(UserWarning) as caught:
        trainer = Trainer(resumed, show_progress=False)
    text = "\n".join(str(w.message) for w in caught)
    assert f"removing {partial}" in text
    assert f"skipping checkpoint {unsealed}: it has no complete.json" in text
    assert f"skipping checkpoint {rng.parent}: rng_state_0.safetensors does not match" in text
    assert not partial.exists()
    assert trainer.state.step == 3
    trainer.train()
    assert f"resumed from {ckpt.checkpoint_dir(out, 3)} at update 3" in capsys.readouterr().out

    _train(run_config(tiny_model_dir, arith_files, tmp_path / "full"))
    _assert_same_weights(tmp_path / "full" / "final", out / "final")


def test_a_full_disk_during_a_save_is_a_clear_error_and_leaves_no_half_checkpoint(
    tiny_model_dir, arith_files, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    original = ckpt.save_tensors

    def full_disk(path, state):
        if "step_0000006" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, state)

    monkeypatch.setattr(ckpt, "save_tensors", full_disk)
    with pytest.raises(ckpt.CheckpointError) as info:
        Trainer(run_config(tiny_model_dir, arith_files, out), show_progress=False).train()
    message = str(info.value)
    assert str(ckpt.checkpoint_dir(out, 6)) in message and "No space left" in message
    assert "training.resume=latest" in message
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000003"]
    # the lock was released and resume=latest takes the checkpoint that was complete
    trainer = Trainer(
        run_config(tiny_model_dir, arith_files, out, "training.resume=latest"),
        show_progress=False,
    )
    assert trainer.state.step == 3
    trainer.close()


KILL_DURING_SAVE = """
import os, signal, sys
from nara.training import checkpoint as ckpt
from nara.training.config import load_recipe
from nara.training.trainer import Trainer

seal = ckpt.seal

def dying(tmp, final, step):
    if step == 6:  # every file of the checkpoint written, the completion marker not yet
        os.kill(os.getpid(), signal.SIGKILL)
    seal(tmp, final, step)

ckpt.seal = dying
Trainer(load_recipe(sys.argv[1]), show_progress=False).train()
"""


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_from_the_newest_complete_checkpoint(
    tiny_model_dir, arith_files, tmp_path
):
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(run_config(tiny_model_dir, arith_files, out).to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(recipe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert left[0] == "step_0000003" and left[1].startswith("step_0000006.tmp-"), left

    resumed = run_config(tiny_model_dir, arith_files, out, "training.resume=latest")
    with pytest.warns(UserWarning, match="step_0000006.tmp-.*half-written"):
        trainer = Trainer(resumed, show_progress=False)
    assert trainer.state.step == 3
    trainer.train()
    _train(run_config(tiny_model_dir, arith_files, tmp_path / "full"))
    _assert_same_weights(tmp_path / "full" / "final", out / "final")
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == [r["step"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]


def test_a_torn_metrics_line_is_skipped_with_a_warning_naming_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.warns(UserWarning, match=f"{path}, line 2: not a JSON record"):
        assert [r["step"] for r in read_metrics(path)] == [1, 3]
    with pytest.warns(UserWarning, match="line 2"):
        ckpt.truncate_metrics(path, 2)
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]


def test_ctrl_c_during_a_save_leaves_nothing_half_written(
    tiny_model_dir, arith_files, tmp_path, monkeypatch
):
    out = tmp_path / "run"

    def interrupted(tmp, final, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "seal", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        _train(run_config(tiny_model_dir, arith_files, out))
    assert (info.value.step, info.value.checkpoint) == (3, None)
    assert list((out / "checkpoints").iterdir()) == []


# ----------------------------------------------------------------------------- runs never mix


def test_a_used_output_dir_is_refused_without_resume_or_overwrite(
    tiny_model_dir, arith_files, tmp_path, capsys
):
    out = tmp_path / "run"
    first = run_config(tiny_model_dir, arith_files, out, "training.max_steps=7")
    _train(first)
    with pytest.raises(RunFolderError, match="training.resume=latest"):
        Trainer(first, show_progress=False)

    # overwrite removes the old run's checkpoints, adapters and metrics before it starts
    old_best = json.loads((out / "best" / "nara_run.json").read_text())
    assert old_best["step"] == 7
    second = run_config(
        tiny_model_dir,
        arith_files,
        out,
        "training.max_steps=2",
        "training.save_every=none",
        "training.overwrite=true",
    )
    _train(second)
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 2]
    assert json.loads((out / "best" / "nara_run.json").read_text())["step"] == 2
    assert json.loads((out / "run.json").read_text())["fields"]["training"]["max_steps"] == 2

    # resume=latest with no checkpoint: starts from scratch and says so
    capsys.readouterr()
    again = run_config(
        tiny_model_dir,
        arith_files,
        out,
        "training.max_steps=2",
        "training.save_every=none",
        "training.resume=latest",
    )
    _train(again)
    assert "no complete checkpoint in" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 2]


def test_a_second_concurrent_run_fails_at_once(tiny_model_dir, arith_files, tmp_path):
    out = tmp_path / "run"
    config = run_config(tiny_model_dir, arith_files, out)
    # RunLock: a run that is writing there now
    with RunLock(out), pytest.raises(RunFolderError, match="another nara run is writing"):
        Trainer(config, show_progress=False)
    assert not (out / "metrics.jsonl").exists()


def test_resume_with_other_settings_names_the_fields(tiny_model_dir, arith_files, tmp_path):
    out = tmp_path / "run"
    _train(run_config(tiny_model_dir, arith_files, out, "training.max_steps=4"))
    changed = run_config(
        tiny_model_dir, arith_files, out, "training.max_steps=4", "adapter.r=8",
        "training.resume=latest",
    )  # fmt: skip
    with pytest.raises(ckpt.CheckpointError) as info:
        Trainer(changed, show_progress=False)
    assert "was trained with adapter.r=4, this run has adapter.r=8" in str(info.value)
    # bookkeeping keys may change on resume
    same = run_config(
        tiny_model_dir, arith_files, out, "training.max_steps=4", "training.log_every=2",
        "training.resume=latest",
    )  # fmt: skip
    trainer = Trainer(same, show_progress=False)
    assert trainer.state.step == 3
    trainer.close()


# ----------------------------------------------------------------------------- the command


def test_ctrl_c_in_nara_train_says_how_to_continue(
    tiny_model_dir, arith_files, tmp_path, monkeypatch, capsys
):
    from nara.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(run_config(tiny_model_dir, arith_files, tmp_path / "run").to_yaml())
    original = Trainer._after_update

    def ctrl_c(self):
        original(self)
        if self.state.step == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_after_update", ctrl_c)
    assert main(["train", str(recipe), "--no-progress", "training.log_every=1"]) == 130
    err = capsys.readouterr().err
    saved = ckpt.checkpoint_dir(tmp_path / "run", 6)
    assert f"interrupted at update 7; its newest complete checkpoint is {saved}" in err
    command = err.split("continue with: ")[1].strip()
    assert command == f"nara train {recipe} training.log_every=1 training.resume=latest"
    monkeypatch.undo()
    assert main([*shlex.split(command)[1:], "--no-progress"]) == 0
    assert f"resumed from {saved} at update 6" in capsys.readouterr().out


def test_a_broken_recipe_or_a_non_finite_number_is_a_one_line_error(tmp_path, capsys):
    from nara.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("training:\n  lr: 1e-4\n  betas: [0.9, 0.95\nadapter:\n  r: 4\n")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nara train: error: recipe {recipe}, line 4, column 8 is not valid")
    assert "expected ',' or ']'" in err and "Traceback" not in err
    for value in ("inf", "nan", "-inf"):
        recipe.write_text(f"training:\n  lr: {value}\n")
        assert main(["train", str(recipe)]) == 2
        assert "training.lr: expected a finite number" in capsys.readouterr().err
