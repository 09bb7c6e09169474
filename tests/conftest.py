"""Shared fixtures that run one black-box test suite against several beanstalk servers.

Method: every test that asks for the ``server`` (TCP) or ``unix_server`` (UNIX socket) fixture is
parametrized over the registered targets -- the real ``beanstalkd`` 1.12 and a ``beanraft`` node --
and gets a freshly started process on a free port. Tests talk to it through ``Wire``, a tiny
blocking client that sends raw bytes and checks the exact bytes that come back, so a transcript
that passes against beanstalkd and fails against BeanRaft is a compatibility bug by construction.

Fixtures: ``server`` / ``unix_server`` (a started Target), ``wire`` (one Wire to ``server``),
``server_args`` (the flags of ``@pytest.mark.server_args("-z", "10")``, which the server fixtures
pass on), ``start_server(kind, *flags, unix=False)`` (start more servers; all stopped at
teardown), ``target_kind`` (the bare target name, for tests that start their own servers) and
``unused_port``. ``--target NAME`` (repeatable) narrows the run to some targets.

Adding a target: write a factory ``factory(spec: TargetSpec) -> Target`` and put it in
``TARGETS`` (``TARGETS["inprocess"] = start_inprocess``), here or in a plugin loaded before
collection; ``ProcessTarget`` covers anything started as a process with beanstalkd's flags.
"""

from __future__ import annotations

import difflib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import pytest

from beanraft.node import launcher

Address = Union[tuple[str, int], str]

HOST = "127.0.0.1"
BEANSTALKD = "/usr/bin/beanstalkd"
READY_PROBE = b"list-tube-used\r\n"
READY_REPLY = b"USING default\r\n"


# --------------------------------------------------------------------------- ports and processes


def _share_the_port_range() -> None:
    """Under pytest-xdist, each worker process picks its free ports from its own slice of the
    range, so two test files running side by side never choose the same port at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        width = (launcher.PORT_HIGH - launcher.PORT_LOW) // count
        low = launcher.PORT_LOW + int(worker[2:]) % count * width
        launcher.PORT_LOW, launcher.PORT_HIGH = low, low + width


_share_the_port_range()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (below the ephemeral range, so no
    outgoing connection takes it meanwhile)."""
    return launcher.free_ports(1)[0]


_die_with_parent = launcher.die_with_parent  # SIGKILL the child if pytest itself dies


# --------------------------------------------------------------------------- the wire client


