"""The sandbox against hostile programs: each ends within its limits and harms nothing.

The fork bomb is contained by RLIMIT_NPROC counted per user namespace (or per dedicated uid);
the test only runs when that layer is active, and checks that no sandbox process survives.
"""

import os
import sys
import time
from pathlib import Path

import pytest

from nara.evaluation.sandbox import SandboxLimits, isolation, run_program, run_programs

sys.path.insert(0, str(Path(__file__).parent))
from sandbox_support import name_processes, survivors  # noqa: E402

FAST = SandboxLimits(timeout=3, max_processes=16)


def run(source: str, limits: SandboxLimits = FAST):
    start = time.monotonic()
    result = run_program(source, limits)
    assert time.monotonic() - start < limits.timeout + 10  # ended, no hang
    return result


def test_pass_fail_and_early_exit():
    assert run("assert sum([1, 2]) == 3\nprint('ok')").status == "passed"
    failed = run("assert 1 == 2, 'nope'")
    assert failed.status == "failed" and "AssertionError: nope" in failed.details
    assert run("import sys\nsys.exit(0)\nassert False").status == "failed"
    assert run("import os\nos._exit(0)\nassert False").status == "failed"


def test_infinite_loop_times_out():
    result = run("while True:\n    pass")
    assert result.status == "timed_out"


def test_memory_hog_is_stopped():
    hog = "x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))"
    result = run(hog, SandboxLimits(timeout=10, memory_mb=256))
    assert (
        result.status in ("failed", "crashed") and "MemoryError" in result.details + result.stderr
    )


def test_output_flood_is_capped():
    result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 100000)")
    assert result.status == "timed_out"
    assert len(result.stdout) <= FAST.max_output_bytes and "truncated" in result.details


def test_network_is_unreachable():
    code = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)"
    result = run(code)
    assert result.status == "failed" and ("OSError" in result.details or "Error" in result.details)


def test_clean_environment_and_throwaway_home(monkeypatch):
    monkeypatch.setenv("NARA_SECRET_TOKEN", "do-not-leak")
    code = "import os\nassert 'NARA_SECRET_TOKEN' not in os.environ\n"
    code += "assert os.path.expanduser('~') == os.getcwd()\nopen('scratch.txt', 'w').write('ok')"
    assert run(code).status == "passed"


def test_writes_outside_the_workdir_do_not_land(tmp_path):
    iso = isolation()
    marker = Path("/tmp") / f"nara-evil-{os.getpid()}"
    protected = tmp_path / "evil.txt"  # a caller directory (owned by the caller)
    code = f"""
for path in [{str(marker)!r}, {str(protected)!r}]:
    try:
        open(path, 'w').write('x')
    except OSError:
        pass
"""
    run(code)
    if iso["private_tmp"]:
        assert not marker.exists()
    if iso["dedicated_uid"]:  # root evaluator: the program runs as another, unprivileged uid
        assert not protected.exists()
    marker.unlink(missing_ok=True)


@pytest.mark.skipif(not isolation()["process_limit"], reason="no process limit on this machine")
def test_fork_bomb_is_contained_and_nothing_survives():
    marker = f"nara-bomb-{os.getpid() % 10000}"
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run(name_processes(marker) + code)
    assert result.status in ("timed_out", "crashed")
    time.sleep(0.5)
    assert survivors(marker) == []


def test_daemon_in_its_own_session_dies_with_the_sample():
    """A double-forked daemon in a new session: the PID namespace, or the judge as subreaper."""
    marker = f"nara-dmn-{os.getpid() % 10000}"
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    code += "        time.sleep(60)\n    os._exit(0)\n"
    assert run(name_processes(marker) + code).status == "passed"
    time.sleep(0.5)
    assert survivors(marker) == []


def test_run_programs_keeps_order_in_parallel():
    sources = [f"assert {i} % 2 == 0" for i in range(6)]
    statuses = [r.status for r in run_programs(sources, FAST, workers=2)]
    assert statuses == ["passed", "failed"] * 3


def test_invalid_limits_are_explained():
    with pytest.raises(ValueError, match="memory_mb >= 64"):
        SandboxLimits(memory_mb=1)
