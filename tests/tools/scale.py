#!/usr/bin/env python3
"""Measure disk use under churn and restart time with a large queue, on one real node.

    python tests/tools/scale.py --cycles 1000000 --restart-jobs 100000

Starts `beanraft serve -b DIR` on a free loopback port, runs CYCLES put+delete cycles (pipelined)
and prints the data directory's size as it goes, then fills the queue with RESTART_JOBS jobs,
kill -9s the node, restarts it and prints how long it took until it served them all. Stops the
node it started, by PID, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "restart"))
from pipeline import dir_size, pipeline, put_commands  # noqa: E402

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "beanraft.node", "serve", "-l", "127.0.0.1", "-p", str(port), "-b", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"list-tube-used\r\n")
                if s.recv(100) == b"USING default\r\n":
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
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


def restart_time(port: int, data: str, proc: subprocess.Popen, jobs: int) -> subprocess.Popen:
    for start_at in range(0, jobs, 10_000):
        pipeline(("127.0.0.1", port), put_commands(min(10_000, jobs - start_at)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    began = time.monotonic()
    proc = start(data, port)
    count = ready_jobs(port)
    print(f"kill -9 with {jobs:,} jobs: serving again after {time.monotonic() - began:.2f} s, "
          f"{count:,} jobs ready; data dir {dir_size(data) / MIB:.1f} MiB")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1_000_000)
    parser.add_argument("--restart-jobs", type=int, default=100_000)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="beanraft-scale-")
    port = free_port()
    proc = start(data, port)
    try:
        churn(port, data, args.cycles)
        proc = restart_time(port, data, proc, args.restart_jobs)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