class Wire:
    """A small blocking client for transcript tests: raw bytes out, exact bytes in.

    Every read has a deadline; running out of time or hitting EOF fails the test with what did
    arrive, instead of hanging.
    """

    def __init__(self, sock: socket.socket, default_timeout: float = 3.0):
        self.sock = sock
        self.default_timeout = default_timeout
        self._buffer = b""
        self._eof = False

    def send(self, data: bytes) -> None:
        """Sends all of ``data`` at once (one write, so pipelined commands stay in one packet)."""
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Reads what is available into the buffer; returns False on EOF or when time is up."""
        if self._eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.default_timeout if timeout is None else timeout)

    def try_read_exactly(self, size: int, deadline: float) -> bytes | None:
        """Exactly ``size`` bytes, or None (bytes kept) at EOF or the ``time.monotonic()`` deadline."""
        while len(self._buffer) < size:
            if not self._fill(deadline):
                return None
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def try_read_line(self, deadline: float) -> bytes | None:
        """The next line without its CRLF, or None (bytes kept) at EOF or the deadline."""
        while b"\r\n" not in self._buffer:
            if not self._fill(deadline):
                return None
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    @property
    def at_eof(self) -> bool:
        """True once the server closed its side."""
        return self._eof

    def take_pending(self) -> bytes:
        """Returns and forgets the bytes received but not yet read (e.g. half a reply)."""
        data, self._buffer = self._buffer, b""
        return data

    def _why(self, wanted: str) -> str:
        return f"{'connection closed' if self._eof else 'timed out'} waiting for {wanted}; received {self._buffer!r}"

    def read_exactly(self, size: int, timeout: float | None = None) -> bytes:
        """Returns exactly ``size`` bytes, or fails the test with the bytes that did arrive."""
        data = self.try_read_exactly(size, self._deadline(timeout))
        if data is None:
            pytest.fail(self._why(f"{size} bytes"))
        return data

    def expect(self, expected: bytes, timeout: float | None = None) -> None:
        """Reads exactly ``len(expected)`` bytes and asserts they equal ``expected``."""
        got = self.try_read_exactly(len(expected), self._deadline(timeout))
        if got is None:
            pytest.fail(self._why(repr(expected)))
        if got != expected:
            pytest.fail("unexpected reply\n" + byte_diff(expected, got))

    def read_line(self, timeout: float | None = None) -> bytes:
        """Returns the next line without its CRLF."""
        line = self.try_read_line(self._deadline(timeout))
        if line is None:
            pytest.fail(self._why("a line"))
        return line

    def expect_nothing(self, wait: float = 0.3) -> None:
        """Asserts that no byte arrives (and the connection stays open) for ``wait`` seconds."""
        self._fill(time.monotonic() + wait)
        assert self._buffer == b"" and not self._eof, (
            f"expected silence, got {self._buffer!r}{' then EOF' if self._eof else ''}"
        )

    def recv_until_closed(self, timeout: float | None = None) -> bytes:
        """Returns everything up to the server's EOF; fails if the server keeps the socket open."""
        deadline = self._deadline(timeout)
        while self._fill(deadline):
            pass
        if not self._eof:
            pytest.fail(f"connection still open; received {self._buffer!r}")
        return self.take_pending()

    def request(self, line: bytes, timeout: float | None = None) -> bytes:
        """Sends one command line (CRLF added) and returns the first reply line, CRLF removed."""
        self.send(line + b"\r\n")
        return self.read_line(timeout)

    def yaml(self, command: bytes) -> dict[str, str]:
        """Sends a stats/list command and returns its YAML mapping as ordered str -> str.

        Also checks the framing: ``OK <n>``, a body of exactly n bytes opening with ``---\\n``,
        then CRLF. A YAML list is returned as {item: ""} so its order is kept too.
        """
        line = self.request(command)
        assert line.startswith(b"OK "), f"{command!r} -> {line!r}"
        body = self.read_exactly(int(line[3:]) + 2)
        assert body.startswith(b"---\n") and body.endswith(b"\n\r\n"), repr(body)
        result: dict[str, str] = {}
        for entry in body[4:-2].decode().splitlines():
            if entry.startswith("- "):
                result[entry[2:]] = ""
            else:
                key, sep, value = entry.partition(": ")
                assert sep, f"not a YAML entry: {entry!r}"
                result[key] = value
        return result

    def shutdown_write(self) -> None:
        """Half-closes the connection: the server sees EOF, we can still read."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


def byte_diff(expected: bytes, got: bytes) -> str:
    """A readable account of how two byte strings differ (repr lines plus a line diff)."""
    at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    lines = [f"expected: {expected!r}", f"     got: {got!r}", f"first difference at byte {at}"]
    ours = [repr(x) for x in expected.splitlines(keepends=True)]
    theirs = [repr(x) for x in got.splitlines(keepends=True)]
    if len(ours) > 1 or len(theirs) > 1:
        lines += difflib.unified_diff(ours, theirs, "expected", "got", lineterm="")
    return "\n".join(lines)


def connect_to(address: Address, timeout: float = 3.0) -> Wire:
    """Opens a Wire to a TCP (host, port) or UNIX socket path."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Wire(sock, default_timeout=timeout)


# --------------------------------------------------------------------------- targets


@dataclass
class TargetSpec:
    """What a test asks of a target: where to listen and which extra command-line flags."""

    kind: str
    workdir: Path  # the process's cwd, short enough for a UNIX socket path inside it
    output: Path  # where its stdout and stderr go (in the test's tmp_path)
    args: tuple[str, ...] = ()
    unix: bool = False  # listen on a UNIX socket instead of 127.0.0.1:<free port>


