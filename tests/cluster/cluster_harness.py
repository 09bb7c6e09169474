"""Real BeanRaft clusters for tests: ``beanraft serve`` processes on loopback, their HTTP endpoints,
their logs, and a small line client.

Theory of operation.
* A ``Cluster`` owns ``NodeProcess`` objects, each a child process started with the same secret
  (from the environment) and the other members' Raft addresses as ``--peer``. Each has a fresh
  data directory and a log file that collects its stdout and stderr across restarts.
* Starting, signalling and stopping a node is ``beanraft.node.launcher``'s, the launcher that
  ``beanraft cluster``, the fault harness and the benchmark use too; this module adds what
  tests wait for. Ports come from its free range below 32768; a start that still loses a race
  (a node exits before it is ready) is retried with new ports, a bounded number of times.
* Every wait polls with a bound in time *and* in count, and fails with what it saw last.
* Processes are only ever signalled through their own PID, and ask Linux to kill them if the test
  process dies (``PR_SET_PDEATHSIG``), so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from beanraft.node import launcher
from beanraft.node.launcher import HOST, NodeSpec, ServeProcess, die_with_parent, node_name, port_is_free

__all__ = ["HOST", "Cluster", "ClusterError", "LineClient", "NodeExited", "NodePorts", "NodeProcess",
           "beanraft_argv", "clean_env", "die_with_parent", "free_port_block", "free_ports", "http_get",
           "pid_alive", "port_is_free", "wait_for"]

POLL_S = 0.05
START_ATTEMPTS = 3
MAX_READS = 10_000  # recv calls per reply: the count bound beside each read's deadline

T = TypeVar("T")


class ClusterError(AssertionError):
    """A cluster did not reach the state a test waited for (the message says what it saw)."""


# --------------------------------------------------------------------------- ports and processes


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct loopback ports below 32768 that were free a moment ago."""
    try:
        return launcher.free_ports(count, rng)
    except OSError as error:
        raise ClusterError(str(error)) from None


def free_port_block(size: int, avoid: Iterable[int] = (), rng: random.Random | None = None) -> int:
    """The first of ``size`` consecutive free ports (for ``beanraft cluster``'s base ports)."""
    try:
        return launcher.free_port_block(size, avoid, rng)
    except OSError as error:
        raise ClusterError(str(error)) from None


