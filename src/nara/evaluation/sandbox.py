"""Run untrusted generated code (HumanEval / MBPP completions plus their tests) in a sandbox.

Generated code is hostile until proven otherwise: it may loop forever, fork, eat memory, write
files, open sockets or print megabytes. Each program runs in its own subprocess with, in layers:

- **namespaces** (``unshare`` from util-linux, when it works on this machine): a new user
  namespace (the program is "root" only inside it), a new **network** namespace (no interface but
  a down loopback: every connection fails), a new **PID** namespace (when its first process exits
  the kernel kills every process left in it, so nothing survives) and a new **mount** namespace
  where fresh tmpfs are mounted over /tmp, /var/tmp and /dev/shm (writes to ``/tmp/x`` land in a
  private tmpfs that vanishes), after which all capabilities are dropped.
- **an unprivileged user**: when the evaluator runs as root, the program runs as a dedicated
  uid (``sandbox_uid``, default 65534 "nobody"), so it cannot write root-owned files such as the
  caller's working directory or the project.
- **resource limits** set before the program starts: address space (RLIMIT_AS), CPU seconds
  (RLIMIT_CPU), file size (RLIMIT_FSIZE), no core files, and a process limit (RLIMIT_NPROC).
  RLIMIT_NPROC is per user and is ignored for root; inside a fresh user namespace Linux counts it
  per namespace, so each sandbox gets its own budget and a fork bomb stays contained.
- **a session of its own**, killed as a whole (``os.killpg``) when the program ends or its wall
  time runs out.
- a throwaway working directory that is also HOME and TMPDIR, a clean environment (none of the
  caller's variables), stdin closed, stdout/stderr read with a byte cap.

Without working namespaces (``isolation()`` says which layers are active) sockets are blocked by
replacing ``socket.socket`` in the child before the program runs, and the process limit is only
applied when the evaluator is root (then the dedicated uid makes it per-sandbox).

The verdict comes from a pipe written by the bootstrap after the program and its tests ran to the
end, so an early ``exit(0)`` or ``os._exit(0)`` is a failure, not a pass. This guards against
accidents, not against code written to forge the verdict.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timed_out", "crashed"]

_BOOT_SOURCE = (Path(__file__).with_name("_sandbox_boot.py")).read_text(encoding="utf-8")
_NAMESPACES = ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"]
_NAMESPACES += ["--mount", "--mount-proc"]


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program.

    timeout: wall-clock seconds (the CPU limit is derived from it).
    memory_mb: address-space limit per process.
    max_processes: processes the program may have at once (RLIMIT_NPROC).
    max_output_bytes: stdout/stderr bytes kept per stream; the rest is read and dropped.
    max_file_mb: largest file the program may write.
    sandbox_uid: uid the program runs as when the evaluator is root.
    """

    timeout: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64_000
    max_file_mb: int = 16
    sandbox_uid: int = 65534

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.memory_mb < 64 or self.max_processes < 2:
            raise ValueError(
                f"invalid SandboxLimits {self}: need timeout > 0, memory_mb >= 64 (Python itself "
                "needs tens of MB) and max_processes >= 2"
            )


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one program: status, exit code, captured (capped) output, time and details."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    details: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _works(argv: list[str], uid: int) -> bool:
    try:
        probe = subprocess.run(
            [*argv, "-I", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            **_user_kwargs(uid),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@functools.cache
def isolation(sandbox_uid: int = 65534) -> dict[str, bool | str]:
    """Which sandbox layers work on this machine, probed once by running tiny programs.

    Also picks the interpreter: the evaluator's own Python when the sandbox uid may run it, else
    the system ``python3`` (the programs need only the standard library).

    Raises:
        RuntimeError: no Python interpreter is executable by the sandbox uid.
    """
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]
    python = next((c for c in candidates if c and _works([c], sandbox_uid)), None)
    if python is None:
        raise RuntimeError(
            f"no Python interpreter among {candidates} can be run by uid {sandbox_uid}; make one "
            "readable and executable by that uid or set SandboxLimits(sandbox_uid=...)"
        )
    unshare = shutil.which("unshare")
    namespaces = bool(unshare) and _works([unshare, *_NAMESPACES, python], sandbox_uid)
    root = os.geteuid() == 0
    return {
        "python": python,
        "namespaces": namespaces,
        "network": "namespace" if namespaces else "socket blocked in-process",
        "private_tmp": namespaces,
        "dedicated_uid": root,
        "process_limit": namespaces or root,
    }


def _user_kwargs(uid: int) -> dict[str, int]:
    """Popen arguments that drop to the sandbox uid when we are root (no-op otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


class _CappedReader(threading.Thread):
    """Drains a pipe to EOF, keeping at most `cap` bytes, so a flood can neither block nor bloat."""

    def __init__(self, stream, cap: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.chunks: list[bytes] = []
        self.kept = 0
        self.truncated = False

    def run(self) -> None:
        while chunk := self.stream.read1(65536):
            room = self.cap - self.kept
            if room > 0:
                self.chunks.append(chunk[:room])
                self.kept += min(room, len(chunk))
            self.truncated |= len(chunk) > room

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


def run_program(source: str, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run one Python program in the sandbox and classify the outcome.

    passed: it ran to the end without an exception; failed: it raised (an assertion, an error,
    exit()); timed_out: wall time or CPU limit reached; crashed: killed by a signal or the sandbox
    itself failed (details say why).
    """
    limits = limits or SandboxLimits()
    iso = isolation(limits.sandbox_uid)
    workdir = Path(tempfile.mkdtemp(prefix="nara-sandbox-"))
    try:
        return _run_in(workdir, source, limits, iso)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(workdir: Path, source: str, limits: SandboxLimits, iso: dict) -> ExecutionResult:
    program = workdir / "program.py"
    program.write_text(source, encoding="utf-8")
    if iso["dedicated_uid"]:
        os.chown(workdir, limits.sandbox_uid, limits.sandbox_uid)
    read_fd, write_fd = os.pipe()
    nproc = limits.max_processes if iso["process_limit"] else 0
    boot_args = [str(program), str(write_fd), str(limits.memory_mb << 20)]
    boot_args += [str(int(limits.timeout) + 1), str(nproc), str(limits.max_file_mb << 20)]
    boot_args += ["1" if iso["private_tmp"] else "0", "0" if iso["namespaces"] else "1"]
    prefix = [shutil.which("unshare") or "unshare", *_NAMESPACES] if iso["namespaces"] else []
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*prefix, iso["python"], "-I", "-c", _BOOT_SOURCE, *boot_args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            start_new_session=True,
            **_user_kwargs(limits.sandbox_uid),
        )
    except OSError as err:
        os.close(read_fd)
        return ExecutionResult("crashed", None, "", "", 0.0, f"could not start sandbox: {err}")
    finally:
        os.close(write_fd)
    readers = [_CappedReader(s, limits.max_output_bytes) for s in (proc.stdout, proc.stderr)]
    verdict_reader = _CappedReader(os.fdopen(read_fd, "rb"), 4096)
    for reader in (*readers, verdict_reader):
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=limits.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
    for reader in (*readers, verdict_reader):
        reader.join(timeout=5)
    duration = time.monotonic() - start
    out, err = readers[0].text(), readers[1].text()
    status, details = _classify(proc.returncode, verdict_reader.text(), timed_out, limits)
    if any(r.truncated for r in readers):
        details += f" (output truncated to {limits.max_output_bytes} bytes per stream)"
    return ExecutionResult(status, proc.returncode, out, err, duration, details.strip())


