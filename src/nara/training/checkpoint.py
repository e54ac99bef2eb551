"""Resumable checkpoints that never run code and are never half-written.

A checkpoint holds only plain data: the trainable weights and each process's RNG state as
safetensors, the optimizer state as a ``torch.save`` of tensors and plain containers (loaded with
``weights_only=True``, which refuses any other object), and the trainer counters, scheduler and
run fingerprint as JSON. Nothing in it is unpickled, so ``training.resume=<folder>`` on a folder
from someone else cannot execute code.

A checkpoint is written to ``step_N.tmp-<pid>`` and renamed to ``step_N`` only after every file is
written and ``complete.json`` lists each file's sha256. A folder without that marker, or whose
files no longer match it (truncated, flipped bytes), is skipped with a warning that names it;
``resume=latest`` takes the newest one that checks out.

Layout of ``output_dir``::

    run.json                    the run's fingerprint (see nara.runs)
    checkpoints/step_0000040/   model.safetensors, optimizer.pt, rng_state_<rank>.safetensors,
                                trainer_state.json, adapter/, config.yaml, complete.json
    best/                       adapter with the lowest validation loss (+ nara_run.json)
    final/                      adapter at the end of training
    metrics.jsonl               one JSON object per logged update / evaluation
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nara.training.metrics import read_metrics

CHECKPOINTS = "checkpoints"
COMPLETE = "complete.json"
TRAINER_STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")
_PARTIAL = re.compile(r"^.+\.(tmp|old)-\d+$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the folder and the fix."""


@dataclass
class TrainerState:
    """Counters that locate a run in its data stream; saved with every checkpoint.

    Attributes:
        step: optimizer updates done.
        epoch: current epoch.
        batches_in_epoch: micro-batches this process consumed in the current epoch.
        micro_batches: micro-batches this process consumed in total (seeds the noise draws).
        best_val_loss, best_step: the best validation so far.
    """

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    micro_batches: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# ----------------------------------------------------------------------------- folders


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step_{step:07d}"


def temporary_dir(final: Path, token: int) -> Path:
    """Where ``final`` is written before it is complete (``token``: the main process's pid)."""
    return final.with_name(f"{final.name}.tmp-{token}")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders under ``output_dir`` (complete or not), oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Delete folders a killed run left half-written (``*.tmp-<pid>``, ``*.old-<pid>``), with a
    warning each; call it only while holding the run's lock. Returns what was removed."""
    root = Path(output_dir)
    found = [
        p
        for folder in (root, root / CHECKPOINTS)
        if folder.is_dir()
        for p in folder.iterdir()
        if p.is_dir() and _PARTIAL.match(p.name)
    ]
    for path in sorted(found):
        warnings.warn(f"removing {path}: half-written by a run that was killed", stacklevel=2)
        shutil.rmtree(path, ignore_errors=True)
    return sorted(found)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` at ``dest``, replacing what was there."""
    old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def writing(tmp: Path, what: str) -> Iterator[Path]:
    """Write ``what`` into the temporary folder ``tmp``: on any failure ``tmp`` is removed, so
    nothing half-written stays behind, and an OSError (a full disk) becomes a clear error."""
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"could not write {what}: {err}; nothing half-written was kept. Free disk space "
                "(or lower training.keep_checkpoints), then continue with training.resume=latest"
            ) from err
        raise


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- completion


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(tmp: Path, final: Path, step: int) -> None:
    """Make ``tmp`` the complete checkpoint ``final``: fsync its files, write ``complete.json``
    (the sha256 of each file), then rename it into place."""
    files = {}
    for path in _files(tmp):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(tmp).as_posix()] = _sha256(path)
    marker = {"format": FORMAT, "step": step, "files": files}
    with (tmp / COMPLETE).open("w") as f:
        f.write(json.dumps(marker, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    replace_dir(tmp, final)


def problem(path: Path) -> str | None:
    """Why ``path`` is not a usable checkpoint (None when it is complete and intact)."""
    marker = path / COMPLETE
    if not marker.is_file():
        if (path / "random_states_0.pkl").exists():
            return "it was written by an older nara (pickled trainer state, which is not loaded)"
        return f"it has no {COMPLETE} (half-written: the run stopped while saving it)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"its {COMPLETE} is damaged"
    missing = [n for n in (TRAINER_STATE, WEIGHTS, OPTIMIZER, rng_name(0)) if n not in files]
    if missing:
        return f"its {COMPLETE} does not list {', '.join(missing)}"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum (truncated or modified)"
    return None


def latest_complete(output_dir: str | Path) -> Path | None:
    """The newest checkpoint that checks out; each newer broken one is skipped with a warning."""
    for path in reversed(list_checkpoints(output_dir)):
        why = problem(path)
        if why is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {why}", stacklevel=2)
    return None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``latest`` (None when there is none) or a named folder.

    Raises:
        CheckpointError: an explicit folder that does not exist or does not check out.
    """
    if resume is None:
        return None
    if resume == "latest":
        return latest_complete(output_dir)
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(
            f"training.resume={resume!r} is not a checkpoint folder; use 'latest' or a "
            f"{CHECKPOINTS}/step_* folder under an output_dir"
        )
    why = problem(path)
    if why is not None:
        raise CheckpointError(
            f"training.resume={resume!r} cannot be resumed: {why}; pick another checkpoint "
            "or training.resume=latest"
        )
    return path


# ----------------------------------------------------------------------------- contents


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        CheckpointError: the file is not a JSON object.
    """
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(path))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (a format that holds nothing but tensors).

    Raises:
        CheckpointError: the file is not a safetensors file.
    """
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors reports a bad header as its own error type
        raise CheckpointError(f"{path} is not a safetensors file ({err})") from None


def save_tensors(path: Path, state: Any) -> None:
    """``torch.save`` of tensors in plain containers (what an optimizer's state dict holds)."""
    torch.save(state, path)


def load_tensors(path: Path) -> Any:
    """The inverse of :func:`save_tensors`; ``weights_only=True`` refuses anything but plain data.

    Raises:
        CheckpointError: the file holds other objects (a pickle that could run code).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's refusal comes as several error types
        raise CheckpointError(
            f"{path} holds more than tensors and plain containers, so it is not loaded "
            f"(it could run code): {str(err).splitlines()[0]}"
        ) from None


def rng_name(rank: int) -> str:
    return f"rng_state_{rank}.safetensors"


def rng_state() -> dict[str, torch.Tensor]:
    """This process's Python, NumPy, torch and CUDA RNG states as tensors."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()  # the legacy global MT19937
    state = {
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([math.nan if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.tensor([*keys.tolist(), pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    python = state["python"].tolist()
    gauss = state["python_gauss"].item()
    random.setstate((python[0], tuple(python[1:]), None if math.isnan(gauss) else gauss))
    numpy = state["numpy"].tolist()
    keys = np.array(numpy[:-2], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, numpy[-2], numpy[-1], state["numpy_gauss"].item()))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ----------------------------------------------------------------------------- metrics


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric records up to ``step`` (a killed run wrote more after its last checkpoint;
    torn lines are dropped with a warning)."""
    if not path.is_file():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
