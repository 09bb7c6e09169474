"""Start, watch and stop local ``beanraft serve`` processes: the one launcher behind
``beanraft cluster``, the test harnesses and the benchmark.

Theory of operation.
* A ``NodeSpec`` says where one node listens and keeps its data; ``local_specs`` lays out N of
  them on one host, named node1…nodeN. ``serve_argv`` turns a spec and its peers' Raft addresses
  into the ``beanraft serve`` command line, so every launcher starts nodes the same way.
* A ``ServeProcess`` is one child process of a spec. It is only ever signalled through its own
  PID (or the process group it leads, when started in a session of its own), and asks Linux to
  SIGKILL it when the process that started it dies (``PR_SET_PDEATHSIG``), so a launcher that is
  itself killed leaves no node behind. The death signal follows the *thread* that forked the
  child: a caller that starts nodes from short-lived threads passes ``spawn`` to fork them from
  one long-lived thread.
* Ports for tests and benchmarks come from 20000-31999: below Linux's ephemeral range (32768+),
  so no outgoing connection takes one while we are not looking, and pysyncobj's Raft ports must
  be below 32768 anyway.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import token_http

HOST = "127.0.0.1"
PORT_LOW, PORT_HIGH = 20000, 32000
STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL
REAP_TIMEOUT_S = 20.0  # a SIGKILLed process is reaped within this

_NO_PROXY = token_http.opener()  # a token may go with the request: never to a redirect


# --------------------------------------------------------------------------- ports and programs


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a TCP socket can bind host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, rng: random.Random | None = None, low: int | None = None,
               high: int | None = None) -> list[int]:
    """``count`` distinct ports in [low, high) (default: PORT_LOW..PORT_HIGH) that were free a
    moment ago."""
    low = PORT_LOW if low is None else low
    high = PORT_HIGH if high is None else high
    rng = rng or random.Random(os.getpid() ^ time.monotonic_ns())
    chosen: list[int] = []
    for _attempt in range(count * 200):
        port = rng.randrange(low, high)
        if port not in chosen and port_is_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise OSError(f"found only {len(chosen)} of {count} free ports in {low}-{high - 1}")


def free_port_block(size: int, avoid: Iterable[int] = (), rng: random.Random | None = None) -> int:
    """The first of ``size`` consecutive free ports (``beanraft cluster`` takes base ports)."""
    rng = rng or random.Random()
    avoid = set(avoid)
    for _attempt in range(200):
        base = rng.randrange(PORT_LOW, PORT_HIGH - size)
        block = range(base, base + size)
        if not avoid.intersection(block) and all(port_is_free(p) for p in block):
            return base
    raise OSError(f"no block of {size} free ports")


def beanraft_program() -> list[str]:
    """The ``beanraft`` console script of this interpreter, else on PATH, else ``python -m``."""
    for script in (Path(sys.executable).with_name("beanraft"), shutil.which("beanraft")):
        if script and os.path.isfile(script) and os.access(script, os.X_OK):
            return [str(script)]
    return [sys.executable, "-m", "beanraft.node"]


def die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGKILL it when its parent thread dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def fetch_status(host: str, port: int, timeout_s: float = 1.0, digest: bool = False,
                 token: str | None = None) -> dict | None:
    """GET http://host:port/status (``?digest=1`` if ``digest``) as a dict, bypassing any
    proxy, or None. ``token``: the admin token, for a node whose reads need it."""
    query = "?digest=1" if digest else ""
    request = urllib.request.Request(f"http://{host}:{port}/status{query}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _NO_PROXY.open(request, timeout=timeout_s) as reply:
            doc = json.loads(reply.read(1 << 20))
            return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- layout


@dataclass
class NodeSpec:
    """Where one node listens and keeps its data."""

    name: str
    host: str
    client_port: int
    raft_port: int | None  # None: a single node without --raft
    http_port: int | None  # None: no --http endpoint
    data_dir: Path
    listen: str | None = None  # "unix:/path" instead of host:client_port
    exec_prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NS`

    @property
    def raft(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def client(self) -> tuple[str, int]:
        return (self.host, self.client_port)


def node_name(index: int) -> str:
    """The name of the index-th node (from 0): node1, node2, … everywhere."""
    return f"node{index + 1}"


def local_specs(size: int, data_root: Path, client: list[int], raft: list[int],
                http: list[int], host: str = HOST) -> list[NodeSpec]:
    """``size`` nodes on ``host`` with the given ports, data in ``data_root``/nodeI."""
    assert len(client) == len(raft) == len(http) == size
    return [NodeSpec(node_name(i), host, client[i], raft[i], http[i], Path(data_root) / node_name(i))
            for i in range(size)]


def serve_argv(spec: NodeSpec, peers: Iterable[str], program: list[str] | None = None,
               extra_args: Iterable[str] = ()) -> list[str]:
    """The ``beanraft serve`` command line that starts ``spec`` with these peers."""
    listen = ["-l", spec.listen] if spec.listen else ["-l", spec.host, "-p", str(spec.client_port)]
    argv = [*spec.exec_prefix, *(program or beanraft_program()), "serve", *listen,
            "-b", str(spec.data_dir)]
    if spec.raft_port is not None:
        argv += ["--raft", spec.raft]
    if spec.http_port is not None:
        argv += ["--http", spec.http]
    for peer in peers:
        argv += ["--peer", peer]
    return argv + list(extra_args)


# --------------------------------------------------------------------------- one process


class ServeProcess:
    """One ``beanraft serve`` child: start, signal, kill -9, stop, restart by its own PID.

    Output goes to ``log_path`` (appended across restarts, each start headed by its command
    line), or to this process's own stdout and stderr when ``log_path`` is None; with
    ``label_output`` there, each line is written to our stderr behind the node's name.
    """

    def __init__(self, spec: NodeSpec, peers: Iterable[str], *, extra_args: Iterable[str] = (),
                 program: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, cwd: Path | None = None, new_session: bool = False,
                 label_output: bool = False,
                 spawn: Callable[[Callable[[], subprocess.Popen]], subprocess.Popen] | None = None):
        self.spec = spec
        self.peers = list(peers)
        self.extra_args = tuple(extra_args)
        self.program = program or beanraft_program()
        self.env = env
        self.log_path = Path(log_path) if log_path else None
        self.cwd = cwd
        self.new_session = new_session  # own process group: a terminal's Ctrl-C does not reach it
        self.label_output = label_output
        self.spawn = spawn or (lambda popen: popen())
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def argv(self) -> list[str]:
        return serve_argv(self.spec, self.peers, self.program, self.extra_args)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts the process (not waiting for it to be ready)."""
        assert not self.alive(), f"{self.name} is already running"
        self.starts += 1
        argv = self.argv
        if self.log_path is None and self.label_output:
            self.process = self.spawn(lambda: self._popen(argv, subprocess.PIPE))
            threading.Thread(target=_relay, args=(self.process.stdout, f"{self.name}  "),
                             name=f"relay-{self.name}", daemon=True).start()
            return
        if self.log_path is None:
            self.process = self.spawn(lambda: self._popen(argv, None))
            return
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start {self.starts}: "
                      f"{' '.join(argv)}\n".encode())
            log.flush()
            self.process = self.spawn(lambda: self._popen(argv, log))

    def _popen(self, argv: list[str], log) -> subprocess.Popen:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT if log else None,
            env=self.env, cwd=self.cwd, start_new_session=self.new_session,
            preexec_fn=die_with_parent)

    def send(self, sig: int) -> None:
        assert self.alive(), f"{self.name} is not running"
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL (it ends a SIGSTOPped process too), then reap, so the ports are free again."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=REAP_TIMEOUT_S)

    def pause(self) -> None:
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            os.kill(self.process.pid, signal.SIGCONT)

    def terminate(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGCONT and SIGTERM, SIGKILL after ``grace_s``; a no-op if it is not running."""
        if not self.alive():
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def status(self, timeout_s: float = 1.0, digest: bool = False) -> dict | None:
        """GET /status (with the state digest if ``digest``), or None when the node does not
        answer in time."""
        return fetch_status(self.spec.host, self.spec.http_port, timeout_s, digest)

    def log_text(self, limit: int = 20000) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<{self.name} raft={self.spec.raft} pid={self.pid}>"


def _relay(pipe, label: str) -> None:
    """Copies a child's output to our stderr line by line, each behind ``label``, until EOF."""
    with pipe:
        for line in pipe:
            sys.stderr.buffer.write(label.encode() + line)
            sys.stderr.buffer.flush()


def stop_all(processes: Iterable[ServeProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every running process at once, then wait; SIGKILL those left after ``grace_s``."""
    processes = [p for p in processes if p.alive()]
    for p in processes:
        p.resume()
        p.process.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        try:
            p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
