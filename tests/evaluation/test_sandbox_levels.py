"""Isolation levels: reduced paths forced on this machine, strict mode, and an ordinary user.

The probe for full isolation is replaced to force the fallbacks (as in a container without
``unshare``); an ordinary user is simulated with ``setpriv`` when the tests run as root.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from nara.cli import main
from nara.evaluation import data_dir, sandbox
from nara.evaluation.sandbox import (
    SandboxLimits,
    SandboxUnavailable,
    isolation,
    isolation_report,
    run_program,
)

sys.path.insert(0, str(Path(__file__).parent))
from sandbox_support import name_processes, survivors  # noqa: E402

LIMITS = SandboxLimits(timeout=10)
try:
    HAS_CODE_DATA = (data_dir() / "code" / "humaneval.jsonl").exists()
except FileNotFoundError:
    HAS_CODE_DATA = False
USER = 1000  # an ordinary uid, simulated with setpriv


@pytest.fixture
def no_namespaces(monkeypatch):
    """Make the full-isolation probe fail, as on a machine without user namespaces."""
    monkeypatch.setattr(sandbox, "_probe_full", lambda python, uid: "forced off by the test")
    monkeypatch.setattr(sandbox, "_warned", set())
    isolation.cache_clear()
    yield
    isolation.cache_clear()


def test_report_is_small_and_json_ready():
    report = isolation_report()
    assert set(report) == {"level", "filesystem", "network", "processes", "reason"}
    assert json.loads(json.dumps(report)) == report
    assert report["level"] in ("full", "reduced", "none")
    if report["level"] == "full":
        assert report["reason"] == "" and report["filesystem"].startswith("minimal root")


def expected_reduced_level() -> str:
    """Without namespaces: "reduced" when a dedicated uid or Landlock protects files."""
    return "reduced" if os.geteuid() == 0 or isolation()["landlock"] else "none"


def test_reduced_level_warns_once_and_strict_refuses(no_namespaces):
    assert isolation_report()["level"] == expected_reduced_level()
    assert "forced off by the test" in isolation_report()["reason"]
    with pytest.raises(SandboxUnavailable, match="strict mode"):
        run_program("pass", SandboxLimits(mode="strict"))
    with pytest.warns(RuntimeWarning, match="REDUCED ISOLATION"):
        assert run_program("assert 1 + 1 == 2", LIMITS).status == "passed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert run_program("assert 1 + 1 == 3", LIMITS).status == "failed"


def test_a_failing_probe_lowers_the_level_and_says_why(monkeypatch):
    """The real probe, with unshare made to fail (as under a seccomp profile that blocks it)."""
    monkeypatch.setattr(sandbox, "_NAMESPACES", [*sandbox._NAMESPACES, "--no-such-option"])
    isolation.cache_clear()
    try:
        report = isolation_report()
        assert report["level"] == expected_reduced_level()
        assert "full isolation fail" in report["reason"] and report["network"] != "namespace"
    finally:
        isolation.cache_clear()


@pytest.mark.filterwarnings("ignore:nara sandbox")
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="no seccomp table")
def test_reduced_level_refuses_network_sockets_even_through_ctypes(no_namespaces):
    assert isolation()["network_mode"] == "seccomp"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    code = f"""
import _socket, ctypes, socket
reached = []
for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
    try:
        _socket.socket(family, socket.SOCK_DGRAM)
        reached.append(family)
    except OSError:
        pass
if ctypes.CDLL(None).socket(socket.AF_INET, socket.SOCK_STREAM, 0) >= 0:
    reached.append("libc")
try:
    _socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", {port}))
    reached.append("tcp")
except OSError:
    pass
a, b = socket.socketpair()  # unix sockets still work (multiprocessing needs them)
print("REPORT", reached)
"""
    try:
        result = run_program(code, LIMITS)
    finally:
        server.close()
    assert result.status == "passed" and "REPORT []" in result.stdout, result


def test_invalid_mode_is_explained():
    with pytest.raises(ValueError, match="'paranoid'.*'auto' or 'strict'"):
        SandboxLimits(mode="paranoid")


@pytest.mark.filterwarnings("ignore:nara sandbox")
def test_reduced_level_cleans_up_and_kills_daemons(no_namespaces):
    before = set(Path(tempfile.gettempdir()).glob("nara-sandbox-*"))
    deep = "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
    assert run_program(deep, LIMITS).status == "passed"
    bad = run_program("x = '\ud800'\n", LIMITS)
    assert bad.status == "failed" and "surrogate" in bad.details
    marker = f"nara-rdm-{os.getpid() % 10000}"
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    daemon += "        time.sleep(60)\n    os._exit(0)\n"
    if isolation()["network_mode"] == "seccomp":  # then it cannot kill the judge to escape it
        daemon += "import signal\nfor pid in (os.getppid(), 0, -1):\n    try:\n"
        daemon += "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
    assert run_program(name_processes(marker) + daemon, LIMITS).status == "passed"
    time.sleep(0.5)
    assert survivors(marker) == []
    assert set(Path(tempfile.gettempdir()).glob("nara-sandbox-*")) == before


@pytest.mark.filterwarnings("ignore:nara sandbox")
def test_landlock_hides_the_host_without_namespaces(no_namespaces):
    if not isolation()["landlock"]:
        pytest.skip("Landlock is not available on this kernel")
    secrets = [sandbox.__file__, "/etc/passwd", os.path.expanduser("~/.bashrc"), "/tmp"]
    if HAS_CODE_DATA:
        secrets.append(str(data_dir() / "code" / "humaneval.jsonl"))
    code = f"""
