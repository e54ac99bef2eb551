"""Run identity: fingerprint a run, lock its output folder, and never mix two runs in one folder.

Every folder that nara writes results to (``nara eval``, ``nara train``, ``nara demo``) holds a
``run.json``: the fields that decide the results (model and weights hash, adapter, data, settings),
their sha256 (the *fingerprint*), the nara version and the creation time. A run continues a folder
only when the fingerprints match; otherwise it stops and names each differing field. A lock file
makes a second concurrent run into the same folder fail at once.

Usage (the caller names the files it writes, so ``overwrite`` removes only those)::

    with RunLock(folder):
        resumed = claim_run_folder(
            folder, fields, kind="eval", resume=True, overwrite=False, outputs=["*.jsonl"]
        )
        ...  # write the run's outputs
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
LOCK_FILE = ".nara.lock"
SHORT_LENGTH = 10

# kind -> (how to pick another folder, how to replace the run, how to continue it)
_HINTS = {
    "eval": ("a new --output folder", "--overwrite", None),
    "demo": ("a new --output folder", "--overwrite", None),
    "train": ("a new training.output_dir", "training.overwrite=true", "training.resume=latest"),
}

PERSIST_MIN_BYTES = 64 << 20  # files this large keep their digest across runs (model weights)

_hash_cache: dict[tuple[str, str], str] = {}


class RunFolderError(ValueError):
    """An output folder holds another run, or is locked by one (the CLI prints it in one line)."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks.

    Cached by (real path, size, mtime, ctime, inode): any write changes the ctime, which no one
    can set back. Digests of files of PERSIST_MIN_BYTES or more are also kept in
    ``$NARA_CACHE_DIR`` (default ``~/.cache/nara``), so a 16 GB model is hashed once, not on
    every ``nara eval``.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    key = (real, stamp)
    if key in _hash_cache:
        return _hash_cache[key]
    persist = st.st_size >= PERSIST_MIN_BYTES
    saved = _read_digests().get(real) if persist else None
    if isinstance(saved, list) and len(saved) == 2 and saved[0] == stamp:
        _hash_cache[key] = str(saved[1])
        return _hash_cache[key]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    _hash_cache[key] = digest.hexdigest()
    if persist:
        _save_digest(real, stamp, _hash_cache[key])
    return _hash_cache[key]


