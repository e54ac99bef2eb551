"""Run untrusted generated code (HumanEval / MBPP solutions) against trusted tests in a sandbox.

Generated code is hostile until proven otherwise: it may loop forever, fork, eat memory or disk,
write files, open sockets, print megabytes, or try to forge its own verdict. docs/sandbox.md
states the threat model; in short, each test runs as:

- **a supervisor** (this module, outside the sandbox) that starts one sandbox per test, caps its
  output and wall time, kills it as a whole and reads the verdict;
- **a judge** (``_sandbox_boot.py``, inside): builds the sandbox, then runs the trusted tests in
  an interpreter that never executes the solution's code;
- **a solution process** forked by the judge: runs the untrusted code and answers the tests'
  calls with plain data. It holds no descriptor to the supervisor's verdict pipe and cannot
  ptrace, signal-kill or read the memory of the judge, so the verdict is not its to write.

Isolation levels (:func:`isolation_report`): ``full`` uses fresh user, network, PID, IPC, UTS and
mount namespaces with a minimal root (read-only system directories and interpreter, a size-capped
private /tmp as the only writable place, nothing of the project, the data or any home), no
capabilities, resource limits and, when the evaluator is root, an unprivileged uid. Without user
namespaces the level is ``reduced`` when Landlock confines the program to the system
directories and its own folder, or a dedicated uid (root evaluator) protects your files; a
seccomp filter refuses network sockets and signals to the judge where the kernel allows it.
Otherwise it is ``none`` (the program runs as you). ``SandboxLimits(mode="strict")`` refuses
both; ``"auto"`` warns once per process.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import marshal
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timed_out", "crashed"]

_BOOT_SOURCE = (Path(__file__).with_name("_sandbox_boot.py")).read_text(encoding="utf-8")
_NAMESPACES = ["--user", "--map-root-user", "--net", "--pid", "--ipc", "--uts", "--fork"]
_NAMESPACES += ["--kill-child", "--mount", "--mount-proc"]
_STATUSES = ("passed", "failed", "timed_out", "crashed")
_NETWORK = {
    "namespace": "namespace",
    "seccomp": "seccomp filter: unix sockets only",
    "in-process": "socket blocked in-process (bypassable)",
}
_GRACE = 5.0  # seconds the supervisor waits past the judge's own deadline (interpreter start)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program.

    timeout: wall-clock seconds for the solution and its tests (the CPU limit derives from it).
    memory_mb: address-space limit per process.
    max_processes: processes the program may have at once (RLIMIT_NPROC).
    max_output_bytes: stdout/stderr bytes kept per stream; the rest is read and dropped.
    max_file_mb: largest file the program may write.
    max_disk_mb: size of the private /tmp, the only writable place (full isolation).
    max_open_files: descriptors per process (RLIMIT_NOFILE; bounds sockets and their buffers).
    sandbox_uid: uid the program runs as when the evaluator is root.
    mode: "auto" runs with the best isolation available and warns once when it is not full;
        "strict" refuses to run code without full isolation.
    """

    timeout: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64_000
    max_file_mb: int = 16
    max_disk_mb: int = 64
    max_open_files: int = 64
    sandbox_uid: int = 65534
    mode: Literal["auto", "strict"] = "auto"

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.memory_mb < 64 or self.max_processes < 2:
            raise ValueError(
                f"invalid SandboxLimits {self}: need timeout > 0, memory_mb >= 64 (Python itself "
                "needs tens of MB) and max_processes >= 2"
            )
        if self.max_disk_mb < 1 or self.max_file_mb < 1 or self.max_open_files < 16:
            raise ValueError(
                f"invalid SandboxLimits {self}: need max_disk_mb >= 1, max_file_mb >= 1 and "
                "max_open_files >= 16 (the interpreter opens a few itself)"
            )
        if self.mode not in ("auto", "strict"):
            raise ValueError(f"invalid sandbox mode {self.mode!r}: use 'auto' or 'strict'")


@dataclass(frozen=True)
class CodeTest:
    """An untrusted solution and the trusted tests that judge it, kept apart.

    solution: the program under test (HumanEval: prompt + completion; MBPP: the code).
    tests: trusted test code, run by the judge; it sees the solution only through `names`.
    context: trusted code the judge runs before the tests (HumanEval: the prompt, whose helper
        functions the tests call).
    names: the solution's names the tests use (None: every free name of the tests that is not
        a builtin or a standard-library module; those modules are imported by the judge itself).
    """

    solution: str
    tests: str = ""
    context: str = ""
    names: tuple[str, ...] | None = None


