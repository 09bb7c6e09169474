#!/usr/bin/env python3
"""Measure disk use under churn and restart time with a large queue, on one real node.

    python tests/tools/scale.py --cycles 1000000 --restart-jobs 100000

Starts `beanraft serve -b DIR` on a free loopback port (through beanraft.node.launcher), runs CYCLES put+delete cycles (pipelined)
and prints the data directory's size as it goes, then fills the queue with RESTART_JOBS jobs,
kill -9s the node, restarts it and prints how long it took until it served them all. Stops the
node it started, by PID, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "restart"))
from pipeline import dir_size, pipeline, put_commands  # noqa: E402

from beanraft.node.launcher import HOST, NodeSpec, ServeProcess, free_ports  # noqa: E402

MIB = 1024 * 1024


def start(node: ServeProcess) -> None:
    """Starts the node through the launcher and waits until it answers ``list-tube-used``."""
    node.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not node.alive():
            raise SystemExit(f"the node exited:\n{node.log_text(4000)}")
        try:
            with socket.create_connection(node.spec.client, timeout=1) as s:
                s.sendall(b"list-tube-used\r\n")
                if s.recv(100) == b"USING default\r\n":
                    return
        except OSError:
            time.sleep(0.02)
    node.kill()
    raise SystemExit("the node did not start")


def ready_jobs(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"\n\r\n"):
            data += s.recv(65536)
    for line in data.split(b"\n"):
        if line.startswith(b"current-jobs-ready: "):
            return int(line.split()[1])
    raise SystemExit("no stats")


def churn(port: int, data: str, cycles: int, chunk: int = 10_000) -> None:
    done, began = 0, time.monotonic()
    while done < cycles:
        n = min(chunk, cycles - done)
        ids = [int(r.split()[1]) for r in pipeline(("127.0.0.1", port), put_commands(n))]
        pipeline(("127.0.0.1", port), [b"delete %d\r\n" % i for i in ids])
        done += n
        if done % (chunk * 10) == 0 or done == cycles:
            print(f"{done:>9,} put+delete cycles  {time.monotonic() - began:7.1f} s  "
                  f"data dir {dir_size(data) / MIB:6.1f} MiB", flush=True)


def restart_time(node: ServeProcess, jobs: int) -> None:
    port, data = node.spec.client_port, str(node.spec.data_dir)
    for start_at in range(0, jobs, 10_000):
        pipeline(("127.0.0.1", port), put_commands(min(10_000, jobs - start_at)))
    node.kill()
    began = time.monotonic()
    start(node)
    count = ready_jobs(port)
    print(f"kill -9 with {jobs:,} jobs: serving again after {time.monotonic() - began:.2f} s, "
          f"{count:,} jobs ready; data dir {dir_size(data) / MIB:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1_000_000)
    parser.add_argument("--restart-jobs", type=int, default=100_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="beanraft-scale-"))
    spec = NodeSpec("node1", HOST, free_ports(1)[0], None, None, workdir / "data")
    node = ServeProcess(spec, [], log_path=workdir / "node1.log")  # the log is not in the measured -b
    try:
        start(node)
        churn(spec.client_port, str(spec.data_dir), args.cycles)
        restart_time(node, args.restart_jobs)
    finally:
        node.terminate(grace_s=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