class Target:
    """A running server under test. Subclasses implement the process control."""

    kind: str
    address: Address

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    def connect(self, timeout: float = 3.0) -> Wire:
        return connect_to(self.address, timeout)

    def restart(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def stop(self) -> None:
        raise NotImplementedError

    def signal(self, sig: int) -> None:
        raise NotImplementedError

    def diagnostics(self) -> str:
        """Text to show when a test using this target fails (e.g. its stderr)."""
        return ""


def listen_args(spec: TargetSpec) -> tuple[Address, list[str]]:
    """Where a target listens (a UNIX socket in its workdir, or a free loopback port) and the
    ``-l``/``-p`` flags that say so."""
    if spec.unix:
        path = str(spec.workdir / "sock")
        return path, ["-l", f"unix:{path}"]
    port = free_port()
    return (HOST, port), ["-l", HOST, "-p", str(port)]


class ProcessTarget(Target):
    """A server run as a child process, stopped by its own pid only."""

    def __init__(self, spec: TargetSpec, command: list[str], ready_timeout_s: float):
        self.kind = spec.kind
        self.spec = spec
        self.address, listen = listen_args(spec)
        self.argv = command + listen + list(spec.args)
        self.ready_timeout_s = ready_timeout_s
        self.stderr_path = spec.output
        self._process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Starts the process and waits until it answers ``list-tube-used`` with ``USING default``."""
        assert self._process is None or self._process.poll() is not None, "already running"
        self.starts += 1
        with open(self.stderr_path, "ab") as stderr:
            stderr.write(f"--- start {self.starts}: {' '.join(self.argv)}\n".encode())
            stderr.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.spec.workdir,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no attempt"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                pytest.fail(f"{self.kind} exited with {code} before it was ready:\n{self.diagnostics()}")
            try:
                wire = self.connect(timeout=1.0)
                try:
                    wire.sock.sendall(READY_PROBE)
                    reply = wire.sock.recv(len(READY_REPLY))
                finally:
                    wire.close()
                if reply == READY_REPLY:
                    return
                last = f"probe answered {reply!r}"
            except OSError as error:
                last = repr(error)
            time.sleep(0.01)
        self.stop()
        pytest.fail(f"{self.kind} not ready after {self.ready_timeout_s} s ({last}):\n{self.diagnostics()}")

    def signal(self, sig: int) -> None:
        assert self._process is not None and self._process.poll() is None, f"{self.kind} is not running"
        os.kill(self._process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, then reap, so the port and data directory are free for a restart."""
        self.signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s; a no-op if the process already exited."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stops the process if it runs, then starts it again with the same flags and address."""
        self.stop()
        self.start()

    def diagnostics(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""


def start_beanstalkd(spec: TargetSpec) -> Target:
    """The reference: the real beanstalkd 1.12 (CI installs it; a missing binary fails)."""
    if not os.access(BEANSTALKD, os.X_OK):
        pytest.fail(f"{BEANSTALKD} is missing: install beanstalkd 1.12")
    target = ProcessTarget(spec, [BEANSTALKD], ready_timeout_s=5)
    target.start()
    return target


def beanraft_command() -> list[str]:
    """``beanraft serve``: the console script of this interpreter, else ``python -m``."""
    return launcher.beanraft_program() + ["serve"]


def start_beanraft(spec: TargetSpec) -> Target:
    """A single BeanRaft node; it needs a moment to elect itself leader, hence 15 s."""
    target = ProcessTarget(spec, beanraft_command(), ready_timeout_s=15)
    target.start()
    return target


class InProcessTarget(Target):
    """The in-process stack: a BeanRaft node on a thread of the test process itself.

    It takes ``beanraft serve``'s flags. A kill -9 or a restart of the process it runs in is
    not possible, so tests needing one skip here (the ``beanraft`` process target covers them).
    """

    def __init__(self, spec: TargetSpec):
        from beanraft.node.cli import build_config, serve
        from beanraft.node.embedded import EmbeddedNode

        self.kind = spec.kind
        self.address, listen = listen_args(spec)
        context = serve.make_context("serve", listen + list(spec.args))
        self._embedded = EmbeddedNode(build_config(**context.params)).start()

    @property
    def pid(self) -> int | None:
        return os.getpid()

    def signal(self, sig: int) -> None:
        node = self._embedded.node
        if sig == signal.SIGUSR1:
            self._embedded._loop.call_soon_threadsafe(node.enter_drain_mode)
        else:
            pytest.skip(f"signal {sig} would hit the test process: covered by the beanraft target")

    def restart(self) -> None:
        pytest.skip("an in-process node cannot be restarted like a process")

    def stop(self) -> None:
        self._embedded.stop()


def start_inprocess(spec: TargetSpec) -> Target:
    return InProcessTarget(spec)


#: Target name -> factory. Register another implementation here (the suite picks it up).
TARGETS: dict[str, Callable[[TargetSpec], Target]] = {
    "beanstalkd": start_beanstalkd,
    "beanraft": start_beanraft,
    "inprocess": start_inprocess,
}

# A three-node BeanRaft cluster whose client address is a follower's (tests/cluster/follower_target.py).
from cluster.follower_target import follower_factory  # noqa: E402  (tests/ is on sys.path)

TARGETS["follower"] = follower_factory(connect_to)

_STARTED = pytest.StashKey[list]()


# --------------------------------------------------------------------------- pytest plumbing


def pytest_addoption(parser):
    parser.addoption(
        "--target",
        action="append",
        default=[],
        help="run the server fixtures only against this target (repeatable; default: all)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "server_args(*args): extra command-line flags for the server")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


#: A test that talks to server processes and hangs is a failed test, not a stalled suite.
SERVER_TEST_TIMEOUT_S = 60


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "start_server" in item.fixturenames and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SERVER_TEST_TIMEOUT_S))


def selected_targets(config) -> list[str]:
    """The registered targets, narrowed by --target."""
    wanted = config.getoption("--target")
    unknown = set(wanted) - set(TARGETS)
    if unknown:
        raise pytest.UsageError(f"unknown --target {sorted(unknown)}; known: {sorted(TARGETS)}")
    return [name for name in TARGETS if not wanted or name in wanted]


#: The follower target starts a three-process cluster per test (about 2.5 s here), so a plain run
#: takes it through these modules only: the seeded differential streams (one connection at a
#: time, and several interleaved with waits and timers), the reserve semantics that depend most
#: on the log, and the exact stats bytes. `--target follower` runs everything.
FOLLOWER_DEFAULT_MODULES = {
    "test_transcripts_differential.py", "test_transcripts_interleaved.py", "test_transcripts_reserve.py",
    "test_transcripts_stats.py",
}


def pytest_generate_tests(metafunc):
    # Parametrize at collection time (not at import) so that targets registered later count.
    # `target_kind` is the bare name, for tests that start servers themselves via start_server.
    kinds = selected_targets(metafunc.config)
    explicit = "follower" in metafunc.config.getoption("--target")
    if not explicit and metafunc.module.__file__.rsplit("/", 1)[-1] not in FOLLOWER_DEFAULT_MODULES:
        kinds = [k for k in kinds if k != "follower"]
    for name in ("server", "unix_server", "target_kind"):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, kinds, indirect=name != "target_kind", ids=kinds)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for target in item.stash.get(_STARTED, []):
            text = target.diagnostics()
            if text:
                report.sections.append((f"{target.kind} output (pid {target.pid})", text))