class SandboxUnavailable(RuntimeError):
    """Strict mode was asked for and full isolation is not available on this machine."""


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


def _user_kwargs(uid: int) -> dict[str, int]:
    """Popen arguments that drop to the sandbox uid when we are root (no-op otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def _runnable(python: str, uid: int) -> bool:
    try:
        probe = subprocess.run(
            [python, "-I", "-S", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            **_user_kwargs(uid),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _probe_full(python: str, uid: int) -> str:
    """Run a real test with full isolation; returns '' when it works, else why it does not."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    probe = CodeTest("def f(x):\n    return [x, 2.5]\n", "assert f(1) == [1, 2.5]\n")
    limits = SandboxLimits(timeout=20, sandbox_uid=uid)
    result = _execute(probe, limits, python, network="namespace")
    if result.passed:
        return ""
    why = (result.details or result.stderr).strip()[-300:]
    return f"the namespaces and minimal root of full isolation fail here ({why})"


def _fallbacks(python: str, uid: int) -> tuple[str, bool]:
    """Without namespaces: (network mode, Landlock works?), each probed by a real test."""
    limits = SandboxLimits(timeout=20, sandbox_uid=uid)
    solution = "import _socket\ndef f(family):\n    try:\n        _socket.socket(family, 1)\n"
    solution += "    except OSError:\n        return 'refused'\n    return 'open'\n"
    probe = CodeTest(solution, "assert f(2) == 'refused' and f(1) == 'open'\n")
    seccomp = _execute(probe, limits, python, network="seccomp").passed
    network = "seccomp" if seccomp else "in-process"
    solution = "import os, sys\ndef f():\n    open(sys.executable, 'rb').close()\n"
    solution += "    open('mine', 'w').write('x')\n    try:\n        os.listdir('/')\n"
    solution += "    except PermissionError:\n        return 'hidden'\n    return 'visible'\n"
    probe = CodeTest(solution, "assert f() == 'hidden'\n")
    landlock = _execute(probe, limits, python, network=network, landlock=True).passed
    return network, landlock


@functools.cache
def isolation(sandbox_uid: int = 65534) -> dict[str, bool | str]:
    """Which isolation this machine gives sandboxed code, probed once by running tiny tests.

    Keys: level ("full": namespaces and a minimal root; "reduced": no namespaces, but your files
    are protected, by Landlock or a dedicated uid; "none": the program runs as you), reason (why
    it is not full), python (the interpreter used: the evaluator's base Python when the sandbox
    uid may run it, else the system ``python3``; programs get only the standard library), and
    the layers: namespaces, minimal_root, landlock, network (in words) and network_mode
    ("namespace"; "seccomp": a filter refuses every socket but unix ones; "in-process":
    ``socket.socket`` replaced, bypassable), private_tmp, dedicated_uid, process_limit.

    Raises:
        RuntimeError: no Python interpreter is executable by the sandbox uid.
    """
    candidates = [getattr(sys, "_base_executable", ""), sys.executable, "/usr/bin/python3"]
    python = next((c for c in candidates if c and _runnable(c, sandbox_uid)), None)
    if python is None:
        raise RuntimeError(
            f"no Python interpreter among {candidates} can be run by uid {sandbox_uid}; make one "
            "readable and executable by that uid or set SandboxLimits(sandbox_uid=...)"
        )
    reason = _probe_full(python, sandbox_uid)
    root = os.geteuid() == 0
    full = not reason
    network, landlock = ("namespace", False) if full else _fallbacks(python, sandbox_uid)
    return {
        "level": "full" if full else "reduced" if root or landlock else "none",
        "reason": reason,
        "python": python,
        "namespaces": full,
        "minimal_root": full,
        "landlock": landlock,
        "network": _NETWORK[network],
        "network_mode": network,
        "private_tmp": full,
        "dedicated_uid": root,
        "process_limit": full or root,
    }


def isolation_report(sandbox_uid: int = 65534) -> dict[str, str]:
    """The isolation level as a small JSON-ready dict, for run summaries (see :func:`isolation`)."""
    iso = isolation(sandbox_uid)
    uid = "unprivileged uid" if iso["dedicated_uid"] else "your uid"
    files = "minimal root" if iso["minimal_root"] else "host filesystem"
    files += ", Landlock: system directories read-only, own folder" if iso["landlock"] else ""
    files += f", {uid}" if iso["dedicated_uid"] or not iso["minimal_root"] else ""
    return {
        "level": str(iso["level"]),
        "filesystem": files,
        "network": str(iso["network"]),
        "processes": "PID namespace"
        if iso["namespaces"]
        else "killed by the judge (subreaper), which the program cannot signal"
        if iso["network_mode"] == "seccomp"
        else "killed by the judge (subreaper)",
        "reason": str(iso["reason"]),
    }


