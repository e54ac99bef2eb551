"""The verdict cannot be written by the solution: hostile solutions that fail their tests fail.

Every attack is a wrong solution (``f(x)`` returns 0, the tests want ``x * x``) plus code that
tries to turn the verdict into "passed": writing to inherited descriptors, reaching the harness
through gc or frames, patching the interpreter, exiting early, killing or reading the judge, or
returning objects that compare equal to anything. The correct solution passes, so the tests
themselves are satisfiable.
"""

import pytest

from nara.evaluation.sandbox import CodeTest, SandboxLimits, isolation, run_test

LIMITS = SandboxLimits(timeout=5)
TESTS = "assert f(2) == 4\nassert f(3) == 9\nassert abs(f(1.5) - 2.25) < 1e-9\n"
WRONG = "def f(x):\n    return 0\n"

ATTACKS = {
    "write passed to every descriptor": """
import os
for fd in range(0, 1024):
    for text in (b"passed\\n\\n", b"ok\\n"):
        try:
            os.write(fd, text)
        except OSError:
            pass
""",
    "write to every file object found through gc": """
import gc, io
for obj in gc.get_objects():
    if isinstance(obj, io.IOBase) or hasattr(obj, "write_fd"):
        try:
            obj.write("passed\\n\\n")
            obj.flush()
        except Exception:
            pass
""",
    "patch the frames and globals of the caller": """
import sys
frame = sys._getframe()
while frame is not None:
    for key in list(frame.f_globals):
        if key.startswith("_") is False and callable(frame.f_globals[key]):
            frame.f_globals[key] = lambda *a, **k: ("passed", "")
    frame = frame.f_back
""",
    "patch builtins and skip lines with a trace hook": """
import builtins, sys
builtins.abs = lambda x: 0
builtins.AssertionError = type("Quiet", (Exception,), {})
def jump(frame, event, arg):
    if event == "line" and frame.f_code.co_filename == "<tests>":
        frame.f_lineno = 999
    return jump
sys.settrace(jump)
""",
    "exit with status 0 while loading": "import os\nos._exit(0)\n",
    "sys.exit(0) while loading": "import sys\nsys.exit(0)\n",
    "exit from inside the call": "import os\ndef f(x):\n    os._exit(0)\n",
    "kill the judge": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "always-equal object": "class Eq:\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0\n"
    "def f(x):\n    return Eq()\n",
    "always-equal int subclass": "class Eq(int):\n    __eq__ = lambda s, o: True\n"
    "def f(x):\n    return Eq(0)\n",
}


def test_the_correct_solution_passes():
    assert run_test(CodeTest("def f(x):\n    return x * x\n", TESTS), LIMITS).status == "passed"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_does_not_pass(attack):
    result = run_test(CodeTest(WRONG + ATTACKS[attack], TESTS), LIMITS)
    assert result.status != "passed", (attack, result)


@pytest.mark.skipif(isolation()["level"] != "full", reason="kill(-1) outside a PID namespace")
def test_killing_everything_it_can_does_not_pass():
    """Only inside a PID namespace: elsewhere kill(-1) would hit the caller's own processes."""
    attack = "import os, signal\nos.kill(-1, signal.SIGKILL)\n"
    assert run_test(CodeTest(WRONG + attack, TESTS), LIMITS).status != "passed"


def test_reading_the_judge_is_denied():
    """ptrace-style access to the judge (memory, descriptors, environment) fails."""
    probe = """
import os
judge = os.getppid()
paths = [f"/proc/{judge}/mem", f"/proc/{judge}/environ"]
paths += [f"/proc/{judge}/fd/{n}" for n in range(64)]
reached = []
for path in paths:
    for mode in ("rb", "wb"):
        try:
            open(path, mode).close()
            reached.append(path)
        except OSError:
            pass
print("REACHED", reached)
"""
    result = run_test(CodeTest(WRONG + probe, TESTS), LIMITS)
    assert result.status == "failed" and "REACHED []" in result.stdout, result


