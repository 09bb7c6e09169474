"""Helpers for the backup tests: a pipelined loader that puts jobs in every state, the CLI, and
a cluster started on data directories that ``beanraft restore`` wrote.

``load_every_state`` puts ``count`` jobs through pipelined connections (one per tube), then
buries some and holds some reserved on a connection it returns; ``expected`` maps every job id
to what a restore must give back (a held job is expected ready).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "cluster"),
                str(Path(__file__).resolve().parents[1] / "restart")]

from cluster_harness import (HOST, Cluster, NodePorts, NodeProcess, beanraft_argv,  # noqa: E402
                             clean_env, free_ports)
from pipeline import _replies  # noqa: E402

TUBES = ("t0", "t1", "t2", "t3")
PAUSED_TUBE, PAUSE_S = "t3", 7200
BURY_TUBE, HOLD_TUBE = "t2", "t1"
S = 1_000_000_000


def spec_of(i: int) -> dict:
    """What job number ``i`` is put with: its tube, priority, TTR and delay (seconds)."""
    return {"tube": TUBES[i % 4], "pri": (i * 7919) % 5000, "ttr": 30 + i % 50,
            "delay": 3600 + i % 100 if i % 5 == 0 else 0}


class Pipe:
    """One raw connection sending commands in windows and reading their one-line replies."""

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.create_connection(address, timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def run(self, commands: list[bytes], window: int = 500) -> list[bytes]:
        replies: list[bytes] = []
        for start in range(0, len(commands), window):
            chunk = commands[start:start + window]
            self.sock.sendall(b"".join(chunk))
            replies += _replies(self.sock, len(chunk), self.buf)
        return replies

    def close(self) -> None:
        self.sock.close()


def load_every_state(address: tuple[str, int], count: int, bury: int, hold: int):
    """Put ``count`` jobs, bury ``bury`` of tube t2, reserve ``hold`` of tube t1 and keep them.

    Returns (expected: id -> dict, the connection holding the reserved jobs).
    """
    expected: dict[int, dict] = {}
    for tube in TUBES:
        numbers = [i for i in range(count) if spec_of(i)["tube"] == tube]
        pipe = Pipe(address)
        commands = [b"use " + tube.encode() + b"\r\n"]
        for i in numbers:
            s, body = spec_of(i), b"job %d" % i
            commands.append(b"put %d %d %d %d\r\n%s\r\n" % (s["pri"], s["delay"], s["ttr"],
                                                           len(body), body))
        replies = pipe.run(commands)
        pipe.close()
        assert replies[0] == b"USING " + tube.encode()
        for i, reply in zip(numbers, replies[1:]):
            assert reply.startswith(b"INSERTED "), reply
            expected[int(reply.split()[1])] = dict(spec_of(i), body=b"job %d" % i, state=(
                "delayed" if spec_of(i)["delay"] else "ready"))
    _reserve(address, BURY_TUBE, bury, expected, then_bury=True).close()
    holder = _reserve(address, HOLD_TUBE, hold, expected, then_bury=False)
    pipe = Pipe(address)
    assert pipe.run([b"pause-tube %s %d\r\n" % (PAUSED_TUBE.encode(), PAUSE_S)]) == [b"PAUSED"]
    pipe.close()
    return expected, holder


def _reserve(address, tube: str, count: int, expected: dict, then_bury: bool) -> Pipe:
    pipe = Pipe(address)
    pipe.run([b"watch " + tube.encode() + b"\r\n", b"ignore default\r\n"])
    replies = pipe.run([b"reserve-with-timeout 0\r\n"] * count)
    ids = [int(r.split()[1]) for r in replies if r.startswith(b"RESERVED ")]
    assert len(ids) == count, replies[:3]
    if then_bury:
        assert pipe.run([b"bury %d 77\r\n" % job_id for job_id in ids]) == [b"BURIED"] * count
        for job_id in ids:
            expected[job_id].update(state="buried", pri=77)
    return pipe


def cli(*args: str, env: dict | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*beanraft_argv(), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=env)


def restored_layout(size: int = 3) -> list[NodePorts]:
    ports = free_ports(3 * size)
    return [NodePorts(*ports[3 * i:3 * i + 3]) for i in range(size)]


def cluster_on(workdir: Path, data_root: Path, layout: list[NodePorts], secret: str,
               extra_args: tuple[str, ...] = ()) -> Cluster:
    """A Cluster object (not started) whose nodes use ``layout`` and ``data_root/nodeN``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(workdir, size=len(layout), secret=secret, data_root=data_root,
                      extra_args=extra_args)
    rafts = [f"{HOST}:{p.raft}" for p in layout]
    env = clean_env(BEANRAFT_CLUSTER_SECRET=secret)
    cluster.nodes = [
        NodeProcess(f"node{i + 1}", ports, [r for j, r in enumerate(rafts) if j != i], workdir,
                    env, tuple(extra_args), None, data_root)
        for i, ports in enumerate(layout)]
    return cluster
