#!/usr/bin/env python3
"""Throughput / latency benchmark: BeanRaft versus beanstalkd 1.12.

A plain script, not a pytest module (pytest only collects test_*.py / *_test.py).
Run it from the repository root:

    python tests/benchmarks/bench.py --targets beanstalkd,beanraft --seconds 5

It starts every server itself on 127.0.0.1 (free ports, fresh data directories
under a temporary directory), drives it over raw sockets, prints one table row
per (target, workload) with the ratio of each figure to beanstalkd's measured in
the same run, and stops every process it started, by PID, also on Ctrl-C,
SIGTERM or errors.  See tests/benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import ctypes
import datetime
import gc
import itertools
import json
import math
import os
import platform
import random
import shlex
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path

from beanraft.node.launcher import (NodeSpec, ServeProcess, beanraft_program, fetch_status, local_specs,
                                    node_name)

HOST = "127.0.0.1"
DEFAULT_BEANSTALKD = "/usr/bin/beanstalkd"
READY_TIMEOUT = 20.0  # a server must answer `list-tube-used` within this
LEADER_TIMEOUT = 20.0  # a cluster must report a leader within this (after ready)
STOP_TIMEOUT = 5.0  # SIGTERM -> SIGKILL grace period
CONNECT_TIMEOUT = 10.0  # opening all load connections
IO_TIMEOUT = 10.0  # any single reply
MAX_LINE = 1 << 20  # a reply line longer than this is a protocol error
PORT_RANGE = (21000, 32000)  # below the ephemeral range (32768+) used by clients
MAX_OPS_DEFAULT = 5_000_000  # per workload, on top of the time cap
MAX_PRELOAD_DEFAULT = 2_000_000
TTR = 120

WORKLOADS = [
    # key, table label
    ("put", "put pipelined"),
    ("rd", "reserve+delete pipelined"),
    ("put1", "put 1-at-a-time"),
    ("rd1", "reserve+delete 1-at-a-time"),
]
WORKLOAD_LABEL = dict(WORKLOADS)
WORKLOAD_LABEL["all"] = "(all workloads)"
TARGET_CHOICES = ("beanstalkd", "beanstalkd-mem", "beanraft", "cluster")

perf = time.perf_counter


class BenchError(Exception):
    """A workload could not be measured (protocol error, timeout, ...)."""


class TargetFailed(Exception):
    """A target could not be started."""


# --------------------------------------------------------------------------
# Processes and ports
# --------------------------------------------------------------------------

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
    """Hands out free TCP ports on 127.0.0.1 below the ephemeral range."""

    def __init__(self, lo: int = PORT_RANGE[0], hi: int = PORT_RANGE[1]):
        self.lo, self.hi = lo, hi
        self.next = random.randrange(lo, hi)
        self.used: set[int] = set()

    def take(self) -> int:
        for _ in range(self.hi - self.lo):
            port = self.next
            self.next = self.lo + (self.next + 1 - self.lo) % (self.hi - self.lo)
            if port in self.used:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, port))
            except OSError:
                continue
            finally:
                s.close()
            self.used.add(port)
            return port
        raise TargetFailed(f"no free port in {self.lo}-{self.hi}")


def proc_cpu_seconds(pids: list[int]) -> float | None:
    total = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rfind(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / tck  # utime + stime
    return total


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


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

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

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.started: list[subprocess.Popen] = []
        self.notes: list[str] = []

    def start(self) -> list[Endpoint]:
        raise NotImplementedError

    def stop(self) -> None:
        for p in self.started:
            self.ctx.procs.stop(p)
        self.started = []

    def after(self, endpoints: list[Endpoint]) -> None:
        """Called after all endpoints were measured (cluster: leader check)."""


class BeanstalkdTarget(Target):
    def __init__(self, ctx: Ctx, binlog: bool):
        super().__init__(ctx)
        self.binlog = binlog
        self.name = "beanstalkd" if binlog else "beanstalkd-mem"
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
            cmd += ["-b", binlog, "-f", "0"]  # fsync before replying
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
    name = "cluster"
    labels = ["cluster-leader", "cluster-follower"]
    size = 3

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
        return [Endpoint("cluster-leader", client[leader], pids, nodes),
                Endpoint("cluster-follower", client[follower], pids, nodes)]

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


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------

@dataclass
class Result:
    target: str
    workload: str
    ok: bool = True
    error: str = ""
    ops: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    server_cpu_pct: float | None = None
    client_cpu_pct: float | None = None
    error_replies: int = 0
    first_error_reply: str = ""
    notes: list[str] = field(default_factory=list)
    rounds: int = 1


def latency_stats(res: Result, lat: array) -> None:
    if not lat:
        return
    s = sorted(lat)
    n = len(s)

    def pct(q: float) -> float:
        return s[max(0, min(n - 1, math.ceil(q * n) - 1))] * 1000.0  # nearest rank

    res.p50_ms, res.p99_ms = pct(0.50), pct(0.99)
    res.mean_ms = math.fsum(s) / n * 1000.0


class CpuMeter:
    def __init__(self, pids: list[int]):
        self.pids = pids

    def start(self):
        self.t, self.c, self.s = perf(), time.process_time(), proc_cpu_seconds(self.pids)

    def stop(self, res: Result):
        wall = perf() - self.t
        c, s = time.process_time(), proc_cpu_seconds(self.pids)
        if wall > 0:
            res.client_cpu_pct = (c - self.c) / wall * 100.0
            if s is not None and self.s is not None:
                res.server_cpu_pct = (s - self.s) / wall * 100.0


def put_command(body: bytes) -> bytes:
    return b"put 1024 0 %d %d\r\n%s\r\n" % (TTR, len(body), body)


# ---------------- pipelined load (asyncio, one process, raw protocol) ----------------

class Run:
    """State shared by the connections of one pipelined run."""

    def __init__(self, loop, max_ops: int):
        self.idle = asyncio.Event()
        self.budget = max_ops  # commands (put / reserve) still allowed
        self.stopping = False
        self.limit = math.inf  # completions after this instant are not counted
        self.inflight = 0
        self.done = 0  # successful completions within the window
        self.ok_total = 0  # successful completions, also after the window
        self.lat = array("d")
        self.record_latency = True
        self.errors = 0
        self.first_error = ""
        self.failure = ""
        self.drained_at: float | None = None
        self.finished_at: float | None = None

    def take(self, k: int) -> int:
        if self.stopping or k <= 0:
            return 0
        if k >= self.budget:
            k = self.budget
            self.stopping = True  # budget exhausted: finish when idle
        self.budget -= k
        self.inflight += k
        return k

    def check_idle(self, now: float) -> None:
        if self.stopping and self.inflight <= 0 and not self.idle.is_set():
            self.finished_at = now
            self.idle.set()

    def error_reply(self, line: bytes) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = line[:120].decode("ascii", "replace")

    def fail(self, msg: str) -> None:
        if not self.failure:
            self.failure = msg
        self.stopping = True
        self.idle.set()

    def drained(self, now: float) -> None:
        if self.drained_at is None:
            self.drained_at = now
            self.limit = min(self.limit, now)
        self.stopping = True


class Conn(asyncio.Protocol):
    def __init__(self, run: Run, setup: bytes, expect: tuple[bytes, ...], window: int):
        self.run = run
        self.setup = setup
        self.expect = list(expect)  # prefixes of the setup replies still due
        self.window = window
        self.buf = bytearray()
        self.tr: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "unretrieved"
        self.closing = False

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.setup)

    def connection_lost(self, exc):
        if not self.closing:
            msg = f"connection closed by the server ({exc})" if exc else "connection closed by the server"
            if not self.ready.done():
                self.ready.set_exception(BenchError(msg))
            self.run.fail(msg)

    def close(self):
        self.closing = True
        if self.tr is not None:
            self.tr.abort()

    def data_received(self, data):
        buf = self.buf
        buf += data
        if self.expect:
            while self.expect:
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                line = bytes(buf[:i])
                del buf[:i + 2]
                want = self.expect.pop(0)
                if not line.startswith(want):
                    err = BenchError(f"setup: expected {want.decode().strip()}..., got {line[:80]!r}")
                    if not self.ready.done():
                        self.ready.set_exception(err)
                    self.run.fail(str(err))
                    return
            if not self.ready.done():
                self.ready.set_result(None)
            if not buf:
                return
        self.on_data(buf)
        if len(buf) > MAX_LINE:
            self.run.fail(f"reply longer than {MAX_LINE} bytes without CRLF")

    def on_data(self, buf: bytearray):
        raise NotImplementedError


class PutConn(Conn):
    def __init__(self, run, tube: bytes, body: bytes, window: int):
        super().__init__(run, b"use %s\r\n" % tube, (b"USING ",), window)
        self.cmd = put_command(body)
        self.batch = memoryview(self.cmd * window)
        self.sent = collections.deque()
        self.inflight = 0

    def send(self, k: int, now: float):
        self.tr.write(self.batch[: k * len(self.cmd)])
        self.sent.extend(itertools.repeat(now, k))
        self.inflight += k

    def start(self, now: float):
        k = self.run.take(self.window)
        if k:
            self.send(k, now)

    def on_data(self, buf: bytearray):
        end = buf.rfind(b"\r\n")
        if end < 0:
            return
        end += 2
        n = buf.count(b"\r\n", 0, end)  # put replies are single lines
        ok = buf.count(b"INSERTED ", 0, end)
        run = self.run
        if ok != n:
            pos = 0
            for _ in range(n):
                i = buf.find(b"\r\n", pos)
                if not buf.startswith(b"INSERTED ", pos):
                    run.error_reply(bytes(buf[pos:i]))
                pos = i + 2
        del buf[:end]
        if n > self.inflight:
            run.fail(f"{n} replies for {self.inflight} commands in flight (protocol desync; "
                     f"first error reply: {run.first_error!r})")
            return
        now = perf()
        self.inflight -= n
        run.inflight -= n
        popleft = self.sent.popleft
        if now <= run.limit:
            run.done += ok
            if run.record_latency:
                append = run.lat.append
                for _ in range(n):
                    append(now - popleft())
            else:
                for _ in range(n):
                    popleft()
        else:
            for _ in range(n):
                popleft()
        run.ok_total += ok
        if run.errors > 100 and run.errors > run.ok_total:
            run.fail(f"too many error replies ({run.errors}; first: {run.first_error!r})")
            return
        k = run.take(n)
        if k:
            self.send(k, now)
        run.check_idle(now)


RESERVE0 = b"reserve-with-timeout 0\r\n"


class ReserveDeleteConn(Conn):
    """Keeps `window` reserves in flight; sends `delete` as RESERVED replies arrive."""

    def __init__(self, run, tube: bytes, window: int):
        super().__init__(run, b"watch %s\r\nignore default\r\n" % tube, (b"WATCHING ", b"WATCHING "), window)
        self.res_t = collections.deque()  # send time of each reserve in flight
        self.del_t = collections.deque()  # reserve send time of each delete in flight
        self.batch = RESERVE0 * window

    def start(self, now: float):
        k = self.run.take(self.window)
        if k:
            self.tr.write(self.batch[: k * len(RESERVE0)])
            self.res_t.extend(itertools.repeat(now, k))

    def on_data(self, buf: bytearray):
        run = self.run
        now = perf()
        in_window = now <= run.limit
        res_t, del_t = self.res_t, self.del_t
        lat = run.lat.append
        out = []
        nres = replies = done = 0
        pos, size = 0, len(buf)
        while True:  # bounded: every pass consumes at least one reply from buf
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            if buf.startswith(b"RESERVED ", pos):
                sp = buf.find(b" ", pos + 9, i)
                if sp < 0:
                    run.fail(f"bad RESERVED line {bytes(buf[pos:i])[:80]!r}")
                    return
                try:
                    nbytes = int(buf[sp + 1:i])
                except ValueError:
                    run.fail(f"bad RESERVED line {bytes(buf[pos:i])[:80]!r}")
                    return
                end = i + 4 + nbytes
                if end > size:
                    break  # body not complete yet
                if not res_t:
                    run.fail("RESERVED without a reserve in flight (protocol desync)")
                    return
                out.append(b"delete " + buf[pos + 9:sp] + b"\r\n")
                del_t.append(res_t.popleft())
                nres += 1
                replies += 1
                pos = end
                continue
            line_is = buf.startswith
            if line_is(b"DELETED\r\n", pos):
                if not del_t:
                    run.fail("DELETED without a delete in flight (protocol desync)")
                    return
                t = del_t.popleft()
                done += 1
                if in_window and run.record_latency:
                    lat(now - t)
            elif line_is(b"TIMED_OUT\r\n", pos):
                if not res_t:
                    run.fail("TIMED_OUT without a reserve in flight (protocol desync)")
                    return
                res_t.popleft()
                run.drained(now)
            else:
                line = bytes(buf[pos:i])
                run.error_reply(line)
                if line.startswith(b"DEADLINE_SOON") and res_t:
                    res_t.popleft()
                    nres += 1  # keep the window
                elif line.startswith(b"NOT_FOUND") and del_t:
                    del_t.popleft()
                else:
                    run.fail(f"unexpected reply {line[:80]!r}")
                    return
            replies += 1
            pos = i + 2
        if pos:
            del buf[:pos]
        if not replies:
            return
        if done:
            if in_window and now <= run.limit:
                run.done += done
            run.ok_total += done
        run.inflight -= replies
        k = run.take(nres)
        if out or k:
            run.inflight += len(out)  # deletes are always sent, outside the budget
            if k:
                out.append(RESERVE0 * k)
                res_t.extend(itertools.repeat(now, k))
            self.tr.write(b"".join(out))
        run.check_idle(now)


async def _pipelined(kind: str, port: int, tube: bytes, conns: int, window: int, seconds: float,
                     max_ops: int, body: bytes, pids: list[int], res: Result,
                     record_latency: bool = True) -> Run:
    loop = asyncio.get_running_loop()
    run = Run(loop, max_ops)
    run.record_latency = record_latency
    if kind == "put":
        def factory():
            return PutConn(run, tube, body, window)
    else:
        def factory():
            return ReserveDeleteConn(run, tube, window)
    clients: list[Conn] = []
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                for _ in range(conns):
                    _, proto = await loop.create_connection(factory, HOST, port)
                    clients.append(proto)
                await asyncio.gather(*(c.ready for c in clients))
        except TimeoutError:
            raise BenchError(f"could not open and set up {conns} connections within {CONNECT_TIMEOUT:.0f} s "
                             f"({len(clients)} open)") from None
        meter = CpuMeter(pids)
        meter.start()
        t0 = perf()
        run.limit = t0 + seconds
        for c in clients:
            c.start(t0)
        try:
            await asyncio.wait_for(run.idle.wait(), timeout=seconds)
        except TimeoutError:
            pass
        window_end = perf()
        meter.stop(res)
        failed_in_window = run.failure
        run.stopping = True
        run.check_idle(window_end)
        drain = max(5.0, seconds)
        try:
            await asyncio.wait_for(run.idle.wait(), timeout=drain)
        except TimeoutError:
            res.notes.append(f"{run.inflight} replies never came ({drain:.0f} s after the window)")
        if failed_in_window:
            raise BenchError(failed_in_window)
        if run.failure:
            res.notes.append(f"after the window: {run.failure}")
        end = min(run.limit, run.finished_at or math.inf, window_end)
        res.seconds = max(end - t0, 1e-9)
        return run
    finally:
        for c in clients:
            c.close()


def run_pipelined(kind, ep: Endpoint, tube: bytes, args, seconds: float, max_ops: int,
                  res: Result, record_latency: bool = True) -> Run:
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(_pipelined(kind, ep.port, tube, args.connections, args.window, seconds,
                                      max_ops, args.body, ep.pids, res, record_latency))
    finally:
        gc.enable()


def finish_pipelined(res: Result, run: Run) -> Result:
    res.ops = run.done
    res.rate = run.done / res.seconds
    res.error_replies, res.first_error_reply = run.errors, run.first_error
    latency_stats(res, run.lat)
    if res.ops == 0:
        res.ok = False
        res.error = (f"no successful replies (first error reply: {run.first_error!r})"
                     if run.first_error else "no successful replies")
    return res


def preload(ep: Endpoint, tube: bytes, args, count: int, seconds: float | None = None) -> int:
    """Puts up to `count` jobs into `tube` (pipelined, time-capped); returns how many went in."""
    if count <= 0:
        return 0
    scratch = Result(ep.label, "preload")
    run = run_pipelined("put", ep, tube, args, seconds or args.preload_seconds, count, scratch,
                        record_latency=False)
    if run.errors and not run.ok_total:
        raise BenchError(f"preload failed: {run.first_error!r}")
    return run.ok_total


# ---------------- one-at-a-time load (blocking socket) ----------------

class SyncConn:
    def __init__(self, port: int):
        self.s = socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT)
        self.s.settimeout(IO_TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        self.s.close()

    def _fill(self):
        chunk = self.s.recv(65536)  # bounded by IO_TIMEOUT
        if not chunk:
            raise BenchError("connection closed by the server")
        self.buf += chunk

    def readline(self) -> bytes:
        for _ in range(MAX_LINE):  # bounded; each pass reads at least one byte
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > MAX_LINE:
                raise BenchError("reply line too long")
            self._fill()
        raise BenchError("reply line too long")

    def skip(self, n: int) -> None:
        for _ in range(n + 1):
            if len(self.buf) >= n:
                del self.buf[:n]
                return
            self._fill()

    def command(self, cmd: bytes, expect: bytes) -> bytes:
        self.s.sendall(cmd)
        line = self.readline()
        if not line.startswith(expect):
            raise BenchError(f"{cmd.split()[0].decode()}: expected {expect.decode()}..., got {line[:80]!r}")
        return line


def serial_put(ep: Endpoint, tube: bytes, args, res: Result) -> Result:
    c = SyncConn(ep.port)
    try:
        c.command(b"use %s\r\n" % tube, b"USING ")
        cmd = put_command(args.body)
        lat = array("d")
        errors = 0
        meter = CpuMeter(ep.pids)
        gc.collect()
        gc.disable()
        meter.start()
        t0 = last = perf()
        deadline = t0 + args.seconds
        for _ in range(args.max_ops):
            t = perf()
            if t >= deadline:
                break
            c.s.sendall(cmd)
            line = c.readline()
            last = perf()
            if line.startswith(b"INSERTED "):
                lat.append(last - t)
            else:
                errors += 1
                if not res.first_error_reply:
                    res.first_error_reply = line[:120].decode("ascii", "replace")
                if errors > 100 and errors > len(lat):
                    break
        meter.stop(res)
    finally:
        gc.enable()
        c.close()
    return finish_serial(res, lat, errors, last - t0,
                         f"no INSERTED replies (first: {res.first_error_reply!r})")


def finish_serial(res: Result, lat, errors: int, seconds: float, empty_reason: str) -> Result:
    """Fill a one-at-a-time workload's result from its latencies and error count."""
    res.seconds = max(seconds, 1e-9)
    res.ops = len(lat)
    res.rate = res.ops / res.seconds
    res.error_replies = errors
    latency_stats(res, lat)
    if not res.ops:
        res.ok, res.error = False, empty_reason
    return res