def _kill_group(pgid: int) -> None:
    """SIGKILL the program's whole session (with namespaces, its PID namespace dies with it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _classify(
    returncode: int, verdict: str, timed_out: bool, limits: SandboxLimits
) -> tuple[Status, str]:
    status, _, details = verdict.partition("\n")
    if timed_out:
        return "timed_out", f"wall time limit of {limits.timeout:g}s reached"
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or "SIGXCPU" in details:
        return "timed_out", "CPU time limit reached"
    if status in ("passed", "failed"):
        return status, details  # type: ignore[return-value]
    if returncode == 0:
        return "failed", "program exited before its tests finished (os._exit?)"
    signame = _signal_name(returncode)
    if signame == "SIGKILL":
        return "crashed", "killed (SIGKILL): CPU or memory limit, or the process limit"
    return "crashed", f"exit status {returncode}" + (f" ({signame})" if signame else "")


def _signal_name(returncode: int) -> str:
    """unshare reports a child killed by signal S as 128+S; Popen as -S."""
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        return signal.Signals(number).name if number else ""
    except ValueError:
        return ""


def run_programs(
    sources: Sequence[str],
    limits: SandboxLimits | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecutionResult]:
    """Run many programs in parallel (threads, each waiting on its own subprocess), in order.

    workers defaults to the number of CPU cores.
    """
    workers = workers or os.cpu_count() or 1
    isolation((limits or SandboxLimits()).sandbox_uid)  # probe once before the threads start
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = pool.map(lambda s: run_program(s, limits), sources)
        if progress:
            from tqdm import tqdm

            futures = tqdm(futures, total=len(sources), desc="sandbox", leave=False)
        return list(futures)