def beanraft_argv() -> list[str]:
    """The ``beanraft`` console script of this interpreter, else ``python -m beanraft.node``."""
    return launcher.beanraft_program()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any BEANRAFT_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEANRAFT_")}
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(what: str, probe: Callable[[], T], timeout_s: float, poll_s: float = POLL_S,
             describe: Callable[[], str] | None = None) -> T:
    """Polls ``probe`` until it returns something truthy; fails after ``timeout_s`` seconds.

    Bounded twice: by the deadline and by a maximum number of polls.
    """
    deadline = time.monotonic() + timeout_s
    for _poll in range(int(timeout_s / poll_s) + 2):
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    seen = f"; last seen: {describe()}" if describe else ""
    raise ClusterError(f"timed out after {timeout_s} s waiting for {what}{seen}")


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int | None, str]:
    """(HTTP status, body) of GET http://127.0.0.1:port/path; (None, reason) if unreachable."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as error:
        return None, repr(error)


# --------------------------------------------------------------------------- one node


@dataclass
class NodePorts:
    client: int
    raft: int
    http: int


class NodeProcess(ServeProcess):
    """One ``beanraft serve`` child process: started, killed and restarted by its own PID."""

    def __init__(self, name: str, ports: NodePorts, peers: list[str], workdir: Path,
                 env: dict[str, str], extra_args: tuple[str, ...] = (), listen: str | None = None,
                 data_root: Path | None = None, launcher: list[str] | None = None):
        spec = NodeSpec(name, HOST, ports.client, ports.raft, ports.http,
                        (data_root or workdir) / name, listen=listen)
        super().__init__(spec, peers, extra_args=extra_args, program=launcher, env=env,
                         log_path=workdir / f"{name}.log")
        self.ports = ports

    @property
    def launcher(self) -> list[str]:
        """The command to which ``serve …`` is added (a test may swap it before a restart)."""
        return self.program

    @launcher.setter
    def launcher(self, program: list[str]) -> None:
        self.program = program

    @property
    def data_dir(self) -> Path:
        return self.spec.data_dir

    @property
    def listen(self) -> str | None:
        return self.spec.listen  # "unix:/path" instead of 127.0.0.1:<client port>

    @property
    def raft_address(self) -> str:
        return self.spec.raft

    @property
    def http_address(self) -> str:
        return self.spec.http

    @property
    def client_address(self) -> tuple[str, int] | str:
        if self.listen:
            return self.listen[len("unix:"):]
        return (HOST, self.ports.client)

    @property
    def running(self) -> bool:
        return self.alive()

    def signal(self, sig: int) -> None:
        self.send(sig)

    def kill(self) -> None:
        """SIGKILL (no goodbye to anyone), then reap, so its ports are free for a restart."""
        assert self.running, f"{self.name} is not running"
        super().kill()

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s; a no-op if the process is not running."""
        self.terminate(grace_s=5)

    def http(self, path: str, timeout_s: float = 2.0) -> tuple[int | None, str]:
        return http_get(self.ports.http, path, timeout_s)

    def status(self, digest: bool = False) -> dict | None:
        """GET /status as a dict (with the state digest if ``digest``), or None if the node
        does not answer."""
        code, body = self.http("/status?digest=1" if digest else "/status")
        return json.loads(body) if code == 200 else None

    def is_ready(self) -> bool:
        return self.http("/readyz")[0] == 200

    def __repr__(self) -> str:
        return f"<node {self.name} raft={self.raft_address} pid={self.pid}>"


# --------------------------------------------------------------------------- a cluster