@pytest.fixture
def start_server(request, tmp_path):
    """Factory: ``start_server(kind, *args, unix=False) -> Target``; all are stopped at teardown.

    With ``target_kind`` in its arguments a test is parametrized over the targets and can start
    its own servers, e.g. ``start_server(target_kind, "-b", str(tmp_path))``.
    """
    started: list[Target] = request.node.stash.setdefault(_STARTED, [])
    workdirs: list[Path] = []

    def start(kind: str, *args: str, unix: bool = False) -> Target:
        # A short directory under /tmp: UNIX socket paths are limited to 107 bytes.
        workdir = Path(tempfile.mkdtemp(prefix=f"br-{kind[:4]}-"))
        workdirs.append(workdir)
        output = tmp_path / f"{kind}-{len(started) + 1}.stderr"
        spec = TargetSpec(kind=kind, workdir=workdir, output=output, args=tuple(args), unix=unix)
        target = TARGETS[kind](spec)
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()
    for workdir in workdirs:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def server_args(request) -> tuple[str, ...]:
    """The flags of the closest ``@pytest.mark.server_args(...)`` marker, as strings."""
    marker = request.node.get_closest_marker("server_args")
    return tuple(str(arg) for arg in marker.args) if marker else ()


@pytest.fixture
def server(request, start_server, server_args) -> Target:
    """A fresh target on 127.0.0.1:<free port>, one per registered kind (parametrized)."""
    return start_server(request.param, *server_args)


@pytest.fixture
def unix_server(request, start_server, server_args) -> Target:
    """Like ``server`` but listening on ``unix:/tmp/br-…/sock``."""
    return start_server(request.param, *server_args, unix=True)


@pytest.fixture
def unused_port() -> int:
    """``free_port()`` for test modules (importing conftest from them is fragile)."""
    return free_port()


@pytest.fixture
def wire(server):
    """One connection to ``server``, closed at teardown."""
    connection = server.connect()
    yield connection
    connection.close()
