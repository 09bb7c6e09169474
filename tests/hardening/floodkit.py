"""Helpers for attacks on a running cluster: client latency through every node, a node's memory and
open files, and the one-leader check, each bounded in time and count.
"""

from __future__ import annotations

import os
import threading
import time

from cluster.cluster_harness import Cluster, LineClient, NodeProcess


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def leader_and_terms(cluster: Cluster) -> tuple[set, set]:
    """The leaders and terms the nodes report right now (one each when all is well)."""
    docs = [n.status() for n in cluster.nodes]
    return ({d and d["leader"] for d in docs}, {d and d["term"] for d in docs})


class LatencyProbe:
    """One thread per node puts a small job and deletes it, over and over, and keeps the slowest.

    Each request has its own deadline (``timeout_s``), so a stalled node counts as that long and
    the probe stops by itself at ``stop()`` or after ``limit_s``.
    """

    def __init__(self, nodes: list[NodeProcess], timeout_s: float = 5.0, limit_s: float = 60.0):
        self.nodes = nodes
        self.timeout_s = timeout_s
        self.limit_s = limit_s
        self.worst: dict[str, float] = {n.name: 0.0 for n in nodes}
        self.done: dict[str, int] = {n.name: 0 for n in nodes}
        self.errors: dict[str, list[str]] = {n.name: [] for n in nodes}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in nodes]

    def __enter__(self) -> "LatencyProbe":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 5)

    def _run(self, node: NodeProcess) -> None:
        deadline = time.monotonic() + self.limit_s
        client = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                if client is None:
                    client = LineClient(node.client_address, timeout_s=self.timeout_s)
                job = client.put(b"probe")
                reply = client.request(b"delete %d" % job)
                assert reply == b"DELETED", reply
                self.done[node.name] += 1
            except (OSError, AssertionError, TimeoutError) as exc:
                self.errors[node.name].append(repr(exc)[:200])
                if client is not None:
                    client.close()
                client = None
            took = time.monotonic() - began
            self.worst[node.name] = max(self.worst[node.name], took)
            time.sleep(0.02)
        if client is not None:
            client.close()

    def summary(self) -> str:
        return f"worst {self.worst}, done {self.done}, errors {self.errors}"
