"""nara.runs: file hashes, fingerprints, the folder lock across processes, and run claims."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nara import __version__
from nara.runs import (
    LOCK_FILE,
    RUN_FILE,
    RunFolderError,
    RunLock,
    claim_run_folder,
    fingerprint,
    sha256_file,
)

OUTPUTS = ["*.jsonl", "*.summary.json"]


def test_sha256_file_streams_and_sees_changes(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # several read chunks and a partial one
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data + b"x")  # size changes: the cache must not answer
    assert sha256_file(path) == hashlib.sha256(data + b"x").hexdigest()


def test_large_file_digests_persist_and_follow_changes(tmp_path, monkeypatch) -> None:
    import nara.runs as runs

    monkeypatch.setenv("NARA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runs, "PERSIST_MIN_BYTES", 1)
    monkeypatch.setattr(runs, "_hash_cache", {})
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    assert sha256_file(path) == hashlib.sha256(b"weights").hexdigest()
    cache = tmp_path / "cache" / "sha256.json"
    saved = json.loads(cache.read_text())
    ((stamp, _),) = saved.values()
    # a new process (empty memory cache) takes the stored digest: plant one to see it used
    cache.write_text(json.dumps({str(path.resolve()): [stamp, "planted"]}))
    monkeypatch.setattr(runs, "_hash_cache", {})
    assert sha256_file(path) == "planted"
    new = tmp_path / "new.safetensors"
    new.write_bytes(b"weightz")
    os.replace(new, path)  # same size, new content (how weights are saved): hashed again
    assert sha256_file(path) == hashlib.sha256(b"weightz").hexdigest()


def test_fingerprint_is_canonical(tmp_path: Path) -> None:
    a = fingerprint({"x": 1, "y": {"b": 2, "a": str(tmp_path)}})
    assert a == fingerprint({"y": {"a": tmp_path, "b": 2}, "x": 1})
    expected = json.dumps({"x": 1, "y": {"a": str(tmp_path), "b": 2}}, separators=(",", ":"))
    assert a == hashlib.sha256(expected.encode()).hexdigest()
    assert a != fingerprint({"x": 2, "y": {"b": 2, "a": str(tmp_path)}})
    assert fingerprint({"x": 1}, length=10) == fingerprint({"x": 1})[:10]
    with pytest.raises(TypeError, match="JSON values"):
        fingerprint({"x": object()})


HOLDER = """
import sys, time
from nara.runs import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_refuses_a_second_process_and_frees_on_death(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        message = f"writing to .*out \\(pid {child.pid}\\)"
        with pytest.raises(RunFolderError, match=message), RunLock(folder):
            pass
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel drops the lock
        child.wait()
    with RunLock(folder):
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_lock_is_exclusive_within_one_process_and_reusable(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        second = RunLock(tmp_path)
        with pytest.raises(RunFolderError, match="another nara run"):
            second.__enter__()
    with RunLock(tmp_path):
        pass


def test_lock_on_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.txt"
    path.write_text("mine")
    with pytest.raises(RunFolderError, match="is a file"), RunLock(path):
        pass
    assert path.read_text() == "mine"


def test_claim_new_then_same_continues(tmp_path: Path) -> None:
    fields = {"model": "tiny", "limit": 40}
    assert claim_run_folder(tmp_path, fields, kind="eval", outputs=OUTPUTS) is False
    record = json.loads((tmp_path / RUN_FILE).read_text())
    assert record["fields"] == {**fields, "nara_version": __version__}
    assert record["fingerprint"] == fingerprint({**fields, "nara_version": __version__})
    assert record["kind"] == "eval"
    (tmp_path / "boolq.jsonl").write_text("{}\n")
    assert claim_run_folder(tmp_path, fields, kind="eval", outputs=OUTPUTS) is True


def test_claim_names_each_differing_field(tmp_path: Path) -> None:
    claim_run_folder(
        tmp_path, {"oracle": True, "s": {"steps": 8}, "limit": 40}, kind="eval", outputs=OUTPUTS
    )
    (tmp_path / "boolq.jsonl").write_text("{}\n")
    with pytest.raises(RunFolderError) as err:
        claim_run_folder(
            tmp_path,
            {"oracle": False, "s": {"steps": 4}, "limit": 40},
            kind="eval",
            outputs=OUTPUTS,
        )
    message = str(err.value)
    assert "oracle: true (saved) vs false (now)" in message
    assert "s.steps: 8 (saved) vs 4 (now)" in message
    assert "limit" not in message
    assert "a new --output folder, or --overwrite" in message
    assert (tmp_path / "boolq.jsonl").read_text() == "{}\n"  # nothing touched


def test_claim_hints_for_training(tmp_path: Path) -> None:
    claim_run_folder(tmp_path, {"lr": 1e-3}, kind="train", outputs=["final"])
    (tmp_path / "final").mkdir()
    with pytest.raises(RunFolderError, match="training.output_dir, or training.overwrite=true"):
        claim_run_folder(tmp_path, {"lr": 1e-4}, kind="train", outputs=["final"])
    with pytest.raises(RunFolderError, match="continue it with training.resume=latest"):
        claim_run_folder(tmp_path, {"lr": 1e-3}, kind="train", outputs=["final"], resume=False)
    assert claim_run_folder(tmp_path, {"lr": 1e-3}, kind="train", outputs=["final"]) is True
    with pytest.raises(RunFolderError, match="kind: 'train' \\(saved\\) vs 'eval' \\(now\\)"):
        claim_run_folder(tmp_path, {"lr": 1e-3}, kind="eval", outputs=["final"])


def test_overwrite_removes_only_the_runs_outputs(tmp_path: Path) -> None:
    claim_run_folder(tmp_path, {"a": 1}, kind="eval", outputs=OUTPUTS)
    (tmp_path / "boolq.jsonl").write_text("old\n")
    (tmp_path / "boolq.summary.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("user file")
    assert (
        claim_run_folder(tmp_path, {"a": 2}, kind="eval", outputs=OUTPUTS, overwrite=True) is False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", RUN_FILE]
    assert json.loads((tmp_path / RUN_FILE).read_text())["fields"]["a"] == 2


def test_outputs_without_record_are_refused(tmp_path: Path) -> None:
    (tmp_path / "boolq.jsonl").write_text("{}\n")
    with pytest.raises(RunFolderError, match="without a run record \\(boolq.jsonl"):
        claim_run_folder(tmp_path, {"a": 1}, kind="eval", outputs=OUTPUTS)
    assert (
        claim_run_folder(tmp_path, {"a": 1}, kind="eval", outputs=OUTPUTS, overwrite=True) is False
    )
    assert not (tmp_path / "boolq.jsonl").exists()


def test_damaged_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / "boolq.jsonl").write_text("{}\n")
    (tmp_path / RUN_FILE).write_text('{"kind": "ev')
    with pytest.raises(RunFolderError, match="run.json is not a valid nara run record"):
        claim_run_folder(tmp_path, {"a": 1}, kind="eval", outputs=OUTPUTS)


def test_unrelated_files_or_a_bare_record_do_not_block(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("user file")
    claim_run_folder(tmp_path, {"a": 1}, kind="eval", outputs=OUTPUTS)
    # a claimed folder whose run wrote nothing yet is free for another run
    assert claim_run_folder(tmp_path, {"a": 2}, kind="eval", outputs=OUTPUTS) is False
    assert json.loads((tmp_path / RUN_FILE).read_text())["fields"]["a"] == 2
    assert (tmp_path / "notes.txt").read_text() == "user file"