def serial_reserve_delete(ep: Endpoint, tube: bytes, args, res: Result) -> Result:
    c = SyncConn(ep.port)
    try:
        c.command(b"watch %s\r\n" % tube, b"WATCHING ")
        c.command(b"ignore default\r\n", b"WATCHING ")
        lat = array("d")
        errors = 0
        meter = CpuMeter(ep.pids)
        gc.collect()
        gc.disable()
        meter.start()
        t0 = last = perf()
        deadline = t0 + args.seconds
        for _ in range(args.max_ops):
            t = perf()
            if t >= deadline:
                break
            c.s.sendall(RESERVE0)
            line = c.readline()
            if line.startswith(b"RESERVED "):
                parts = line.split()
                if len(parts) != 3 or not parts[2].isdigit():
                    raise BenchError(f"bad RESERVED line {line[:80]!r}")
                c.skip(int(parts[2]) + 2)
                c.s.sendall(b"delete " + parts[1] + b"\r\n")
                line = c.readline()
                last = perf()
                if line == b"DELETED":
                    lat.append(last - t)
                    continue
            elif line == b"TIMED_OUT":
                last = perf()
                res.notes.append(f"queue drained after {last - t0:.1f} s")
                break
            errors += 1
            if not res.first_error_reply:
                res.first_error_reply = line[:120].decode("ascii", "replace")
            if errors > 100 and errors > len(lat):
                break
        meter.stop(res)
    finally:
        gc.enable()
        c.close()
    return finish_serial(res, lat, errors, last - t0,
                         f"no reserve+delete completed (first reply: {res.first_error_reply!r})")


