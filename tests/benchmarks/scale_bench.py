#!/usr/bin/env python3
"""Scale figures beside beanstalkd, in one run: a full queue, idle connections, memory, restart.

    python tests/benchmarks/scale_bench.py                       # 1,000,000 jobs, 10,000 idle connections
    python tests/benchmarks/scale_bench.py --jobs 100000 --idle 1000 --seconds 2   # a short run

For beanstalkd 1.12 (``-b DIR``, its default fsync at most every 50 ms) and one BeanRaft node
(``beanraft serve -b DIR``), each started fresh on 127.0.0.1:

1. put/s and worker cycle/s (``reserve-with-timeout 1`` then ``delete``, 16 connections x 16 in
   flight, 100-byte bodies) on a nearly empty queue: the reference figures;
2. the same with ``--idle`` more connections open and silent (the script raises its own
   RLIMIT_NOFILE, which the servers inherit);
3. on a second server started fresh: its RSS, then the queue filled up to ``--jobs`` ready jobs,
   its RSS again (RSS per job: the growth over the jobs), then put/s and worker cycle/s again;
4. kill -9 of the server with that queue, then the time until it answers again with every job
   ready (both servers: beanstalkd replays its binlog).

It prints each figure, its ratio to step 1, and BeanRaft's RSS per job against beanstalkd's. It
is a script, not a test: no figure is judged. Every server is stopped by PID at the end, also on
Ctrl-C; the data directories are removed unless ``--keep-data``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchkit.common import DEFAULT_BEANSTALKD, HOST, Result  # noqa: E402
from benchkit.pipelined import finish_pipelined, preload, run_pipelined  # noqa: E402
from benchkit.servers import (Endpoint, Ports, Procs, _load_libc, beanraft_command,  # noqa: E402
                              wait_ready)

from beanraft.node.launcher import NodeSpec  # noqa: E402

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def stats(port: int) -> dict[str, str]:
    with socket.create_connection((HOST, port), timeout=60) as s:
        s.settimeout(60)
        s.sendall(b"stats\r\n")
        data = b""
        for _ in range(1000):  # bounded: the stats reply is a few KB
            if data.endswith(b"\n\r\n"):
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """One server process that can be killed with SIGKILL and started again on the same data."""

    def __init__(self, kind: str, args, procs: Procs, ports: Ports, workdir: str, name: str):
        self.kind, self.args, self.procs = kind, args, procs
        self.port = ports.take()
        self.dir = os.path.join(workdir, f"{kind}-{name}")
        os.makedirs(os.path.join(self.dir, "data"))
        self.proc = None

    def start(self) -> None:
        data = os.path.join(self.dir, "data")
        if self.kind == "beanstalkd":
            cmd = [self.args.beanstalkd, "-l", HOST, "-p", str(self.port), "-b", data]
            self.proc = self.procs.spawn(cmd, os.path.join(self.dir, "server.log"), self.dir)
        else:
            spec = NodeSpec("beanraft", HOST, self.port, None, None, Path(data))
            self.proc = self.procs.start_node(spec, [], beanraft_command(self.args), [], self.dir,
                                              "server.log")
        wait_ready(self.procs, [(self.proc, self.port)], self.kind, timeout=self.args.ready_timeout)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.procs.stop(self.proc)  # forgets it (and kills anything left in its group)

    def endpoint(self) -> Endpoint:
        return Endpoint(self.kind, self.port, [self.proc.pid], [self.proc])


def rates(ep: Endpoint, args, tube: bytes) -> tuple[float, float]:
    """put/s, then worker cycle/s with enough jobs queued in ``tube`` for the cycle run."""
    res = Result(ep.label, "put")
    run = run_pipelined("put", ep, tube, args, args.seconds, 50_000_000, res)
    put = finish_pipelined(res, run).rate
    need = max(1000, int(run.ok_total * 2))
    have = int(stats(ep.port).get("current-jobs-ready", "0"))
    if have < need:
        preload(ep, tube, args, need - have, args.fill_seconds)
    res = Result(ep.label, "rd")
    run = run_pipelined("rd", ep, tube, args, args.seconds, 50_000_000, res)
    cycle = finish_pipelined(res, run).rate
    if run.drained_at is not None:
        log(f"  {ep.label}: the queue ran dry during the cycle run")
    return put, cycle


def open_idle(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(30)
        s.connect((HOST, port))
        socks.append(s)
    return socks


def measure(kind: str, args, procs: Procs, ports: Ports, workdir: str) -> dict:
    fig: dict = {"kind": kind}
    server = Server(kind, args, procs, ports, workdir, "rates")
    server.start()
    ep = server.endpoint()
    tube = b"scale"
    log(f"[{kind}] empty queue (loadavg {loadavg()})")
    fig["put_empty"], fig["cycle_empty"] = rates(ep, args, tube)
    log(f"[{kind}]   put {fig['put_empty']:,.0f}/s  cycle {fig['cycle_empty']:,.0f}/s")

    if args.idle:
        log(f"[{kind}] {args.idle:,} idle connections")
        socks = open_idle(server.port, args.idle)
        try:
            time.sleep(1.0)
            fig["rss_idle_conns"] = rss_bytes(server.proc.pid)
            fig["put_idle"], fig["cycle_idle"] = rates(ep, args, tube)
        finally:
            for s in socks:
                s.close()
        log(f"[{kind}]   put {fig['put_idle']:,.0f}/s  cycle {fig['cycle_idle']:,.0f}/s")
    procs.stop(server.proc)

    # A fresh server for the memory: the first one's queue holds what the rates left behind, and
    # memory its closed connections gave back would hold new jobs without the RSS growing.
    server = Server(kind, args, procs, ports, workdir, "full")
    server.start()
    ep = server.endpoint()
    ready = int(stats(server.port).get("current-jobs-ready", "0"))
    rss0 = rss_bytes(server.proc.pid)
    log(f"[{kind}] a fresh server, filling to {args.jobs:,} ready jobs (from {ready:,}; RSS "
        f"{rss0 / MIB:.0f} MiB; loadavg {loadavg()})")
    t0 = time.monotonic()
    for _ in range(100):  # bounded: each pass puts up to the missing count within --fill-seconds
        if ready >= args.jobs:
            break
        preload(ep, tube, args, args.jobs - ready, args.fill_seconds)
        ready = int(stats(server.port).get("current-jobs-ready", "0"))
    fig["fill_s"] = time.monotonic() - t0
    fig["jobs"] = ready
    fig["rss_per_job"] = (rss_bytes(server.proc.pid) - rss0) / max(1, ready)
    log(f"[{kind}]   {ready:,} jobs in {fig['fill_s']:.0f} s; RSS +{fig['rss_per_job']:.0f} bytes per job")
    fig["put_full"], fig["cycle_full"] = rates(ep, args, tube)
    log(f"[{kind}]   put {fig['put_full']:,.0f}/s  cycle {fig['cycle_full']:,.0f}/s")

    # The rates above put and took jobs at their own paces: what is ready now, not the fill's
    # count, is what the restart must bring back.
    jobs = fig["kill_jobs"] = int(stats(server.port).get("current-jobs-ready", "0"))
    log(f"[{kind}] kill -9 with {jobs:,} ready jobs, restart (loadavg {loadavg()})")
    server.kill9()
    t0 = time.monotonic()
    server.start()
    for _ in range(100000):  # bounded by the ready timeout below
        if int(stats(server.port).get("current-jobs-ready", "0")) >= jobs:
            break
        if time.monotonic() - t0 > args.ready_timeout:
            log(f"[{kind}]   not all jobs back within {args.ready_timeout:.0f} s")
            break
        time.sleep(0.05)
    fig["restart_s"] = time.monotonic() - t0
    fig["restart_jobs"] = int(stats(server.port).get("current-jobs-ready", "0"))
    log(f"[{kind}]   ready again after {fig['restart_s']:.2f} s with {fig['restart_jobs']:,} jobs")
    procs.stop(server.proc)
    return fig


def report(args, figs: dict, load_start: str) -> None:
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  nproc {os.cpu_count()}  loadavg at start {load_start}"
          f", at end {loadavg()}")
    print(f"# {args.jobs:,} jobs, {args.idle:,} idle connections, {args.seconds:g} s per rate, 16 connections"
          f" x 16 in flight, 100-byte bodies; worker cycle = reserve-with-timeout 1 -> delete")

    def r(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    print(f"{'':<34}{'beanstalkd -b':>16}{'beanraft':>16}")
    rows = [("put/s, empty queue", "put_empty"), ("cycle/s, empty queue", "cycle_empty"),
            (f"put/s, {args.idle:,} idle connections", "put_idle"),
            (f"cycle/s, {args.idle:,} idle connections", "cycle_idle"),
            (f"put/s, {args.jobs:,} ready jobs", "put_full"), (f"cycle/s, {args.jobs:,} ready jobs", "cycle_full")]
    for label, key in rows:
        cells = []
        for kind in ("beanstalkd", "beanraft"):
            f = figs.get(kind, {})
            base = f.get(key.split("_")[0] + "_empty")
            val = f.get(key)
            cells.append("-" if val is None else (f"{val:,.0f}" + ("" if key.endswith("empty") else f" ({r(val, base)})")))
        print(f"{label:<34}{cells[0]:>16}{cells[1]:>16}")
    bs, br = figs.get("beanstalkd", {}), figs.get("beanraft", {})
    for label, key, fmt in (("RSS per ready job (bytes)", "rss_per_job", "{:,.0f}"),
                            ("kill -9, then all jobs ready (s)", "restart_s", "{:.2f}")):
        cells = ["-" if f.get(key) is None else fmt.format(f[key]) for f in (bs, br)]
        print(f"{label:<34}{cells[0]:>16}{cells[1]:>16}")
    if bs.get("rss_per_job") and br.get("rss_per_job"):
        print(f"# beanraft RSS per job = {br['rss_per_job'] / bs['rss_per_job']:.2f}x beanstalkd's")
    for kind, f in figs.items():
        if f.get("restart_jobs") is not None and f.get("restart_jobs") < f.get("kill_jobs", 0):
            print(f"# {kind}: only {f['restart_jobs']:,} jobs were ready after the restart")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1_000_000, help="ready jobs of the full queue")
    p.add_argument("--idle", type=int, default=10_000, help="idle connections (0: skip that step)")
    p.add_argument("--seconds", type=float, default=4.0, help="duration of each rate measurement")
    p.add_argument("--fill-seconds", type=float, default=600.0, help="time cap of one fill pass")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="start-up and restart cap")
    p.add_argument("--targets", default="beanstalkd,beanraft", help="beanstalkd, beanraft or both")
    p.add_argument("--beanstalkd", default=DEFAULT_BEANSTALKD)
    p.add_argument("--beanraft-cmd", default="")
    p.add_argument("--data-dir", default=tempfile.gettempdir())
    p.add_argument("--keep-data", action="store_true")
    a = p.parse_args(argv)
    body = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:100]
    args = SimpleNamespace(**vars(a), connections=16, window=16, body=body, reserve_timeout=1,
                           preload_seconds=a.fill_seconds)
    limit = raise_fd_limit(args.idle + 4096)
    if limit < args.idle + 1024:
        log(f"RLIMIT_NOFILE is {limit}: lowering --idle to {limit - 1024}")
        args.idle = max(0, limit - 1024)
    _load_libc()
    procs, ports = Procs(), Ports()
    workdir = tempfile.mkdtemp(prefix="beanraft-scale-", dir=args.data_dir)
    load_start = loadavg()
    figs: dict = {}
    try:
        for kind in [t.strip() for t in args.targets.split(",") if t.strip()]:
            figs[kind] = measure(kind, args, procs, ports, workdir)
    except KeyboardInterrupt:
        log("interrupted; figures so far follow")
    finally:
        procs.stop_all()
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    report(args, figs, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