class Cluster:
    """N nodes that know each other; ``start()`` returns once every /readyz answers 200."""

    def __init__(self, workdir: Path, size: int = 3, extra_args: tuple[str, ...] = (),
                 secret: str | None = None, unix: bool = False, ready_timeout_s: float = 40.0,
                 data_root: Path | None = None, socket_dir: Path | None = None,
                 launchers: dict[int, list[str]] | None = None):
        self.workdir = Path(workdir)  # logs, and the data and UNIX sockets unless told otherwise
        self.data_root = Path(data_root) if data_root else None
        self.socket_dir = Path(socket_dir) if socket_dir else self.workdir  # paths <= 107 bytes
        self.size = size
        self.extra_args = tuple(extra_args)
        self.secret = secret or secrets.token_urlsafe(32)
        self.unix = unix
        self.ready_timeout_s = ready_timeout_s
        self.nodes: list[NodeProcess] = []
        self.retired: list[NodeProcess] = []  # from start attempts that lost a port race
        self.launchers = launchers or {}  # argv that starts the i-th node (from 0) instead

    # -- lifecycle -------------------------------------------------------------------------

    def _build(self) -> None:
        ports = free_ports(3 * self.size)
        layout = [NodePorts(*ports[3 * i: 3 * i + 3]) for i in range(self.size)]
        rafts = [f"{HOST}:{p.raft}" for p in layout]
        # Every node's HTTP address, for the dashboard's failover (a node skips its own).
        env = clean_env(BEANRAFT_CLUSTER_SECRET=self.secret,
                        BEANRAFT_PEER_HTTP=" ".join(f"{HOST}:{p.http}" for p in layout))
        attempt = len(self.retired) // self.size
        self.nodes = []
        for i, node_ports in enumerate(layout):
            name = node_name(i) if attempt == 0 else f"{node_name(i)}-try{attempt + 1}"
            listen = f"unix:{self.socket_dir / name}.sock" if self.unix else None
            peers = [r for j, r in enumerate(rafts) if j != i]
            self.nodes.append(NodeProcess(name, node_ports, peers, self.workdir, env,
                                          self.extra_args, listen, self.data_root,
                                          self.launchers.get(i)))

    def start(self) -> "Cluster":
        """Starts every node and waits until all are ready; retries if a node dies at start."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(START_ATTEMPTS):
            self._build()
            for node in self.nodes:
                node.start()
            try:
                self.wait_ready(timeout_s=self.ready_timeout_s)
                if not self.launchers:
                    # The switch to the agreed rules version is an entry of its own, a second
                    # or so after the first leader: a test that counts entries must not see it.
                    self.wait_rules_settled()
                return self
            except NodeExited:
                if attempt == START_ATTEMPTS - 1:
                    raise
                self.stop()
                self.retired += self.nodes
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stops every node this cluster started, each by its PID."""
        for node in self.nodes + self.retired:
            node.stop()

    def kill(self, node: NodeProcess) -> None:
        node.kill()

    def restart(self, node: NodeProcess, timeout_s: float = 30.0) -> None:
        """Starts a stopped or killed node again on its ports and data, and waits until it is ready."""
        node.stop()
        node.start()
        self.wait_ready([node], timeout_s=timeout_s)

    # -- views -----------------------------------------------------------------------------

    @property
    def running(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.running]

    def by_raft(self, address: str) -> NodeProcess:
        return next(n for n in self.nodes if n.raft_address == address)

    def statuses(self, nodes: Iterable[NodeProcess] | None = None,
                 digest: bool = False) -> dict[str, dict | None]:
        return {n.name: n.status(digest) for n in (self.running if nodes is None else nodes)}

    def describe(self) -> str:
        """One line per node: process state and the interesting part of its /status."""
        lines = []
        for node in self.nodes:
            doc = node.status() if node.running else None
            state = "running" if node.running else f"exited {node.process.poll() if node.process else '-'}"
            if doc:
                keep = {k: doc.get(k) for k in ("role", "leader", "term", "commit_index",
                                                 "applied_index", "ready")}
                lines.append(f"{node.name} ({state}): {keep}")
            else:
                lines.append(f"{node.name} ({state}): no /status")
        return "; ".join(lines)

    def logs(self) -> str:
        parts = []
        for node in self.retired + self.nodes:
            parts.append(f"===== {node.name} (pid {node.pid}, raft {node.raft_address}) =====\n"
                         + node.log_text())
        return "\n".join(parts)

    # -- waits -----------------------------------------------------------------------------

    def wait_ready(self, nodes: list[NodeProcess] | None = None, timeout_s: float = 30.0) -> None:
        """Waits until /readyz is 200 on ``nodes`` (default: all); fails early if one exits."""
        nodes = list(self.nodes if nodes is None else nodes)

        def all_ready() -> bool:
            for node in nodes:
                if not node.running:
                    raise NodeExited(f"{node.name} exited with {node.process.poll()} before it "
                                     f"was ready:\n{node.log_text(4000)}")
            return all(node.is_ready() for node in nodes)

        wait_for("every node's /readyz to answer 200", all_ready, timeout_s, poll_s=0.1,
                 describe=self.describe)

    def wait_rules_settled(self, timeout_s: float = 15.0) -> int:
        """Waits until every running node has heard every member's rules version, applies at
        least the version they agree to (replication/rules.py; a switch is for good) and the
        same one as the others; returns it."""

        def settled() -> int | None:
            docs = self.statuses()
            if not docs or any(d is None for d in docs.values()):
                return None
            rules = [d["rules"] for d in docs.values()]
            if any(None in r["members"].values() or r["applied"] < r["agreed"] for r in rules):
                return None
            return rules[0]["applied"] if len({r["applied"] for r in rules}) == 1 else None

        return wait_for("every node to apply the agreed rules version", settled, timeout_s,
                        poll_s=0.1, describe=self.describe)

    def leader(self, timeout_s: float = 20.0) -> NodeProcess:
        """The node that is leader, once every running node names it as the leader."""

        def agreed() -> NodeProcess | None:
            docs = self.statuses()
            if not docs or any(d is None for d in docs.values()):
                return None
            leaders = {d["leader"] for d in docs.values()}
            if len(leaders) != 1 or None in leaders:
                return None
            node = self.by_raft(leaders.pop())
            return node if docs.get(node.name, {}).get("role") == "leader" else None

        return wait_for("all running nodes to agree on a leader", agreed, timeout_s,
                        poll_s=0.1, describe=self.describe)

    def followers(self) -> list[NodeProcess]:
        leader = self.leader()
        return [n for n in self.running if n is not leader]

    def wait_links_up(self, timeout_s: float = 15.0) -> None:
        """Waits until every running node reports every peer connected."""

        def all_up() -> bool:
            docs = self.statuses()
            return all(d and all(p["connected"] for p in d["peers"]) for d in docs.values())

        wait_for("every peer link up", all_up, timeout_s, poll_s=0.1, describe=self.describe)

    def converged(self, nodes: list[NodeProcess] | None = None, timeout_s: float = 20.0) -> dict[str, dict]:
        """Polls /status until ``nodes`` (default: running) report the same ``digest_index``.

        Returns the documents of that poll, so a test can compare their digests: a digest is read
        under the Raft lock together with the index it was taken at.
        """
        nodes = list(self.running if nodes is None else nodes)

        def same_index() -> dict | None:
            docs = self.statuses(nodes, digest=True)
            if any(d is None for d in docs.values()):
                return None
            if len({d["digest_index"] for d in docs.values()}) == 1:
                return docs
            return None

        return wait_for("equal applied indexes", same_index, timeout_s, poll_s=0.1,
                        describe=self.describe)


