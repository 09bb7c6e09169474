#!/usr/bin/env python3
"""Measure how long an online backup pauses clients.

    python tests/tools/backup_pause.py                    # 100,000 jobs, 5 backups
    python tests/tools/backup_pause.py --jobs 20000 --backups 3

Method. Start a 3-node cluster (real ``beanraft serve`` processes with an admin token) and load
``--jobs`` jobs of 200 bytes through pipelined puts. A prober then runs put + delete, one at a
time, against the follower that will be backed up (a follower forwards the put to the leader
and applies it itself, so it feels its own fork). For ``--quiet`` seconds nothing else happens
(the baseline), then ``beanraft backup`` of that follower runs ``--backups`` times in a row.
Prints the prober's p50, p99 and maximum latency while no backup runs and while backups run,
the extra worst-case latency (the client pause), and each fork's duration from the node's log.
The target is a client pause under 100 ms; exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "backup"), str(HERE.parent / "cluster")]

from backup_kit import Pipe, cli  # noqa: E402
from cluster_harness import HOST, Cluster, LineClient  # noqa: E402

PAUSE_TARGET_MS = 100.0


def probe(address, stop: threading.Event, samples: list) -> None:
    with LineClient(address) as client:
        client.request(b"use probe")
        client.request(b"watch probe")
        client.request(b"ignore default")
        while not stop.is_set():
            began = time.monotonic()
            job_id = client.put(b"p")
            assert client.request(b"delete %d" % job_id) == b"DELETED"
            samples.append((began, (time.monotonic() - began) * 1000))


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(ordered):6d} ops  p50 {statistics.median(ordered):7.2f} ms  "
            f"p99 {p99:7.2f} ms  max {ordered[-1]:7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--backups", type=int, default=5)
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds of baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backup-pause-") as tmp:
        work = Path(tmp)
        token = work / "token"
        token.write_text("pause-probe-token\n")
        token.chmod(0o600)
        cluster = Cluster(work / "cluster", extra_args=("--admin-token-file", str(token)))
        cluster.start()
        try:
            return run(cluster, work, token, args)
        finally:
            cluster.stop()


def run(cluster: Cluster, work: Path, token: Path, args) -> int:
    leader = cluster.leader()
    body = b"x" * 200
    pipe = Pipe((HOST, leader.ports.client))
    replies = pipe.run([b"put 100 0 120 200\r\n" + body + b"\r\n"] * args.jobs)
    pipe.close()
    assert all(reply.startswith(b"INSERTED") for reply in replies)
    target = next(node for node in cluster.nodes if node is not leader)
    stop, samples = threading.Event(), []
    prober = threading.Thread(target=probe, args=(target.client_address, stop, samples))
    prober.start()
    time.sleep(args.quiet)
    windows = []
    for i in range(args.backups):
        began = time.monotonic()
        done = cli("backup", target.http_address, str(work / f"b{i}.backup"), "--exact",
                   "--admin-token-file", str(token))
        windows.append((began, time.monotonic()))
        assert done.returncode == 0, done.stderr
        time.sleep(1.0)
    stop.set()
    prober.join(timeout=30)
    during = [ms for at, ms in samples if any(a <= at <= b for a, b in windows)]
    quiet = [ms for at, ms in samples if at < windows[0][0]]
    forks = re.findall(r"fork took ([0-9.]+) ms", (work / "cluster" / f"{target.name}.log")
                       .read_text())
    print(f"{args.jobs} jobs; backups of follower {target.name}, "
          f"{(work / 'b0.backup').stat().st_size / 1e6:.1f} MB each, "
          f"{statistics.median(b - a for a, b in windows):.2f} s each (median)")
    print(f"no backup running:  {summary(quiet)}")
    print(f"backups running:    {summary(during)}")
    pause = max(during) - max(quiet)
    print(f"fork durations: {', '.join(forks)} ms")
    print(f"client pause (worst latency during backups minus worst without): {pause:.1f} ms "
          f"(target < {PAUSE_TARGET_MS:.0f} ms)")
    return 0 if pause < PAUSE_TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