def test_stdout_claims_are_ignored():
    result = run_test(
        CodeTest(
            WRONG + "print('passed')\nprint('passed', file=__import__('sys').stderr)\n", TESTS
        ),
        LIMITS,
    )
    assert result.status == "failed" and "AssertionError" in result.details


def test_tests_see_exceptions_mutations_objects_and_iterators():
    solution = """
class Node:
    def __init__(self, value):
        self.value, self.left = value, None
def depth(node):
    return 0 if node is None else 1 + depth(node.left)
def check_positive(x):
    if x <= 0:
        raise ValueError("not positive")
    return x
def sort_in_place(items):
    items.sort()
def count(n):
    yield from range(n)
"""
    tests = """
root = Node(1)
root.left = Node(2)
assert depth(root) == 2 and root.value == 1
try:
    check_positive(-1)
except ValueError as err:
    assert "not positive" in str(err)
else:
    raise AssertionError("no exception")
items = [3, 1, 2]
sort_in_place(items)
assert items == [1, 2, 3]
assert list(count(3)) == [0, 1, 2]
assert check_positive(2 ** 5000) == 2 ** 5000
"""
    assert run_test(CodeTest(solution, tests), LIMITS).status == "passed"


def test_context_helpers_are_the_judges_own():
    """HumanEval: helpers come from the trusted prompt, the entry point from the solution."""
    context = "def poly(x):\n    return x + 1\n\ndef g(x):\n    '''stub'''\n"
    solution = context + "    return poly(x) * 2\n\ndef poly(x):\n    return 0\n"
    tests = "def check(candidate):\n    assert candidate(1) == 0 and poly(1) == 2\n\ncheck(g)\n"
    # the solution's poly returns 0 (so its g does too); the tests' poly is still the prompt's
    result = run_test(CodeTest(solution, tests, context=context, names=("g",)), LIMITS)
    assert result.status == "passed", result


@pytest.mark.skipif(
    isolation()["level"] != "full", reason="the judge is PID 1 only in a PID namespace"
)
def test_signals_to_the_judge_do_not_reach_it():
    attack = "import os, signal\nfor s in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):\n"
    attack += "    os.kill(1, s)\n"
    result = run_test(CodeTest("def f(x):\n    return x * x\n" + attack, TESTS), LIMITS)
    assert result.status == "passed", result


@pytest.mark.parametrize(
    "body", ["import os\n    os._exit(0)", "while True:\n        pass", "raise SystemExit(0)"]
)
def test_tests_that_swallow_exceptions_do_not_turn_an_exit_or_a_hang_into_a_pass(body):
    tests = "for x in range(3):\n    try:\n        f(x)\n    except BaseException:\n        pass\n"
    result = run_test(CodeTest(f"def f(x):\n    {body}\n", tests), SandboxLimits(timeout=2))
    assert result.status in ("failed", "timed_out"), result


def test_the_tests_are_not_in_the_solutions_memory():
    """The expected answer exists only in the tests, which the solution process never receives:
    neither gc nor a scan of its own memory finds it."""
    solution = """
import gc, re
def f():
    pattern = re.compile(rb"nara-" + rb"answer-[0-9]{8}")
    for obj in gc.get_objects():
        for text in (obj if isinstance(obj, (list, tuple)) else [obj]):
            if isinstance(text, str) and (found := pattern.search(text.encode("utf-8", "replace"))):
                return found.group().decode()
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("rw"):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    if found := pattern.search(mem.read(end - start)):
                        return found.group().decode()
                except (OSError, OverflowError, ValueError):
                    pass
    except OSError:
        pass
    return "not found"
"""
    tests = "assert f() == 'nara-answer-48151623'\n"
    result = run_test(CodeTest(solution, tests), SandboxLimits(timeout=20))
    assert result.status == "failed" and "AssertionError" in result.details, result