class NodeExited(ClusterError):
    """A node process ended while the cluster waited for it."""


# --------------------------------------------------------------------------- a line client


class LineClient:
    """A blocking beanstalk client over raw bytes, for tests that need to hold a reply back.

    Every read has a deadline; running out of time raises ``TimeoutError`` with what did arrive.
    """

    def __init__(self, address: tuple[str, int] | str, timeout_s: float = 10.0):
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout_s)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address, timeout=timeout_s)
        self.timeout_s = timeout_s
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply in time; received {self.buffer!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"no complete reply in time; received {self.buffer!r}") from None
        if not chunk:
            raise ConnectionError(f"connection closed; received {self.buffer!r}")
        self.buffer += chunk

    def read_line(self, timeout_s: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        for _read in range(MAX_READS):
            if b"\r\n" in self.buffer:
                break
            self._fill(deadline)
        else:
            raise TimeoutError(f"no line after {MAX_READS} reads; received {self.buffer[:200]!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_exactly(self, size: int, timeout_s: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        for _read in range(MAX_READS):
            if len(self.buffer) >= size:
                break
            self._fill(deadline)
        else:
            raise TimeoutError(f"not {size} bytes after {MAX_READS} reads")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def request(self, line: bytes, timeout_s: float | None = None) -> bytes:
        self.send(line + b"\r\n")
        return self.read_line(timeout_s)

    def put(self, body: bytes, pri: int = 0, delay: int = 0, ttr: int = 60) -> int:
        reply = self.request(b"put %d %d %d %d\r\n%s" % (pri, delay, ttr, len(body), body))
        assert reply.startswith(b"INSERTED "), reply
        return int(reply.split()[1])

    def read_job(self, timeout_s: float | None = None) -> tuple[int, bytes]:
        """Reads a ``RESERVED <id> <bytes>`` reply and its body (after a ``reserve`` was sent)."""
        line = self.read_line(timeout_s)
        assert line.startswith(b"RESERVED "), line
        _, job_id, size = line.split()
        return int(job_id), self.read_exactly(int(size) + 2, timeout_s)[:-2]

    def yaml(self, command: bytes) -> dict[str, str]:
        """A stats command's YAML mapping as str -> str."""
        line = self.request(command)
        assert line.startswith(b"OK "), f"{command!r} -> {line!r}"
        body = self.read_exactly(int(line[3:]) + 2)
        result = {}
        for entry in body[4:-2].decode().splitlines():
            key, _, value = entry.partition(": ")
            result[key] = value
        return result

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "LineClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