import os
reached = []
for path in {secrets!r}:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, "rb").close()
        reached.append(path)
    except OSError:
        pass
open("own-file", "w").write("x")
print("REPORT", reached, open("own-file").read())
"""
    result = run_program(code, LIMITS)
    assert result.status == "passed" and "REPORT [] x" in result.stdout, result


@pytest.mark.filterwarnings("ignore:nara sandbox")
@pytest.mark.skipif(os.geteuid() != 0, reason="the dedicated uid applies to a root evaluator")
def test_reduced_level_as_root_protects_the_callers_files(no_namespaces, tmp_path):
    target = tmp_path / "caller.txt"
    target.write_text("mine")
    code = f"try:\n    open({str(target)!r}, 'w').write('x')\nexcept OSError:\n    pass\n"
    assert run_program(code, LIMITS).status == "passed"
    assert target.read_text() == "mine"


USER_SCRIPT = """
import importlib.util, json, sys, warnings
spec = importlib.util.spec_from_file_location("nara_sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules["nara_sandbox"] = sandbox
spec.loader.exec_module(sandbox)
home = sys.argv[2]
attack = f'''
import os
for name in ("secret.txt", ".bashrc"):
    path = os.path.join({home!r}, name)
    try:
        print("READ", open(path).read())
    except OSError:
        pass
    try:
        open(path, "a").write("pwned")
    except OSError:
        pass
'''
out = {"full": sandbox.isolation_report()["level"]}
out["full_run"] = sandbox.run_program(attack).stdout
sandbox._probe_full = lambda python, uid: "forced off by the test"
sandbox.isolation.cache_clear()
out["reduced"] = sandbox.isolation_report()["level"]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out["reduced_run"] = sandbox.run_program(attack).stdout
sandbox._warned.clear()
try:
    sandbox.run_program("pass", sandbox.SandboxLimits(mode="strict"))
except sandbox.SandboxUnavailable as err:
    out["strict"] = str(err)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["auto"] = sandbox.run_program("pass").status
out["warnings"] = [str(w.message) for w in caught]
print(json.dumps(out))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_ordinary_user_files_are_protected_or_the_run_refused():
    home = Path(tempfile.mkdtemp(prefix="nara-user-home-"))
    try:
        (home / "secret.txt").write_text("ssh key")
        (home / ".bashrc").write_text("# rc\n")
        os.chown(home, USER, USER)
        for path in home.iterdir():
            os.chown(path, USER, USER)
        boot = Path(sandbox.__file__)
        run = subprocess.run(
            ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups"]
            + ["/usr/bin/python3", "-I", "-c", USER_SCRIPT, str(boot), str(home)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=home,
            env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout.strip().splitlines()[-1])
        if out["full"] == "full":  # user namespaces: the home is simply not there
            assert "READ" not in out["full_run"]
            assert (home / "secret.txt").read_text() == "ssh key"
            assert (home / ".bashrc").read_text() == "# rc\n"
        if out["reduced"] == "reduced":  # Landlock: the home stays out of reach without namespaces
            assert "READ" not in out["reduced_run"]
            assert (home / "secret.txt").read_text() == "ssh key"
        else:
            assert out["reduced"] == "none" and "runs as YOU" in out["strict"]
        assert "Refusing to run code in strict mode" in out["strict"]
        assert out["auto"] == "passed" and any("REDUCED ISOLATION" in w for w in out["warnings"])
    finally:
        shutil.rmtree(home)


@pytest.mark.skipif(not HAS_CODE_DATA, reason="no code data")
def test_cli_strict_refuses_before_claiming_a_folder(no_namespaces, tmp_path, capsys):
    argv = ["eval", "--task", "humaneval", "--oracle", "--limit", "1", "--no-progress"]
    out = tmp_path / "strict"
    assert main([*argv, "--output", str(out), "--sandbox", "strict"]) == 2
    assert "Refusing to run code in strict mode" in capsys.readouterr().err
    assert not (out / "run.json").exists()


@pytest.mark.skipif(
    not HAS_CODE_DATA or isolation()["level"] != "full", reason="needs code data, full isolation"
)
def test_cli_strict_runs_with_full_isolation_and_records_it(tmp_path):
    argv = ["eval", "--task", "humaneval", "--oracle", "--limit", "1", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path), "--sandbox", "strict"]) == 0
    summary = json.loads((tmp_path / "humaneval.summary.json").read_text())
    assert summary["sandbox"]["level"] == "full" and summary["sandbox"]["mode"] == "strict"