# ---------------- one endpoint: all workloads ----------------

def auto_preload(args, already: int, factor: float) -> int:
    if args.preload:
        want = args.preload
    else:
        want = max(1000, int(already * factor))
    return max(0, min(want, args.max_preload) - already)


def bench_endpoint(ep: Endpoint, args, rnd: int, log, out: list[Result]) -> None:
    """Runs the workloads on one endpoint, appending each Result to `out` as it completes."""
    tube_p = f"bench.{ep.label}.{rnd}.p".encode()
    tube_s = f"bench.{ep.label}.{rnd}.s".encode()
    state = {"put_jobs": 0, "put1_jobs": 0}

    def fill(tube: bytes, have: int, factor: float) -> int:
        if have or args.preload:
            return preload(ep, tube, args, auto_preload(args, have, factor))
        # the matching put workload did not run: put for `factor` x --seconds instead
        return preload(ep, tube, args, args.max_preload, min(args.preload_seconds, factor * args.seconds))

    def w_put(res):
        run = run_pipelined("put", ep, tube_p, args, args.seconds, args.max_ops, res)
        state["put_jobs"] = run.ok_total
        return finish_pipelined(res, run)

    def w_rd(res):
        have = state["put_jobs"]
        have += fill(tube_p, have, 3.0)
        run = run_pipelined("rd", ep, tube_p, args, args.seconds, args.max_ops, res)
        if run.drained_at is not None:
            res.notes.append(f"queue ({have:,} jobs) drained after {res.seconds:.1f} s; raise --preload")
        finish_pipelined(res, run)
        if run.drained_at is not None and not res.ops:
            res.error = f"reserve found the queue empty (TIMED_OUT) although {have:,} jobs were put"
        return res

    def w_put1(res):
        serial_put(ep, tube_s, args, res)
        state["put1_jobs"] = res.ops
        return res

    def w_rd1(res):
        have = state["put1_jobs"]
        have += fill(tube_s, have, 3.0)
        serial_reserve_delete(ep, tube_s, args, res)
        if not res.ok and res.notes and "drained" in res.notes[-1]:
            res.error = f"reserve found the queue empty (TIMED_OUT) although {have:,} jobs were put"
        return res

    steps = {"put": w_put, "rd": w_rd, "put1": w_put1, "rd1": w_rd1}
    failed = ""
    for key, label in WORKLOADS:
        if key not in args.workloads:
            continue
        res = Result(ep.label, key)
        if failed and not args.keep_going:
            res.ok, res.error = False, f"skipped after an earlier failure ({failed[:60]})"
            out.append(res)
            continue
        try:
            steps[key](res)
        except (OSError, BenchError, TimeoutError, ValueError) as e:
            res.ok = False
            res.error = str(e) or type(e).__name__
            dead = [p for p in ep.procs if p.poll() is not None]
            if dead:
                res.error = f"server PID {dead[0].pid} exited (code {dead[0].returncode}): " + res.error
        if not res.ok:
            failed = res.error
        out.append(res)
        log(f"  {ep.label:<17} {label:<27} " + (
            f"{res.rate:>11,.0f}/s  p50 {fmt_ms(res.p50_ms)} ms  p99 {fmt_ms(res.p99_ms)} ms"
            + (f"  errors {res.error_replies}" if res.error_replies else "")
            + (f"  [{'; '.join(res.notes)}]" if res.notes else "")
            if res.ok else f"FAILED: {res.error}"))


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:,.0f}"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}x" if v < 0.1 else f"{v:.2f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def aggregate(results: list[Result]) -> Result:
    """Median of each figure over the rounds that succeeded."""
    ok = [r for r in results if r.ok]
    if not ok:
        return results[-1]
    if len(ok) == 1 and len(results) == 1:
        return ok[0]
    m = Result(ok[0].target, ok[0].workload, rounds=len(ok))

    def med(name):
        vals = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        return statistics.median(vals) if vals else None

    for name in ("seconds", "rate", "p50_ms", "p99_ms", "mean_ms", "server_cpu_pct", "client_cpu_pct"):
        setattr(m, name, med(name))
    m.ops = int(statistics.median(r.ops for r in ok))
    m.error_replies = sum(r.error_replies for r in ok)
    m.first_error_reply = next((r.first_error_reply for r in ok if r.first_error_reply), "")
    m.notes = sorted({n for r in ok for n in r.notes})
    if len(ok) < len(results):
        m.notes.append(f"{len(results) - len(ok)} of {len(results)} rounds failed: "
                       + next(r.error for r in results if not r.ok))
    return m


