"""Bootstrap that runs *inside* the sandbox, before the untrusted program (see sandbox.py).

It is executed as a standalone script (``python -I _sandbox_boot.py ARGS``), never imported by the
evaluator, and depends only on the standard library. Order matters: read the program, make /tmp
private, set resource limits, drop capabilities, block sockets if there is no network namespace,
then run the program with ``exec`` and report the outcome on a pipe the program does not own.

argv: program_file result_fd memory_bytes cpu_seconds nproc file_bytes private_tmp block_sockets
"""

import ctypes
import os
import resource
import socket
import sys
import traceback

_MS_NOSUID, _MS_NODEV, _MS_BIND = 2, 4, 4096
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECUREBITS = 38, 28
_SECBIT_NOROOT_AND_LOCK = 0x3  # SECBIT_NOROOT | SECBIT_NOROOT_LOCKED: exec as uid 0 grants no caps


def _private_tmp(libc: ctypes.CDLL) -> None:
    """Mount fresh tmpfs over /tmp, /var/tmp, /dev/shm; re-bind our working dir if it was under one."""
    workdir = os.getcwd()
    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        if not os.path.isdir(target):
            continue
        if libc.mount(b"tmpfs", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=64m"):
            raise OSError(ctypes.get_errno(), f"mount tmpfs on {target}")
    if not os.path.isdir(
        workdir
    ):  # the working dir is now hidden under a fresh tmpfs: bind it back
        os.makedirs(workdir)
        if libc.mount(b"/proc/self/cwd", workdir.encode(), None, _MS_BIND, None):
            raise OSError(ctypes.get_errno(), "bind working directory")
    os.chdir(workdir)


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    """Clear all capabilities (we are root of a user namespace) so the program cannot undo mounts."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    libc.prctl(_PR_SET_SECUREBITS, _SECBIT_NOROOT_AND_LOCK, 0, 0, 0)
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()):
        raise OSError(ctypes.get_errno(), "capset")
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _block_sockets() -> None:
    """Fallback when there is no network namespace: any socket creation raises."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the nara sandbox")

    socket.socket = refuse  # type: ignore[assignment,misc]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socketpair = refuse  # type: ignore[assignment]


def main() -> None:
    program_file, result_fd, memory, cpu, nproc, fsize, private_tmp, block = sys.argv[1:9]
    result = os.fdopen(int(result_fd), "w")
    with open(program_file, encoding="utf-8") as handle:
        source = handle.read()
    libc = ctypes.CDLL(None, use_errno=True)
    notes = []
    if private_tmp == "1":
        try:
            _private_tmp(libc)
            _drop_capabilities(libc)
        except OSError as err:
            notes.append(f"private /tmp unavailable: {err}")
    limits = [(resource.RLIMIT_AS, int(memory)), (resource.RLIMIT_CPU, int(cpu))]
    limits += [(resource.RLIMIT_FSIZE, int(fsize)), (resource.RLIMIT_CORE, 0)]
    if int(nproc) > 0:
        limits.append((resource.RLIMIT_NPROC, int(nproc)))
    for kind, value in limits:  # the CPU hard limit is one second later: SIGXCPU, then SIGKILL
        resource.setrlimit(kind, (value, value + (kind == resource.RLIMIT_CPU)))
    if block == "1":
        _block_sockets()
    sys.argv = ["program.py"]
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
    except SystemExit as err:  # exit(0) before the tests end must not count as a pass
        result.write(f"failed\nprogram called exit({err.code!r})\n" + "\n".join(notes))
    except BaseException as err:  # noqa: BLE001 - every failure of the program is an outcome
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        result.write(f"failed\n{detail[:2000]}\n" + "\n".join(notes))
    else:
        result.write("passed\n\n" + "\n".join(notes))
    for stream in (result, sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)  # skip interpreter teardown: nothing the program registered (atexit) runs after


if __name__ == "__main__":
    main()
