"""The judge: runs inside the sandbox, builds the program's view of the system, then judges it.

Executed as ``python -I -S -c SOURCE VERDICT_FD`` with a marshalled job on stdin, never imported
by the evaluator; standard library only. See docs/sandbox.md for the design. In order, it:

1. reads the first part of the job (the solution, the context, the limits) from stdin;
2. in fresh namespaces (``job["root"]``): builds a minimal root (read-only system directories and
   interpreter, a size-capped tmpfs as /tmp and working directory, a few devices, /proc) and
   pivots into it, so nothing else of the host is reachable by path;
3. sets resource limits, drops every capability, forbids new privileges and makes itself
   non-dumpable (no ptrace, no /proc/<pid>/mem or fd access by processes without capabilities);
4. forks the **solution process**, which closes the verdict descriptor and the judge's ends of
   their channel (it keeps only stdin on /dev/null, the captured stdout/stderr and its channel)
   and runs the untrusted code, then serves calls: each name the tests use from the solution is a
   proxy here, and only plain data (numbers, strings, bytes and containers of them) comes back;
5. reads the second part of the job (the tests, which the solution process thus never holds),
   runs them in this interpreter, which never executes the solution's code, and writes the
   verdict on VERDICT_FD, a descriptor the solution process never holds.
"""

from __future__ import annotations  # the sandbox's Python may be older than the evaluator's

import _signal as signal  # the C module: ``signal`` would import enum, slowing every start
import builtins
import ctypes
import marshal
import os
import resource
import select
import sys
import time

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_RELATIME = 32, 4096, 16384, 1 << 21
_ST_KEPT = 8 | 1024 | 2048  # noexec, noatime, nodiratime: statvfs and mount share these bits
_MNT_DETACH = 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECUREBITS = 4, 38, 28
_PR_SET_CHILD_SUBREAPER, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 36, 22, 2
_SECCOMP_ARCH = {  # audit arch, socket, then kill, tkill, tgkill, rt_(tg)sigqueueinfo, pidfd_open
    "x86_64": (0xC000003E, 41, (62, 200, 234, 129, 297, 434)),
    "aarch64": (0xC00000B7, 198, (129, 130, 131, 138, 240, 434)),
}
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_ALLOW, _DENY, _KILL = 0x7FFF0000, 0x00050000 | 1, 0x80000000  # seccomp: allow, EPERM, kill
_SECBIT_NOROOT_AND_LOCK = 0x3  # exec as uid 0 grants no capabilities, and that is locked
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1"}
_DEV_LINKS |= {"stderr": "/proc/self/fd/2", "shm": "/tmp"}  # one disk budget for /dev/shm too
_MUTABLE = (list, dict, set, bytearray)
_SIGNALS = {6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}
_SIGNALS |= {24: "SIGXCPU", 25: "SIGXFSZ"}  # the same numbers on x86-64 and arm64


class SetupError(Exception):
    """The sandbox could not be built (reported as 'crashed', never as the program's fault)."""


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    args = [None if a is None else a.encode() for a in (source, target, fstype, data)]
    if libc.mount(args[0], args[1], args[2], flags, args[3]) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {source or fstype} on {target}: {os.strerror(err)}")


def _bind_readonly(libc, source: str, target: str) -> None:
    """Bind `source` read-only; a remount must keep the flags the kernel locked on the source."""
    _mount(libc, source, target, None, _MS_BIND | _MS_REC)
    flags = os.statvfs(source).f_flag
    kept = (flags & _ST_KEPT) | (_MS_RELATIME if flags & 4096 else 0)
    remount = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | kept
    _mount(libc, None, target, None, remount)