def render_table(rows: list[Result], baseline: str) -> str:
    base = {r.workload: r for r in rows if r.target == baseline and r.ok}
    head = ["target", "workload", "ops", "secs", "ops/s", "p50 ms", "p99 ms", "mean ms",
            "srv cpu", "cli cpu", "errs", "ops/s vs bs", "p50 vs bs", "p99 vs bs", "notes"]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
    table = []
    for r in rows:
        wl = WORKLOAD_LABEL.get(r.workload, r.workload)
        if not r.ok:
            table.append([r.target, wl] + ["-"] * 12 + ["FAILED: " + r.error])
            continue
        b = base.get(r.workload)
        notes = list(r.notes)
        if r.first_error_reply:
            notes.append(f"first error reply: {r.first_error_reply}")
        if r.client_cpu_pct is not None and r.client_cpu_pct > 90:
            notes.append("load generator near 100% CPU")
        table.append([
            r.target, wl, f"{r.ops:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
            fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), fmt_ms(r.mean_ms),
            "-" if r.server_cpu_pct is None else f"{r.server_cpu_pct:.0f}%",
            "-" if r.client_cpu_pct is None else f"{r.client_cpu_pct:.0f}%",
            str(r.error_replies),
            fmt_ratio(ratio(r.rate, b.rate) if b else None),
            fmt_ratio(ratio(r.p50_ms, b.p50_ms) if b else None),
            fmt_ratio(ratio(r.p99_ms, b.p99_ms) if b else None),
            "; ".join(notes),
        ])
    widths = [max(len(head[i]), *(len(row[i]) for row in table)) if table else len(head[i])
              for i in range(len(head))]
    widths[-1] = 0  # notes: not padded

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths[:-1]] + ["-----"])]
    out += [line(row) for row in table]
    return "\n".join(out)


