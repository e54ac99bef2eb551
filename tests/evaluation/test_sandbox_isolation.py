"""Full isolation against hostile programs: what they can see, reach, fill and leave behind.

Each program reports what it managed to do on stdout; the tests check the report and the host.
Skipped where full isolation (user namespaces) is not available; the reduced levels are tested
in test_sandbox_levels.py.
"""

import contextlib
import ctypes
import os
import socket
import tempfile
from pathlib import Path

import pytest

import nara
from nara.evaluation import data_dir
from nara.evaluation.sandbox import SandboxLimits, isolation, run_program

pytestmark = pytest.mark.skipif(isolation()["level"] != "full", reason="no full isolation here")
LIMITS = SandboxLimits(timeout=10)


def report(source: str, limits: SandboxLimits = LIMITS) -> str:
    """Run `source`, which prints one line starting with REPORT; return the rest of that line."""
    result = run_program(source, limits)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.status == "passed" and lines, result
    return lines[-1].removeprefix("REPORT ")


def host_secrets() -> list[str]:
    """Files a program must not read: project sources, gold solutions, the user's home."""
    paths = [Path(nara.__file__), Path(nara.__file__).parents[2] / "pyproject.toml"]
    with contextlib.suppress(FileNotFoundError):
        paths.append(data_dir() / "code" / "humaneval.jsonl")
    paths += [Path.home() / ".bashrc", Path.home() / ".profile", Path("/etc/passwd")]
    return [str(p) for p in paths if p.exists()]


def test_filesystem_view_is_minimal():
    secrets = host_secrets()
    assert secrets  # the test checks something on this machine
    code = f"""
import os
readable = []
for path in {secrets!r}:
    try:
        open(path, "rb").close()
        readable.append(path)
    except OSError:
        pass
print("REPORT", repr((sorted(os.listdir("/")), readable, os.getcwd())))
"""
    top, readable, cwd = eval(report(code))  # noqa: S307 - our own program's repr output
    assert readable == [] and cwd == "/tmp"
    assert set(top) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "dev", "proc"} | {
        "tmp",
        "var",
        "root",
        "opt",
        "home",
    }
    assert not {"work", "etc", "run", "srv", "mnt"} & set(top)


def test_only_the_private_tmp_is_writable():
    code = """
written = []
for path in ["/x", "/usr/x", "/dev/x", "/proc/x", "/var/lock/x", "/run/lock/x", "/tmp/x",
             "/dev/shm/x"]:
    try:
        open(path, "w").write("x")
        written.append(path)
    except OSError:
        pass
print("REPORT", written)
"""
    assert eval(report(code)) == ["/tmp/x", "/dev/shm/x"]  # noqa: S307
    assert not Path("/run/lock/x").exists() and not Path("/tmp/x").exists()


def test_files_do_not_persist_between_programs():
    report("open('/tmp/left-behind', 'w').write('x')\nprint('REPORT done')")
    assert report("import os\nprint('REPORT', os.path.exists('/tmp/left-behind'))") == "False"


def test_sysv_shared_memory_is_not_the_hosts():
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x4E415241 + os.getpid() % 1000
    shmid = libc.shmget(key, 4096, 0o1000 | 0o666)  # IPC_CREAT
    assert shmid >= 0
    try:
        code = f"import ctypes\nlibc = ctypes.CDLL(None)\nprint('REPORT', libc.shmget({key}, 0, 0))"
        assert report(code) == "-1"
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_unix_sockets_of_the_host_are_unreachable(tmp_path):
    path = str(tmp_path / "host.sock")
    abstract = f"\0nara-test-{os.getpid()}"
    servers = []
    for address in (path, abstract):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address)
        server.listen(1)
        servers.append(server)
    try:
        code = f"""
import socket
reached = []
for address in {[path, abstract]!r}:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(address)
        reached.append(address)
    except OSError:
        pass
print("REPORT", reached)
"""
        assert report(code) == "[]"
    finally:
        for server in servers:
            server.close()


def test_network_has_no_route_and_loopback_is_private():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = f"""
import socket
reached = []
for address in [("127.0.0.1", {port}), ("1.1.1.1", 80)]:
    try:
        socket.create_connection(address, timeout=2).close()
        reached.append(address)
    except OSError:
        pass
print("REPORT", reached)
"""
        assert report(code) == "[]"
    finally:
        server.close()


def test_disk_is_capped_and_not_the_hosts():
    limits = SandboxLimits(timeout=10, max_disk_mb=8, max_file_mb=64)
    code = """
written = 0
for path in ["/tmp/a", "/dev/shm/b"]:
    try:
        with open(path, "wb") as f:
            while True:
                f.write(b"x" * 2**20)
                f.flush()
                written += 2**20
    except OSError:
        pass
print("REPORT", written)
"""
    written = int(report(code, limits))
    assert 2**20 <= written <= 8 * 2**20


def test_descriptors_are_capped():
    limits = SandboxLimits(timeout=10, max_open_files=32)
    code = """
handles = []
try:
    while True:
        handles.append(open("/dev/null"))
except OSError:
    pass
print("REPORT", len(handles))
"""
    assert int(report(code, limits)) < 32


def test_deep_tree_and_lone_surrogate_leave_nothing_behind():
    before = set(Path(tempfile.gettempdir()).glob("nara-sandbox-*"))
    deep = "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
    assert run_program(deep + "print('deep')", LIMITS).status == "passed"
    bad = run_program("x = '\ud800'\n", LIMITS)
    assert bad.status == "failed" and "surrogate" in bad.details
    assert set(Path(tempfile.gettempdir()).glob("nara-sandbox-*")) == before