def _digest_file() -> Path:
    root = os.environ.get("NARA_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nara"
    return Path(root) / "sha256.json"


def _read_digests() -> dict[str, Any]:
    try:
        saved = json.loads(_digest_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _save_digest(real: str, stamp: str, digest: str) -> None:
    """Add one digest to the cache file (atomic replace); an unwritable cache is skipped."""
    saved = _read_digests()
    saved[real] = [stamp, digest]
    file = _digest_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(saved, indent=0), encoding="utf-8")
        os.replace(tmp, file)
    except OSError:
        pass  # read-only home: the file is hashed again next time


def model_identity(name_or_path: str | Path) -> dict[str, Any]:
    """What identifies a base model's weights: its name and the sha256 of its weight files.

    ``"tiny"`` hashes the shipped file; a local folder hashes its ``*.safetensors`` and ``*.bin``
    files (one digest over the per-file digests); a hub id records the cached snapshot's commit
    (None when not downloaded yet), since hub revisions pin their files.
    """
    from nara.models.loading import TINY_DIR

    text = str(name_or_path)
    folder = TINY_DIR if text == "tiny" else Path(name_or_path).expanduser()
    if folder.is_dir():
        files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")])
        digests = {f.name: sha256_file(f) for f in files}
        name = "tiny" if text == "tiny" else folder.resolve().name
        return {"name": name, "weights_sha256": fingerprint(digests)}
    return {"name": text, "revision": _hub_revision(text)}


def _hub_revision(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library rejects: loading reports it
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def adapter_identity(folder: str | Path) -> dict[str, str]:
    """sha256 of an adapter folder's weights and config (what decides its outputs).

    Raises:
        FileNotFoundError: the folder lacks the config or weights file nara writes.
    """
    from nara.adapters.save import CONFIG_NAME, WEIGHTS_NAME

    folder = Path(folder)
    files = {"config_sha256": folder / CONFIG_NAME, "weights_sha256": folder / WEIGHTS_NAME}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"no adapter at {folder}: {path.name} is missing; pass the folder nara train "
                "wrote (e.g. runs/<name>/final)"
            )
    return {key: sha256_file(path) for key, path in files.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"run fingerprint fields must be JSON values, got {type(value).__name__}")


def canonical_json(fields: Mapping[str, Any]) -> str:
    """The one JSON text of `fields` that is hashed: sorted keys, no spaces, paths as strings."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_json_default)


def fingerprint(fields: Mapping[str, Any], length: int | None = None) -> str:
    """Hex sha256 of :func:`canonical_json` of `fields`; `length` keeps a prefix (folder names)."""
    digest = hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()
    return digest[:length] if length else digest


def run_fingerprint(fields: Mapping[str, Any], length: int | None = None) -> str:
    """The fingerprint :func:`claim_run_folder` records: `fields` plus the nara version."""
    return fingerprint(_with_version(fields), length)


def _with_version(fields: Mapping[str, Any]) -> dict[str, Any]:
    from nara import __version__

    return {**fields, "nara_version": __version__}


class RunLock:
    """Exclusive lock on an output folder for the duration of a ``with`` block.

    Takes a non-blocking ``flock`` on ``<folder>/.nara.lock`` (creating the folder), so a second
    run into the same folder fails at once instead of interleaving its files. The kernel releases
    the lock when the holder exits or dies, so a killed run never leaves the folder locked.

    Raises:
        RunFolderError: another process holds the lock (the message gives its pid).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise RunFolderError(f"output folder {self.folder} is a file; pass a folder path")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(
                f"another nara run is writing to {self.folder} (pid {holder}); "
                "use a different output folder or wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def differing_fields(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"name: old (saved) vs new (now)"`` for each differing field, dotted into sub-objects
    that both sides have (a sub-object only one side has is one entry)."""
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differing_fields(a, b, f"{prefix}{key}.")
        elif _show(a) != _show(b):
            out.append(f"{prefix}{key}: {_show(a)} (saved) vs {_show(b)} (now)")
    return out


_ABSENT = object()


def _show(value: Any, width: int = 80) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=_json_default)
    return text if len(text) <= width else text[: width - 3] + "..."


def _outputs_present(folder: Path, outputs: Iterable[str]) -> list[Path]:
    return sorted({p for pattern in outputs for p in folder.glob(pattern)})


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def read_run(folder: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` record of `folder` (None if absent).

    Raises:
        RunFolderError: the file is not a run record (damaged or not nara's).
    """
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
            raise ValueError("no 'fields' object")
    except (ValueError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path} is not a valid nara run record ({err})") from None
    return record


def claim_run_folder(
    folder: str | Path,
    fields: Mapping[str, Any],
    *,
    kind: str,
    outputs: Iterable[str],
    overwrite: bool = False,
    resume: bool = True,
) -> bool:
    """Make `folder` the home of the run described by `fields`; True if it continues that run.

    Hold a :class:`RunLock` on `folder` while calling this and while writing outputs.

    Args:
        folder: the output folder (created if missing).
        fields: JSON values that decide the run's results; the nara version is added.
        kind: "eval", "demo" or "train" (stored; also picks the flag names in messages).
        outputs: glob patterns, relative to `folder`, of everything this kind of run writes. A
            folder "holds a run" only if one of them matches; ``overwrite`` deletes exactly those
            (and ``run.json``), never other files the user keeps there.
        overwrite: replace whatever run the folder holds.
        resume: continue a run with the same fingerprint (False: such a folder is refused too).

    Returns:
        True when the folder holds outputs of this same run, to be continued; False when the run
        starts afresh (new folder, empty folder, or after ``overwrite``).

    Raises:
        RunFolderError: the folder holds outputs of another run (each differing field is
            named), of an older nara without ``run.json``, or of this run while ``resume`` is
            False; or its ``run.json`` is damaged.
    """
    folder = Path(folder)
    other, replace, cont = _HINTS.get(kind, ("a new output folder", "overwrite", None))
    fields = _with_version(fields)
    digest = fingerprint(fields)
    outputs = list(outputs)
    present = _outputs_present(folder, outputs)
    ways_out = f"use {other}, or {replace} to replace it"
    if overwrite:
        _remove(present)
        present = []
    elif present:
        try:
            record = read_run(folder)
        except RunFolderError as err:
            raise RunFolderError(f"{err}; {ways_out}") from None
        if record is None:
            names = ", ".join(p.name for p in present[:3])
            raise RunFolderError(
                f"{folder} holds results without a run record ({names}; from an older nara "
                f"or another tool), so they cannot be checked against this run; {ways_out}"
            )
        if record.get("kind") != kind or record.get("fingerprint") != digest:
            diffs = differing_fields(record["fields"], fields)
            if record.get("kind") != kind:
                diffs.insert(0, f"kind: {record.get('kind')!r} (saved) vs {kind!r} (now)")
            raise RunFolderError(
                f"{folder} holds a different {record.get('kind', '')} run "
                f"({'; '.join(diffs) or 'fingerprint differs'}); {ways_out}"
            )
        if not resume:
            hint = f"continue it with {cont}, " if cont else ""
            raise RunFolderError(
                f"{folder} already holds this run (started {record.get('created')}); "
                f"{hint}use {other}, or {replace} to start it over"
            )
        return True
    _write_record(folder, kind, fields, digest)
    return False


def _write_record(folder: Path, kind: str, fields: Mapping[str, Any], digest: str) -> None:
    record = {
        "kind": kind,
        "fingerprint": digest,
        "nara_version": fields["nara_version"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fields": dict(fields),
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, folder / RUN_FILE)