def _minimal_root(libc, disk_bytes: int, inodes: int) -> None:
    """Pivot into a tmpfs root holding only read-only system dirs, the interpreter and /tmp."""
    root = "/tmp"  # private mount namespace: mounting here hides the host /tmp from us only
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for name in _SYSTEM_DIRS:
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), f"{root}/{name}")
    for source in _readonly_sources():
        os.makedirs(root + source)
        _bind_readonly(libc, source, root + source)
    dev = root + "/dev"
    os.mkdir(dev)
    _mount(libc, "tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=0755")
    for name in _DEVICES:
        open(f"{dev}/{name}", "w").close()
        _mount(libc, f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    for name, target in _DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")
    _mount(libc, None, dev, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NOEXEC)
    os.mkdir(root + "/proc")  # the proc of our own PID namespace (unshare --mount-proc)
    _mount(libc, "/proc", root + "/proc", None, _MS_BIND | _MS_REC)
    os.mkdir(root + "/tmp")
    work = f"size={disk_bytes},nr_inodes={inodes},mode=1777"
    _mount(libc, "tmpfs", root + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, work)
    os.makedirs(root + "/var")
    os.symlink("/tmp", root + "/var/tmp")
    os.mkdir(root + "/.old")
    machine = os.uname().machine
    number = _PIVOT_ROOT.get(machine)
    if number is None or libc.syscall(number, root.encode(), (root + "/.old").encode()) != 0:
        raise SetupError(f"pivot_root: {os.strerror(ctypes.get_errno())} on {machine}")
    os.chdir("/")
    if libc.umount2(b"/.old", _MNT_DETACH) != 0:
        raise SetupError(f"detach the host root: {os.strerror(ctypes.get_errno())}")
    os.rmdir("/.old")
    _mount(libc, None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    os.chdir("/tmp")


def _readonly_sources() -> list[str]:
    """The directories a program may read: system directories and the interpreter's prefix."""
    found = [os.path.realpath("/" + name) for name in _SYSTEM_DIRS]
    found += [os.path.realpath(sys.base_prefix), os.path.dirname(os.path.realpath(sys.executable))]
    found = sorted({path for path in found if os.path.isdir(path)})
    return [p for p in found if not any(p.startswith(q + "/") for q in found if q != p)]


def _landlock(libc, workdir: str) -> None:
    """Without namespaces: Landlock limits the solution to reading system directories and the
    interpreter, and to its own working folder; no TCP bind or connect, no signals or abstract
    unix sockets outside its domain (as far as the kernel's Landlock version allows)."""
    abi = libc.syscall(_LANDLOCK_CREATE_RULESET, None, 0, 1)  # flag 1: the ABI version
    if abi < 1:
        raise SetupError(f"Landlock unavailable: {os.strerror(ctypes.get_errno())}")
    every = 0x1FFF | (0x2000 if abi >= 2 else 0) | (0x4000 if abi >= 3 else 0)
    every |= 0x8000 if abi >= 5 else 0  # all filesystem rights this kernel knows
    handled = (ctypes.c_uint64 * 3)(every, 0x3 if abi >= 4 else 0, 0x3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(handled), size, 0)
    if ruleset < 0:
        raise SetupError(f"Landlock ruleset: {os.strerror(ctypes.get_errno())}")
    read, read_file, write_file = 0x1 | 0x4 | 0x8, 0x4, 0x2  # execute + read file + read dir
    rules = [(path, read) for path in _readonly_sources()] + [(workdir, every)]
    rules += [(f"/dev/{name}", read_file | write_file) for name in _DEVICES]
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        rule = _PathBeneath(access, fd)
        added = libc.syscall(_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)
        os.close(fd)
        if added != 0:
            raise SetupError(f"Landlock rule for {path}: {os.strerror(ctypes.get_errno())}")
    if libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
        raise SetupError(f"Landlock: {os.strerror(ctypes.get_errno())}")
    os.close(ruleset)


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _lock_down(libc, job: dict) -> None:
    """Limits, no capabilities, no new privileges, not dumpable: applies to both processes."""
    limits = [(resource.RLIMIT_AS, job["memory"]), (resource.RLIMIT_CPU, job["cpu"])]
    limits += [(resource.RLIMIT_FSIZE, job["fsize"]), (resource.RLIMIT_CORE, 0)]
    limits += [(resource.RLIMIT_NOFILE, job["nofile"]), (resource.RLIMIT_MEMLOCK, 0)]
    limits += [(resource.RLIMIT_MSGQUEUE, 0)]  # no locked memory, no POSIX message queues
    if job["nproc"] > 0:
        limits.append((resource.RLIMIT_NPROC, job["nproc"]))
    for kind, value in limits:  # the CPU hard limit is one second later: SIGXCPU, then SIGKILL
        resource.setrlimit(kind, (value, value + (kind == resource.RLIMIT_CPU)))

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    if job["root"]:  # root of a user namespace: give up every capability for good
        libc.prctl(_PR_SET_SECUREBITS, _SECBIT_NOROOT_AND_LOCK, 0, 0, 0)
        if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()):
            raise SetupError(f"capset: {os.strerror(ctypes.get_errno())}")
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise SetupError(f"PR_SET_DUMPABLE: {os.strerror(ctypes.get_errno())}")


class Channel:
    """Length-prefixed messages (see :func:`dumps`) over a pair of pipe descriptors."""

    def __init__(self, read_fd: int, write_fd: int, handle_of, object_of) -> None:
        self.read_fd, self.write_fd, self.buffer = read_fd, write_fd, bytearray()
        self.handle_of, self.object_of = handle_of, object_of

    def send(self, message) -> None:
        _flush_output()
        payload = dumps(message, self.handle_of)
        data = b"%d\n" % len(payload) + payload
        while data:
            data = data[os.write(self.write_fd, data) :]

    def receive(self, deadline: float | None = None):
        """The next message; None at end of stream; TimeoutError after `deadline` (monotonic)."""
        while True:
            newline = self.buffer.find(b"\n", 0, 21)
            if newline < 0 and len(self.buffer) > 20:
                raise ValueError("malformed message header from the other process")
            if newline >= 0:
                end = newline + 1 + int(self.buffer[:newline])
                if len(self.buffer) >= end:
                    payload = bytes(self.buffer[newline + 1 : end])
                    del self.buffer[:end]
                    return loads(payload, self.object_of)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk


def dumps(value, handle_of) -> bytes:
    """Plain data in a small tagged format; any other object is sent as a handle ``handle_of(o)``.

    Tags: N T F (None, True, False); i f c h + text + ``;`` (int in hex, float, complex, handle);
    s b y + length + ``:`` + text (str, bytes and bytearray in hex); l t S z d + count + ``:`` +
    items (list, tuple, set, frozenset, dict as key/value pairs). No parser is needed beyond
    :func:`loads`, which builds nothing but these plain types.
    """
    out: list[str] = []
    _put(value, handle_of, out)
    return "".join(out).encode("utf-8", "surrogatepass")


def _put(value, handle_of, out: list) -> None:
    if value is None or value is True or value is False:
        out.append("N" if value is None else "T" if value else "F")
    elif isinstance(value, int):
        out.append(f"i{int.__int__(value):x};")
    elif isinstance(value, float):
        out.append(f"f{float.__repr__(value)};")
    elif isinstance(value, complex):
        out.append(f"c{value.real!r},{value.imag!r};")
    elif isinstance(value, str):
        text = str.__str__(value)
        out.append(f"s{len(text)}:{text}")
    elif isinstance(value, (bytes, bytearray)):
        text = bytes(value).hex()
        out.append(f"{'b' if isinstance(value, bytes) else 'y'}{len(text)}:{text}")
    elif isinstance(value, dict):
        out.append(f"d{len(value)}:")
        for key, item in list(value.items()):
            _put(key, handle_of, out)
            _put(item, handle_of, out)
    elif isinstance(value, (list, tuple, set, frozenset)):
        tag = "l" if isinstance(value, list) else "t" if isinstance(value, tuple) else "S"
        items = list(value)
        out.append(f"{'z' if isinstance(value, frozenset) else tag}{len(items)}:")
        for item in items:
            _put(item, handle_of, out)
    else:
        out.append(f"h{handle_of(value)};")


def loads(data: bytes, object_of):
    """Inverse of :func:`dumps`; handles become ``object_of(number)``."""
    text = data.decode("utf-8", "surrogatepass")
    value, end = _take(text, 0, object_of)
    if end != len(text):
        raise ValueError("malformed value from the other process: trailing data")
    return value


def _take(text: str, i: int, object_of):
    tag, i = text[i], i + 1
    if tag in "NTF":
        return (None if tag == "N" else tag == "T"), i
    if tag in "ifch":
        end = text.index(";", i)
        body, i = text[i:end], end + 1
        if tag == "i":
            return int(body, 16), i
        if tag == "f":
            return float(body), i
        if tag == "c":
            real, imag = body.split(",")
            return complex(float(real), float(imag)), i
        return object_of(int(body)), i
    end = text.index(":", i)
    count, i = int(text[i:end]), end + 1
    if count < 0 or tag not in "sbyltSzd":
        raise ValueError(f"malformed value from the other process: {text[i - 1 : i + 20]!r}")
    if tag in "sby":
        if i + count > len(text):
            raise ValueError("malformed value from the other process: truncated")
        body = text[i : i + count]
        return (
            body if tag == "s" else (bytes if tag == "b" else bytearray).fromhex(body)
        ), i + count
    items = []
    for _ in range(count * (2 if tag == "d" else 1)):
        item, i = _take(text, i, object_of)
        items.append(item)
    if tag == "d":
        return dict(zip(items[::2], items[1::2])), i
    return {"l": list, "t": tuple, "S": set, "z": frozenset}[tag](items), i


def serve_solution(job: dict, read_fd: int, write_fd: int) -> None:
    """The solution process: run the solution, then answer the judge's calls; never returns."""
    objects: dict[int, object] = {}

    def handle_of(value) -> int:
        objects[id(value)] = value
        return id(value)

    channel = Channel(read_fd, write_fd, handle_of, objects.__getitem__)
    if job["landlock"]:
        _landlock(ctypes.CDLL(None, use_errno=True), os.getcwd())
    if job["network"] == "seccomp":
        _seccomp(ctypes.CDLL(None, use_errno=True), os.getppid())
    elif job["network"] == "in-process":
        _block_sockets()
    builtins.exit = builtins.quit = sys.exit  # what ``site`` would provide (we run with -S)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    sys.argv = ["program.py"]
    try:
        exec(compile(job["solution"], "program.py", "exec"), namespace)
    except BaseException as err:  # noqa: BLE001 - every failure of the program is an outcome
        _flush_and_exit(channel, ["load-error", _describe(err, "program.py")])
    channel.send(["ready"])
    while (request := channel.receive()) is not None:
        try:
            channel.send(["ok", *_answer(request, namespace)])
        except Exception as err:  # noqa: BLE001 - the test decides what a raise means
            try:
                channel.send(["raised", type(err).__name__, str(err)[:2000]])
            except BaseException:  # noqa: BLE001 - cannot even report: let the judge see EOF
                _flush_and_exit(None, None)
        except BaseException:  # noqa: BLE001 - exit() during the tests ends the solution
            _flush_and_exit(None, None)
    _flush_and_exit(None, None)


def _answer(request: list, namespace: dict) -> list:
    op, target, *args = request
    if op == "get":
        return [namespace.get(target), target in namespace]
    if op == "call":
        positional, keywords = args
        result = target(*positional, **keywords)
        return [result, [a if isinstance(a, _MUTABLE) else None for a in positional]]
    if op == "getattr":
        return [getattr(target, args[0])]
    if op == "setattr":
        setattr(target, args[0], args[1])
        return [None]
    if op == "iter":
        return [iter(target)]
    if op == "next":
        return [next(target)]
    if op == "bool":
        return [bool(target)]
    raise ValueError(f"unknown request {op!r}")


def _flush_output() -> None:
    """Flush the program's buffered output, so it reaches the supervisor before we are killed."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib is not imported: it would slow every sandbox start
            stream.flush()
        except BaseException:  # noqa: BLE001,S110 - the program may have closed or replaced them
            pass


def _flush_and_exit(channel, message) -> None:
    _flush_output()
    if channel is not None:
        channel.send(message)
    os._exit(0)


def _seccomp(libc, judge: int) -> None:
    """Without namespaces: a seccomp filter for the solution and everything it starts.

    Refused (EPERM): ``socket()`` of any family but unix; signals (kill, tkill, tgkill,
    rt_(tg)sigqueueinfo, pidfd_open) aimed at the judge, at a process group (pid <= 0) or at
    everyone (-1), so the judge lives to kill what the solution started; pidfd_send_signal;
    io_uring (it can open sockets); on x86-64 the x32 syscall numbers. A syscall of another
    architecture kills the process. The filter cannot be removed.
    """
    arch, socket_nr, signal_nrs = _SECCOMP_ARCH[os.uname().machine]
    ld, jeq, jge = 0x20, 0x15, 0x35
    program = [
        (ld, 4),  # A = audit arch
        (jeq, arch, None, "kill"),
        (ld, 0),  # A = syscall number
        (jge, 0x40000000, "deny", None),  # x32 ABI
        (jeq, 425, "deny", None),  # io_uring_setup
        (jeq, 424, "deny", None),  # pidfd_send_signal
        (jeq, socket_nr, "socket", None),
        *((jeq, number, "signal", None) for number in signal_nrs),
        _ALLOW,  # any other syscall
        "socket",
        (ld, 16),  # A = low word of the first argument: the address family
        (jeq, 1, "allow", "deny"),  # AF_UNIX
        "signal",
        (ld, 16),  # A = the target pid (a 32-bit int)
        (jeq, judge, "deny", None),
        (jeq, 0, "deny", None),
        (jge, 0x80000000, "deny", "allow"),  # negative: a process group, or -1: everyone
        "deny",
        _DENY,
        "kill",
        _KILL,
        "allow",
        _ALLOW,
    ]
    filters = _assemble(program)
    fprog = _SockFprog(len(filters), filters)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte)]
    _fields_ += [("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _assemble(program: list):
    """Classic BPF from rows: a label (str), a return value (int), (load, offset) or
    (jump, k, true_label, false_label) where None falls through to the next row."""
    rows = [row for row in program if not isinstance(row, str)]
    labels, index = {}, 0
    for row in program:
        if isinstance(row, str):
            labels[row] = index
        else:
            index += 1
    filters = (_SockFilter * len(rows))()
    for i, row in enumerate(rows):
        if isinstance(row, int):
            filters[i] = _SockFilter(0x06, 0, 0, row)  # BPF_RET | BPF_K
        elif len(row) == 2:
            filters[i] = _SockFilter(row[0], 0, 0, row[1])
        else:
            code, k, true, false = row
            jt, jf = (labels[t] - i - 1 if t else 0 for t in (true, false))
            if not (0 <= jt < 256 and 0 <= jf < 256):
                raise SetupError(f"seccomp program: jump from row {i} is not forward and short")
            filters[i] = _SockFilter(code, jt, jf, k)
    return filters


def _block_sockets() -> None:
    """Fallback without a network namespace: socket creation raises (bypassable, see the docs)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the nara sandbox")

    socket.socket = refuse  # type: ignore[assignment,misc]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socketpair = refuse  # type: ignore[assignment]


class Outcome(BaseException):
    """A verdict reached while the tests run (the solution process ended or timed out).

    A BaseException, so ``except Exception`` in a test does not swallow it; the judge also keeps
    the first one (``Judge.outcome``) and it overrides a test run that carried on regardless.
    """

    def __init__(self, status: str, details: str) -> None:
        super().__init__(details)
        self.status, self.details = status, details


class SolutionError(Exception):
    """An exception raised by the solution whose type is not a built-in one."""


class Judge:
    """The trusted side: a channel to the solution process, its pid, and the wall-time deadline."""

    def __init__(self, read_fd: int, write_fd: int, child: int, deadline: float) -> None:
        self.child, self.deadline = child, deadline
        self.outcome: Outcome | None = None
        self.channel = Channel(read_fd, write_fd, _remote_key, lambda key: Remote(self, key))

    def request(self, *message) -> list:
        self.channel.send(list(message))
        answer = self.receive()
        if answer[0] == "raised":
            kind = getattr(builtins, str(answer[1]), None)
            exception = kind if isinstance(kind, type) and issubclass(kind, Exception) else None
            raise (exception or SolutionError)(f"{answer[2]} (raised by the solution)")
        if answer[0] != "ok":
            raise ValueError(f"unexpected answer from the solution process: {str(answer)[:80]}")
        return answer[1:]

    def receive(self) -> list:
        if self.outcome is None:
            try:
                answer = self.channel.receive(self.deadline)
            except TimeoutError:
                self.outcome = Outcome("timed_out", "wall time limit reached")
            else:
                if answer is None:
                    self.outcome = self.ended()
        if self.outcome is not None:
            raise self.outcome
        if type(answer) is not list or not answer:
            raise ValueError(f"unexpected message from the solution process: {str(answer)[:80]}")
        return answer

    def ended(self) -> Outcome:
        """Why the solution process closed its channel, from its exit status."""
        for _ in range(200):
            pid, status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                break
            time.sleep(0.005)
        else:
            return Outcome("failed", "the solution closed its channel to the tests")
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            if number == signal.SIGXCPU:
                return Outcome("timed_out", "CPU time limit reached")
            name = _SIGNALS.get(number, f"signal {number}")
            why = ": CPU or memory limit, or the process limit" if number == signal.SIGKILL else ""
            return Outcome("crashed", f"the solution was killed by {name}{why}")
        code = os.WEXITSTATUS(status)
        return Outcome("failed", f"the solution exited (status {code}) before its tests finished")


def _remote_key(value) -> int:
    """What the tests may send to the solution: plain data, or the solution's own objects."""
    if isinstance(value, Remote):
        return object.__getattribute__(value, "_key")
    raise TypeError(
        f"the tests pass a {type(value).__name__} to the solution; only plain data "
        "(numbers, strings, bytes, containers of them) and the solution's own objects cross"
    )


class Remote:
    """A solution object seen from the tests: calls, attributes and iteration are forwarded.

    Comparisons are not forwarded: a value the tests compare must come back as plain data.
    """

    __slots__ = ("_judge", "_key")

    def __init__(self, judge: Judge, key: int) -> None:
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_key", key)

    def __call__(self, *args, **kwargs):
        judge = object.__getattribute__(self, "_judge")
        result, after = judge.request("call", self, list(args), kwargs)
        for arg, state in zip(args, after):  # in-place changes to mutable arguments come back
            if state is not None and isinstance(arg, _MUTABLE):
                _update(arg, state)
        return result

    def __getattr__(self, name: str):
        return object.__getattribute__(self, "_judge").request("getattr", self, name)[0]

    def __setattr__(self, name: str, value) -> None:
        object.__getattribute__(self, "_judge").request("setattr", self, name, value)

    def __iter__(self):
        judge = object.__getattribute__(self, "_judge")
        iterator = judge.request("iter", self)[0]
        while True:
            try:
                yield judge.request("next", iterator)[0]
            except StopIteration:
                return

    def __bool__(self) -> bool:
        return object.__getattribute__(self, "_judge").request("bool", self)[0] is True

    def __repr__(self) -> str:
        return f"<solution object #{object.__getattribute__(self, '_key')}>"


def _update(target, state) -> None:
    if isinstance(target, (dict, set)) and isinstance(state, type(target)):
        target.clear()
        target.update(state)
    elif isinstance(target, (list, bytearray)) and isinstance(state, type(target)):
        target[:] = state


def judge_main(job: dict, verdict_fd: int, null: int) -> tuple[str, str]:
    """Fork the solution process and run the tests against it; returns (status, details).

    The trusted context runs before the fork, so modules it imports load once for both
    processes; the tests are read from stdin only after it, so the solution process never holds
    them (it cannot read the expected answers from its own memory).
    """
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    try:
        exec(compile(job["context"], "<context>", "exec"), namespace)
        for name in job["modules"]:
            __import__(name)
            namespace[name] = sys.modules[name]
    except BaseException as err:  # noqa: BLE001 - a broken context fails every solution, visibly
        return "failed", "the tests' context does not run: " + _describe(err, "<context>")
    child_read, judge_write = os.pipe()  # judge -> solution: requests
    judge_read, child_write = os.pipe()  # solution -> judge: answers
    child = os.fork()
    if child == 0:
        try:
            os.dup2(null, 0)  # the rest of the job (the tests) stays unread in the pipe
            for fd in (verdict_fd, judge_write, judge_read, null):
                os.close(fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            serve_solution(job, child_read, child_write)
        finally:
            os._exit(1)
    os.close(child_read)
    os.close(child_write)
    judge = Judge(judge_read, judge_write, child, time.monotonic() + job["timeout"])
    try:
        tests_job = marshal.loads(_read_part(0))
        os.dup2(null, 0)
        tests = compile(tests_job["tests"], "<tests>", "exec")
    except BaseException as err:  # noqa: BLE001 - broken tests fail every solution, visibly
        return "failed", "the tests themselves do not run: " + _describe(err, "<tests>")
    try:
        hello = judge.receive()
        if hello[0] != "ready":
            return "failed", str(hello[1] if hello[0] == "load-error" else hello)[:2000]
        for name in tests_job["names"]:
            value, found = judge.request("get", name)
            if found is True:
                namespace[name] = value
            else:
                namespace.pop(name, None)  # a stub from the context must not stand in for it
        exec(tests, namespace)
        if judge.outcome is not None:  # the tests caught it and went on: still no pass
            raise judge.outcome
    except Outcome as outcome:
        return outcome.status, outcome.details
    except BaseException as err:  # noqa: BLE001 - a test that raises is a failed test
        return "failed", _describe(err, "<tests>")
    return "passed", ""


def _describe(err: BaseException, filename: str) -> str:
    """The exception in one line, with the line of `filename` it came from."""
    import traceback  # only on failure: it is slow to import

    detail = "".join(traceback.format_exception_only(type(err), err)).strip()
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == filename]
    if frames and filename == "<tests>":
        detail += f" (tests line {frames[-1].lineno})"
    return detail[:2000]


def _kill_descendants() -> None:
    """Without a PID namespace: SIGKILL every process left under us (we are their subreaper)."""
    me = str(os.getpid())
    while True:
        children = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                children.append(int(pid))
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def _read_part(fd: int) -> bytes:
    """One part of the job on `fd`: a decimal length, a newline, then exactly that many bytes
    (read without read-ahead, so the next part stays in the pipe)."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte or len(header) > 20:
            raise SetupError("the job on stdin is truncated")
        header += byte
    size, data = int(header), b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise SetupError("the job on stdin is truncated")
        data += chunk
    return data


def main() -> None:
    verdict_fd = int(sys.argv[1])
    job = marshal.loads(_read_part(0))
    null = os.open("/dev/null", os.O_RDONLY)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as PID 1, ignored signals cannot reach us
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if job["root"]:
            _minimal_root(libc, job["disk"], job["inodes"])
        else:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _lock_down(libc, job)
        status, details = judge_main(job, verdict_fd, null)
    except (SetupError, OSError) as err:
        status, details = "crashed", f"sandbox setup failed: {err}"
    os.write(verdict_fd, f"{status}\n{details}".encode("utf-8", "replace"))
    os.close(verdict_fd)
    if not job["root"]:
        _kill_descendants()
    os._exit(0)


if __name__ == "__main__":
    main()