_warned: set[str] = set()


def check_isolation(limits: SandboxLimits | None = None) -> dict[str, str]:
    """Apply the sandbox mode before any code runs; returns :func:`isolation_report` + the mode.

    Below full isolation, "strict" raises and "auto" warns (once per process and level). Call it
    before expensive work (loading a model) so a strict run is refused at once.

    Raises:
        SandboxUnavailable: ``limits.mode == "strict"`` and isolation is not full.
    """
    limits = limits or SandboxLimits()
    iso = isolation(limits.sandbox_uid)
    report = {**isolation_report(limits.sandbox_uid), "mode": limits.mode}
    if iso["level"] == "full":
        return report
    what = (
        "Landlock hides the host's files from the program"
        if iso["landlock"]
        else "your files are protected by a separate uid, but the program can read the host's "
        "world-readable files"
        if iso["dedicated_uid"]
        else "the program runs as YOU: it can read and change your files"
    )
    what += f"; network: {iso['network']}"
    message = (
        f"nara sandbox: REDUCED ISOLATION (level {iso['level']!r}): {iso['reason']}; {what}. "
        "Enable unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
        "kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_unprivileged_userns=0, "
        "or a container seccomp profile that allows unshare), or evaluate code only from "
        "models you trust"
    )
    if limits.mode == "strict":
        raise SandboxUnavailable(f"{message}. Refusing to run code in strict mode.")
    if iso["level"] not in _warned:
        _warned.add(str(iso["level"]))
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return report


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


def run_test(test: CodeTest, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run one solution against its tests in the sandbox and classify the outcome.

    passed: the solution loaded and every test ran to the end without an exception; failed: the
    solution raised or exited while loading, or a test raised (an assertion, an error, a value
    that is not plain data); timed_out: wall time or CPU limit reached; crashed: the solution was
    killed by a signal, or the sandbox itself failed (details say why).

    Raises:
        SandboxUnavailable: ``limits.mode == "strict"`` and isolation is not full.
    """
    limits = limits or SandboxLimits()
    check_isolation(limits)
    iso = isolation(limits.sandbox_uid)
    network, landlock = str(iso["network_mode"]), bool(iso["landlock"])
    return _execute(test, limits, str(iso["python"]), network=network, landlock=landlock)


def run_program(source: str, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run one stand-alone program: passed when it ran to the end without an exception.

    With no separate tests the verdict is the program's own claim (code that wants to can make
    it); use :func:`run_test` to judge a solution.
    """
    return run_test(CodeTest(source), limits)


def _names(test: CodeTest) -> tuple[list[str], list[str]]:
    """(the solution's names the tests use, standard-library modules the judge imports)."""
    try:
        tree = ast.parse(test.tests)
        bound = _bound_names(tree) | _bound_names(ast.parse(test.context))
    except SyntaxError:
        return list(test.names or ()), []  # the judge reports the syntax error as the outcome
    loads = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    free = loads - bound - set(dir(builtins))
    modules = sorted(n for n in free if n in sys.stdlib_module_names)
    names = list(test.names) if test.names is not None else sorted(free - set(modules))
    return names, [m for m in modules if m not in names]


def _bound_names(tree: ast.AST) -> set[str]:
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound


def _job(test: CodeTest, limits: SandboxLimits, network: str, landlock: bool) -> bytes:
    """The judge's instructions on its stdin, in two length-prefixed parts: the solution, context
    and limits, then the tests, which the judge reads only after forking the solution process.
    """
    names, modules = _names(test)
    full = network == "namespace"
    job = {
        "solution": test.solution,
        "context": test.context,
        "modules": modules,
        "memory": limits.memory_mb << 20,
        "cpu": int(limits.timeout) + 1,
        "fsize": limits.max_file_mb << 20,
        "nofile": limits.max_open_files,
        "nproc": limits.max_processes if full or os.geteuid() == 0 else 0,
        "disk": limits.max_disk_mb << 20,
        "inodes": 4096 + 64 * limits.max_disk_mb,
        "timeout": limits.timeout,
        "root": full,
        "network": network,
        "landlock": landlock,
    }
    parts = [job, {"tests": test.tests, "names": names}]
    # marshal: plain types only; a lone surrogate travels, and compile() rejects it
    return b"".join(b"%d\n%s" % (len(p), p) for p in (marshal.dumps(x, 4) for x in parts))


def _execute(
    test: CodeTest, limits: SandboxLimits, python: str, *, network: str, landlock: bool = False
) -> ExecutionResult:
    """Start one sandbox: in namespaces (network "namespace"), else in a host folder removed after."""
    workdir = None if network == "namespace" else Path(tempfile.mkdtemp(prefix="nara-sandbox-"))
    try:
        if workdir is not None and os.geteuid() == 0:
            os.chown(workdir, limits.sandbox_uid, limits.sandbox_uid)
        return _supervise(limits, python, workdir, _job(test, limits, network, landlock))
    finally:
        if workdir is not None:
            _remove_tree(workdir)


def _supervise(
    limits: SandboxLimits, python: str, workdir: Path | None, job: bytes
) -> ExecutionResult:
    read_fd, write_fd = os.pipe()
    prefix = [] if workdir is not None else [shutil.which("unshare") or "unshare", *_NAMESPACES]
    home = str(workdir or "/tmp")
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*prefix, python, "-I", "-S", "-c", _BOOT_SOURCE, str(write_fd)],
            cwd=workdir or "/",
            env=env,
            stdin=subprocess.PIPE,
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
    verdict_reader = _CappedReader(os.fdopen(read_fd, "rb"), 8192)
    for reader in (*readers, verdict_reader):
        reader.start()
    with contextlib.suppress(BrokenPipeError):  # the judge reads the job before anything else
        proc.stdin.write(job)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    timed_out = False
    try:
        proc.wait(timeout=limits.timeout + _GRACE)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
    for reader in (*readers, verdict_reader):
        reader.join(timeout=5)
        if not reader.is_alive():  # a reader still blocked holds the stream's lock
            reader.stream.close()
    out, err = readers[0].text(), readers[1].text()
    status, details = _classify(proc.returncode, verdict_reader.text(), timed_out, limits, err)
    if any(r.truncated for r in readers):
        details += f" (output truncated to {limits.max_output_bytes} bytes per stream)"
    duration = time.monotonic() - start
    return ExecutionResult(status, proc.returncode, out, err, duration, details.strip())


