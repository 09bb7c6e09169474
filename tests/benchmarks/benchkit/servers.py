"""The servers measured: beanstalkd, one BeanRaft node and a three-node cluster, started
through ``beanraft.node.launcher`` where they are BeanRaft, stopped by PID, and waited for."""

from __future__ import annotations

import ctypes
import itertools
import os
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from beanraft.node.launcher import (PORT_HIGH, PORT_LOW, NodeSpec, ServeProcess, beanraft_program,
                                    fetch_status, local_specs, node_name, port_is_free)

from .common import HOST, LEADER_TIMEOUT, READY_TIMEOUT, STOP_TIMEOUT, TargetFailed, perf


_libc = None


def _load_libc():
    global _libc
    if sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = None


def _child_setup():
    # Runs in the child between fork and exec: if this benchmark dies without
    # cleaning up (e.g. SIGKILL), the kernel sends SIGTERM to the server.
    if _libc is not None:
        _libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


class Procs:
    """Every process this script started; stop() / stop_all() act by PID."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, str] = {}

    def spawn(self, cmd: list[str], log_path: str, cwd: str) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            p = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # own process group (pgid == pid); no terminal SIGINT
                preexec_fn=_child_setup,
            )
        self.procs.append(p)
        self.logs[p.pid] = log_path
        return p

    def start_node(self, spec: NodeSpec, peers: list[str], program: list[str], extra: list[str],
                   cwd: str, log_name: str) -> subprocess.Popen:
        """Starts one ``beanraft serve`` through the launcher ``beanraft cluster`` uses too."""
        node = ServeProcess(spec, peers, extra_args=extra, program=program,
                            log_path=Path(cwd) / log_name, cwd=Path(cwd), new_session=True)
        node.start()
        self.procs.append(node.process)
        self.logs[node.pid] = str(node.log_path)
        return node.process

    def log_tail(self, p: subprocess.Popen, lines: int = 3) -> str:
        try:
            with open(self.logs[p.pid], "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                text = f.read().decode("utf-8", "replace")
        except (OSError, KeyError):
            return ""
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # the group we created for this PID (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            self._signal_group(p.pid, signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal_group(p.pid, signal.SIGKILL)
                try:
                    p.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    print(f"warning: PID {p.pid} did not die after SIGKILL", file=sys.stderr)
        else:
            # leader already gone; kill anything it left in its own group
            self._signal_group(p.pid, signal.SIGKILL)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping PID {p.pid}: {e}", file=sys.stderr)


class Ports:
    """Hands out free TCP ports on 127.0.0.1 below the ephemeral range, never one twice a run."""

    def __init__(self, lo: int = PORT_LOW, hi: int = PORT_HIGH):
        self.lo, self.hi = lo, hi
        self.next = random.randrange(lo, hi)
        self.used: set[int] = set()

    def take(self) -> int:
        for _ in range(self.hi - self.lo):
            port = self.next
            self.next = self.lo + (self.next + 1 - self.lo) % (self.hi - self.lo)
            if port not in self.used and port_is_free(port):
                self.used.add(port)
                return port
        raise TargetFailed(f"no free port in {self.lo}-{self.hi}")


def proc_cpu_seconds(pids: list[int]) -> float | None:
    """CPU seconds of the processes ``pids`` and of their children: those running now (a lone
    node's sync helper, a snapshot writer) and those they reaped."""
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            return None
        total += _cpu_ticks(fields) + int(fields[13]) + int(fields[14])  # + cutime + cstime
        try:
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            children = []
        for child in children:
            child_fields = _stat_fields(child)
            if child_fields is not None:  # else it exited: counted in cutime once reaped
                total += _cpu_ticks(child_fields)
    return total / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def _cpu_ticks(fields: list[bytes]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime


def probe_ready(port: int) -> bool:
    """True when `list-tube-used` answers `USING default`."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.settimeout(1.0)
            s.sendall(b"list-tube-used\r\n")
            data = b""
            for _ in range(16):  # bounded: at most 16 reads
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
                if b"\r\n" in data:
                    break
            return data == b"USING default\r\n"
    except OSError:
        return False


def wait_ready(procs: Procs, nodes: list[tuple[subprocess.Popen, int]], what: str,
               timeout: float = READY_TIMEOUT) -> None:
    pending = list(nodes)
    deadline = perf() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        for p, port in list(pending):
            rc = p.poll()
            if rc is not None:
                tail = procs.log_tail(p)
                raise TargetFailed(f"{what} exited with code {rc} before it was ready"
                                   + (f" (output: {tail})" if tail else " (no output)"))
            if probe_ready(port):
                pending.remove((p, port))
        if not pending or perf() > deadline:
            break
        time.sleep(0.05)
    if pending:
        ports = ", ".join(str(port) for _, port in pending)
        raise TargetFailed(f"{what} not ready after {timeout:.0f} s "
                           f"(no 'USING default' on port {ports})")




@dataclass
class Endpoint:
    label: str  # row name in the table
    port: int
    pids: list[int]  # server processes whose CPU is counted
    procs: list[subprocess.Popen]


class Ctx:
    def __init__(self, args, procs: Procs, ports: Ports, workdir: str):
        self.args, self.procs, self.ports, self.workdir = args, procs, ports, workdir
        self.serial = itertools.count(1)

    def new_dir(self, name: str) -> str:
        d = os.path.join(self.workdir, f"{name}-{next(self.serial)}")
        os.makedirs(d)
        return d


class Target:
    name = ""
    labels: list[str] = []
    fresh_per_endpoint = False  # True: each endpoint is measured on a target started for it

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.started: list[subprocess.Popen] = []
        self.notes: list[str] = []

    def start(self) -> list[Endpoint]:
        raise NotImplementedError

    def measured_labels(self) -> list[str]:
        """The rows this target's endpoints give."""
        return self.labels

    def stop(self) -> None:
        for p in self.started:
            self.ctx.procs.stop(p)
        self.started = []

    def after(self, endpoints: list[Endpoint]) -> None:
        """Called after all endpoints were measured (cluster: leader check)."""


class BeanstalkdTarget(Target):
    def __init__(self, ctx: Ctx, binlog: bool, fsync_each: bool = True):
        super().__init__(ctx)
        self.binlog, self.fsync_each = binlog, fsync_each
        self.name = ("beanstalkd" if fsync_each else "beanstalkd-b") if binlog else "beanstalkd-mem"
        self.labels = [self.name]

    def start(self) -> list[Endpoint]:
        exe = self.ctx.args.beanstalkd
        if not os.access(exe, os.X_OK):
            raise TargetFailed(f"{exe} not found or not executable")
        port = self.ctx.ports.take()
        d = self.ctx.new_dir(self.name)
        cmd = [exe, "-l", HOST, "-p", str(port)]
        if self.binlog:
            binlog = os.path.join(d, "binlog")
            os.makedirs(binlog)
            cmd += ["-b", binlog]
            if self.fsync_each:
                cmd += ["-f", "0"]  # fsync before replying
            # else beanstalkd's default: fsync at most every 50 ms, replies before it
        p = self.ctx.procs.spawn(cmd, os.path.join(d, "server.log"), d)
        self.started.append(p)
        wait_ready(self.ctx.procs, [(p, port)], self.name)
        return [Endpoint(self.name, port, [p.pid], [p])]


def beanraft_command(args) -> list[str]:
    """--beanraft-cmd, else the launcher's choice (the console script, else ``python -m``)."""
    return shlex.split(args.beanraft_cmd) if args.beanraft_cmd else beanraft_program()


class BeanraftTarget(Target):
    name = "beanraft"
    labels = ["beanraft"]

    def start(self) -> list[Endpoint]:
        port = self.ctx.ports.take()
        d = self.ctx.new_dir(self.name)
        spec = NodeSpec(self.name, HOST, port, None, None, Path(d) / "data")
        spec.data_dir.mkdir()
        node = self.ctx.procs.start_node(spec, [], beanraft_command(self.ctx.args), [], d, "server.log")
        self.started.append(node)
        wait_ready(self.ctx.procs, [(node, port)], f"`{shlex.join(node.args[:node.args.index('serve') + 1])}`")
        return [Endpoint(self.name, port, [node.pid], [node])]


class ClusterTarget(Target):
    """Three nodes; the load runs through the leader, then through a follower, each on a
    cluster started for it. On one cluster the second endpoint's load would meet what the
    first left behind: a journal grown by hundreds of thousands of commands, whose snapshots
    three nodes then write on two cores while it runs (its put rate fell by a quarter)."""

    name = "cluster"
    labels = ["cluster-leader", "cluster-follower"]
    size = 3
    fresh_per_endpoint = True

    def __init__(self, ctx: Ctx, only: str | None = None):
        super().__init__(ctx)
        self.only = only  # the one endpoint to return (fresh_per_endpoint)

    def measured_labels(self) -> list[str]:
        return self.labels if self.only is None else [self.only]

    def start(self) -> list[Endpoint]:
        ports = self.ctx.ports
        client = [ports.take() for _ in range(self.size)]
        raft = [ports.take() for _ in range(self.size)]
        http = [ports.take() for _ in range(self.size)]
        d = self.ctx.new_dir(self.name)
        secret = os.path.join(d, "cluster.secret")  # peer traffic sealed, as in production
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))  # owner only: serve refuses a wider secret
        security = ["--insecure"] if self.ctx.args.insecure_cluster else ["--cluster-secret-file", secret]
        specs = local_specs(self.size, Path(d), client, raft, http)
        nodes = []
        for spec in specs:
            spec.data_dir.mkdir()
            peers = [s.raft for s in specs if s is not spec]
            nodes.append(self.ctx.procs.start_node(spec, peers, beanraft_command(self.ctx.args),
                                                   security, d, f"{spec.name}.log"))
            self.started.append(nodes[-1])
        wait_ready(self.ctx.procs, list(zip(nodes, client)), "cluster node (`beanraft serve --raft`)")
        self.http, self.client, self.nodes = http, client, nodes
        leader, roles = self.find_leader(LEADER_TIMEOUT)
        if leader is None:
            raise TargetFailed(f"no single leader on GET /status after {LEADER_TIMEOUT:.0f} s "
                               f"(roles: {roles})")
        follower = next((i for i in range(self.size) if i != leader and roles[i] == "follower"),
                        next(i for i in range(self.size) if i != leader))
        self.leader = leader
        pids = [p.pid for p in nodes]
        endpoints = [Endpoint("cluster-leader", client[leader], pids, nodes),
                     Endpoint("cluster-follower", client[follower], pids, nodes)]
        return [e for e in endpoints if self.only in (None, e.label)]

    def roles(self) -> list[str | None]:
        out = []
        for port in self.http:
            st = fetch_status(HOST, port)
            out.append(str(st.get("role")) if st else None)
        return out

    def find_leader(self, timeout: float) -> tuple[int | None, list]:
        deadline = perf() + timeout
        roles: list = []
        for _ in range(int(timeout / 0.2) + 1):
            for p in self.nodes:
                if p.poll() is not None:
                    raise TargetFailed(f"cluster node PID {p.pid} exited with code {p.returncode}"
                                       f" while electing (output: {self.ctx.procs.log_tail(p)})")
            roles = self.roles()
            leaders = [i for i, r in enumerate(roles) if r == "leader"]
            if len(leaders) == 1:
                return leaders[0], roles
            if perf() > deadline:
                break
            time.sleep(0.2)
        return None, roles

    def after(self, endpoints: list[Endpoint]) -> None:
        leader, roles = self.find_leader(2.0)
        if leader != self.leader:
            self.notes.append(f"leader changed during the run: {node_name(self.leader)} -> "
                              f"{'none' if leader is None else node_name(leader)} (roles {roles})")




def make_target(name: str, ctx: Ctx, only: str | None = None) -> Target:
    if name == "beanstalkd":
        return BeanstalkdTarget(ctx, binlog=True)
    if name == "beanstalkd-b":
        return BeanstalkdTarget(ctx, binlog=True, fsync_each=False)
    if name == "beanstalkd-mem":
        return BeanstalkdTarget(ctx, binlog=False)
    if name == "beanraft":
        return BeanraftTarget(ctx)
    return ClusterTarget(ctx, only)