def fs_type(path: str) -> str:
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for ln in f:
                parts = ln.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def header_info(args) -> dict:
    try:
        v = subprocess.run([args.beanstalkd, "-v"], capture_output=True, timeout=5, text=True)
        bver = (v.stdout or v.stderr).strip() or "?"
    except (OSError, subprocess.SubprocessError):
        bver = "not runnable"
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": nproc,
        "python": platform.python_version(),
        "beanstalkd": bver,
        "loadavg": load,
        "kernel": platform.release(),
        "data_dir": args.data_dir,
        "data_fs": fs_type(args.data_dir),
        "beanraft_cmd": " ".join(beanraft_command(args)),
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Benchmark BeanRaft against beanstalkd 1.12 (put/s, reserve+delete/s, latency).")
    p.add_argument("--targets", default="beanstalkd,beanraft",
                   help="comma list of: " + ", ".join(TARGET_CHOICES)
                   + " (default beanstalkd,beanraft; the --baseline target is always added)")
    p.add_argument("--seconds", type=float, default=5.0, help="duration cap of each workload (default 5)")
    p.add_argument("--connections", type=int, default=50, help="pipelined connections (default 50)")
    p.add_argument("--window", type=int, default=20, help="commands in flight per connection (default 20)")
    p.add_argument("--body-size", type=int, default=100, help="job body bytes (default 100)")
    p.add_argument("--workloads", default="put,rd,put1,rd1",
                   help="comma list of put, rd, put1, rd1 (default: all)")
    p.add_argument("--preload", type=int, default=0,
                   help="total jobs queued before each reserve+delete workload (default 0 = auto: "
                        "3x the jobs the matching put workload inserted)")
    p.add_argument("--max-preload", type=int, default=MAX_PRELOAD_DEFAULT,
                   help=f"cap on the auto preload (default {MAX_PRELOAD_DEFAULT:,})")
    p.add_argument("--preload-seconds", type=float, default=None,
                   help="time cap of each preload (default max(20, 4 x --seconds))")
    p.add_argument("--max-ops", type=int, default=MAX_OPS_DEFAULT,
                   help=f"count cap of each workload (default {MAX_OPS_DEFAULT:,})")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat all targets this many times, interleaved; report medians (default 1)")
    p.add_argument("--no-binlog", action="store_true",
                   help="also measure beanstalkd without -b (target beanstalkd-mem, in memory)")
    p.add_argument("--baseline", default="beanstalkd", choices=("beanstalkd", "beanstalkd-mem"),
                   help="target the ratio columns divide by (default beanstalkd, i.e. -b DIR -f 0)")
    p.add_argument("--beanstalkd", default=DEFAULT_BEANSTALKD, help="beanstalkd binary")
    p.add_argument("--beanraft-cmd", default="",
                   help="command that runs the BeanRaft CLI (default: the `beanraft` console script, "
                        "else `python -m beanraft.node`)")
    p.add_argument("--data-dir", default=tempfile.gettempdir(),
                   help="where the servers' data directories are created (default: system temp dir)")
    p.add_argument("--keep-data", action="store_true", help="do not delete the data directories and logs")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("--insecure-cluster", action="store_true",
                   help="run the cluster without a secret (peer traffic neither sealed nor "
                        "authenticated), to see what sealing costs")
    p.add_argument("--keep-going", action="store_true",
                   help="after a workload fails on a target, still run that target's other workloads "
                        "(default: skip them)")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in TARGET_CHOICES]
    if bad:
        p.error(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(TARGET_CHOICES)}")
    if args.no_binlog and "beanstalkd-mem" not in targets:
        targets.append("beanstalkd-mem")
    if args.baseline not in targets:
        targets.insert(0, args.baseline)
    args.target_list = list(dict.fromkeys(targets))
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workloads or any(w not in WORKLOAD_LABEL for w in args.workloads):
        p.error("--workloads: comma list of put, rd, put1, rd1")
    for name in ("seconds", "connections", "window", "body_size", "max_ops", "rounds", "max_preload"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.preload < 0:
        p.error("--preload must be >= 0")
    if args.body_size > 65535:
        p.error("--body-size must be <= 65535 (beanstalkd's default max job size)")
    if args.preload_seconds is None:
        args.preload_seconds = max(20.0, 4 * args.seconds)
    args.body = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (args.body_size // 36 + 1))[: args.body_size]
    args.max_ops = int(args.max_ops)
    return args


def make_target(name: str, ctx: Ctx) -> Target:
    if name == "beanstalkd":
        return BeanstalkdTarget(ctx, binlog=True)
    if name == "beanstalkd-mem":
        return BeanstalkdTarget(ctx, binlog=False)
    if name == "beanraft":
        return BeanraftTarget(ctx)
    return ClusterTarget(ctx)


_signal_received = 0


def _on_signal(signum, frame):
    # SIGTERM / SIGHUP behave like Ctrl-C: stop the servers, print what was measured.
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _load_libc()
    procs = Procs()
    atexit.register(procs.stop_all)  # backstop; the finally below normally does it
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    os.makedirs(args.data_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="beanraft-bench-", dir=args.data_dir)
    ctx = Ctx(args, procs, Ports(), workdir)
    info = header_info(args)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    per_row: dict[tuple[str, str], list[Result]] = {}
    target_status: dict[str, str] = {}
    target_notes: dict[str, list[str]] = {}
    order: list[tuple[str, str]] = []
    interrupted = False
    try:
        log(f"benchmark: targets {', '.join(args.target_list)}; {args.seconds:g} s per workload; "
            f"data in {workdir}")
        for rnd in range(1, args.rounds + 1):
            for name in args.target_list:
                target = make_target(name, ctx)
                log(f"[round {rnd}] starting {name} ...")
                results: list[Result] = []
                try:
                    endpoints = target.start()
                    log(f"[round {rnd}] {name} ready on port(s) "
                        + ", ".join(f"{e.label}={e.port}" for e in endpoints))
                    target_status.setdefault(name, "ok")
                    for ep in endpoints:
                        bench_endpoint(ep, args, rnd, log, results)
                    try:
                        target.after(endpoints)
                    except TargetFailed as e:
                        target.notes.append(f"after the run: {e}")
                except TargetFailed as e:
                    target_status[name] = f"failed to start: {e}"
                    log(f"[round {rnd}] {name}: FAILED to start: {e}")
                    short = str(e) if len(str(e)) <= 100 else str(e)[:97] + "..."
                    for label in target.labels:
                        results.append(Result(label, "all", ok=False,
                                              error=f"did not start: {short} (full reason below)"))
                finally:
                    target.stop()
                    # recorded even when interrupted half-way through this target
                    target_notes.setdefault(name, []).extend(target.notes)
                    for r in results:
                        k = (r.target, r.workload)
                        if k not in per_row:
                            order.append(k)
                        if target.notes and r.ok:
                            r.notes.extend(target.notes)
                        per_row.setdefault(k, []).append(r)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers; figures so far follow")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        procs.stop_all()
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    rows = [aggregate(per_row[k]) for k in order]
    print(f"# {info['date']}  nproc {info['nproc']}  Python {info['python']}  {info['beanstalkd']}  "
          f"loadavg {info['loadavg']}  data on {info['data_fs']} ({info['data_dir']})")
    print(f"# {args.seconds:g} s per workload, {args.connections} connections x {args.window} in flight, "
          f"{args.body_size}-byte bodies, rounds {args.rounds}; ratios vs {args.baseline} "
          f"({'-b DIR -f 0, fsync before replying' if args.baseline == 'beanstalkd' else 'no binlog'}) "
          f"measured in this run; latency = send -> reply (pair: reserve sent -> DELETED)")
    if "cluster" in args.target_list:
        print("# cluster peer traffic: " + ("not sealed (--insecure)" if args.insecure_cluster
                                            else "sealed with the cluster secret"))
    print(render_table(rows, args.baseline))
    for name, st in target_status.items():
        if st != "ok":
            print(f"# {name}: {st}")
    if args.json:
        doc = {"header": info,
               "config": {k: getattr(args, k) for k in (
                   "seconds", "connections", "window", "body_size", "preload", "max_preload",
                   "preload_seconds", "max_ops", "rounds", "baseline", "target_list", "workloads")},
               "targets": target_status,
               "interrupted": interrupted,
               "results": [dict(asdict(r), workload_label=WORKLOAD_LABEL.get(r.workload, r.workload))
                           for r in rows]}
        base = {r.workload: r for r in rows if r.target == args.baseline and r.ok}
        for r in doc["results"]:
            b = base.get(r["workload"])
            r["ratio_vs_baseline"] = None if not (b and r["ok"]) else {
                "rate": ratio(r["rate"], b.rate), "p50": ratio(r["p50_ms"], b.p50_ms),
                "p99": ratio(r["p99_ms"], b.p99_ms), "mean": ratio(r["mean_ms"], b.mean_ms)}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        log(f"figures written to {args.json}")
    if interrupted:
        return 128 + (_signal_received or signal.SIGINT)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