def _kill_group(pgid: int) -> None:
    """SIGKILL the sandbox's session (with namespaces, its PID namespace dies with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _classify(
    returncode: int, verdict: str, timed_out: bool, limits: SandboxLimits, stderr: str
) -> tuple[Status, str]:
    """The judge's verdict; without one (the sandbox died), why, from the exit status."""
    status, _, details = verdict.partition("\n")
    if timed_out:
        return "timed_out", f"wall time limit of {limits.timeout:g}s reached"
    if status in _STATUSES:
        return status, details  # type: ignore[return-value]
    signame = _signal_name(returncode)
    tail = stderr.strip().splitlines()[-1:] or [""]
    return "crashed", f"the sandbox ended without a verdict: exit status {returncode}" + (
        f" ({signame})" if signame else ""
    ) + (f": {tail[0][:300]}" if tail[0] else "")


def _signal_name(returncode: int) -> str:
    """unshare reports a child killed by signal S as 128+S; Popen as -S."""
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        return signal.Signals(number).name if number else ""
    except ValueError:
        return ""


def _remove_tree(path: Path) -> None:
    """Remove a sandbox folder whatever the program left in it (deep trees, no permissions)."""
    try:
        shutil.rmtree(path)
        return
    except (OSError, RecursionError):
        pass
    for command in (["chmod", "-R", "u+rwx", "--", str(path)], ["rm", "-rf", "--", str(path)]):
        with contextlib.suppress(OSError):
            subprocess.run(command, capture_output=True, check=False, timeout=120)
    if path.exists():
        warnings.warn(
            f"could not remove the sandbox folder {path}; delete it by hand", stacklevel=2
        )


def run_tests(
    tests: Sequence[CodeTest],
    limits: SandboxLimits | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecutionResult]:
    """Run many tests in parallel (threads, each waiting on its own sandbox), in order.

    workers defaults to the number of CPU cores.

    Raises:
        SandboxUnavailable: ``limits.mode == "strict"`` and isolation is not full.
    """
    limits = limits or SandboxLimits()
    workers = workers or os.cpu_count() or 1
    check_isolation(limits)  # probe (and warn or refuse) once before the threads start
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = pool.map(lambda t: run_test(t, limits), tests)
        if progress:
            from tqdm import tqdm

            futures = tqdm(futures, total=len(tests), desc="sandbox", leave=False)
        return list(futures)


def run_programs(
    sources: Sequence[str],
    limits: SandboxLimits | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecutionResult]:
    """:func:`run_program` for many stand-alone programs, in parallel, in order."""
    tests = [CodeTest(s) for s in sources]
    return run_tests(tests, limits, workers=workers, progress=progress)
