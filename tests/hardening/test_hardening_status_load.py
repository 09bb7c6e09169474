"""A crowd polling /status and /metrics must not stall the queue (issue 9, defect 6).

Method: one real ``beanraft serve`` node with a data directory holds 60,000 jobs. For a bounded
time, 200 concurrent HTTP pollers (aiohttp, keep-alive, in a thread of the test) fetch /status and
/metrics as fast as they are answered, while one producer puts jobs one at a time and records
each put's latency. Before the fix every /status hashed the whole state under the Raft lock on the
node's event loop: a handful of puts completed in 15 s. The latency bounds asserted are the
issue's own wide ones (max put <= 1 s); the p99 and the pollers' latencies are printed. A second
test asks a crowd for the state digest (``/status?digest=1``): its computations are shared and
spaced, so puts are blocked for a minority of the time, one encode at a time. A last one compares the fields of a real /status (and of a peer entry) with the reference's table.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from cluster.cluster_harness import Cluster, LineClient

from beanraft.replication.status import PeerStatus, RaftStatus

JOBS = 60_000
POLLERS = 200
LOAD_S = 8.0
BODY = b"j" * 64


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A single durable node holding ``JOBS`` ready jobs."""
    cluster = Cluster(tmp_path_factory.mktemp("status-load"), size=1)
    try:
        cluster.start()
        (node,) = cluster.nodes
        fill(node, JOBS)
        yield node
    finally:
        cluster.stop()


def fill(node, count: int, chunk: int = 2000) -> None:
    """``count`` puts, pipelined ``chunk`` at a time."""
    put = b"put 0 0 600 %d\r\n%s\r\n" % (len(BODY), BODY)
    with LineClient(node.client_address, timeout_s=60) as client:
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            client.send(put * n)
            for _ in range(n):
                assert client.read_line().startswith(b"INSERTED "), "a fill put failed"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Pollers(threading.Thread):
    """``count`` coroutines GETting ``paths`` in turn until ``stop`` is set; records latencies."""

    def __init__(self, port: int, paths: list[str], count: int, stop: threading.Event):
        super().__init__(name="pollers", daemon=True)
        self.port, self.paths, self.count, self.stop = port, paths, count, stop
        self.latencies: dict[str, list[float]] = {path: [] for path in paths}
        self.failures: list[str] = []
        self.bodies: dict[str, bytes] = {}

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.count)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._poll(session, i) for i in range(self.count)))

    async def _poll(self, session, i: int) -> None:
        for turn in range(100_000):  # bounded; ``stop`` ends it long before
            if self.stop.is_set():
                return
            path = self.paths[(i + turn) % len(self.paths)]
            began = time.monotonic()
            try:
                async with session.get(f"http://127.0.0.1:{self.port}{path}") as reply:
                    body = await reply.read()
                    if reply.status != 200:
                        self.failures.append(f"{path}: {reply.status}")
                        continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.failures.append(f"{path}: {exc!r}")
                continue
            self.latencies[path].append(time.monotonic() - began)
            self.bodies[path] = body


def timed_puts(node, seconds: float) -> list[float]:
    """Puts one at a time for ``seconds``; the latency of each."""
    latencies = []
    with LineClient(node.client_address, timeout_s=30) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(latencies) < 100_000:
            began = time.monotonic()
            client.put(b"timed")
            latencies.append(time.monotonic() - began)
    return latencies


def under_crowd(node, paths: list[str], count: int) -> tuple[list[float], Pollers]:
    stop = threading.Event()
    pollers = Pollers(node.ports.http, paths, count, stop)
    pollers.start()
    try:
        time.sleep(1.0)  # let the crowd connect and reach its pace
        puts = timed_puts(node, LOAD_S)
    finally:
        stop.set()
        pollers.join(timeout=40)
    assert not pollers.is_alive(), "the pollers did not stop"
    return puts, pollers


def describe(puts: list[float], pollers: Pollers) -> str:
    lines = [f"{len(puts)} puts: p50 {statistics.median(puts):.4f} s, "
             f"p99 {percentile(puts, 0.99):.4f} s, max {max(puts):.4f} s"]
    for path, values in pollers.latencies.items():
        if values:
            lines.append(f"{path}: {len(values)} answers, p50 {statistics.median(values):.4f} s, "
                         f"max {max(values):.4f} s")
    return "; ".join(lines)


def test_two_hundred_pollers_of_status_and_metrics_leave_puts_under_a_second(node):
    puts, pollers = under_crowd(node, ["/status", "/metrics"], POLLERS)
    report = describe(puts, pollers)
    print(report)
    assert not pollers.failures[:5], report
    assert all(len(v) >= POLLERS for v in pollers.latencies.values()), report  # a real crowd
    doc = json.loads(pollers.bodies["/status"])
    assert doc["jobs"]["ready"] >= JOBS and doc["ready"] is True, doc
    assert b"beanraft_jobs" in pollers.bodies["/metrics"]
    assert len(puts) >= 50, report
    assert max(puts) <= 1.0, report
    assert statistics.median(pollers.latencies["/status"]) <= 1.0, report


def test_a_crowd_asking_for_the_state_digest_shares_computations_and_leaves_puts_flowing(node):
    """A digest encodes the whole state under the state lock, so one computation stalls applies
    for its length (about 0.15 s for 60,000 jobs on an idle core). Shared and spaced, a crowd
    asking for it keeps puts blocked for a minority of the time, in stalls of one encode each."""
    puts, pollers = under_crowd(node, ["/status?digest=1"], 50)
    report = describe(puts, pollers)
    stalled_s = sum(latency for latency in puts if latency > 0.05)
    print(report, f"; puts stalled {stalled_s:.2f} s of {LOAD_S} s")
    assert not pollers.failures[:5], report
    assert len(puts) >= 50, report
    assert stalled_s <= 0.5 * LOAD_S, report
    assert max(puts) <= 2.5, report  # one encode on a shared, loaded machine
    # Quiet again: the digest describes the state at the index applied when it was asked for.
    before = node.status()["applied_index"]
    code, body = node.http("/status?digest=1", timeout_s=15)  # may wait out the spacing
    assert code == 200, body
    doc = json.loads(body)
    assert doc["digest_index"] >= before and len(doc["digest"]) == 64, doc
    with LineClient(node.client_address) as client:
        assert doc["jobs"]["ready"] == int(client.yaml(b"stats")["current-jobs-ready"]), doc


def documented_status_fields() -> set[str]:
    """The field names in the table of ``GET /status`` in docs/reference/http.md."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "http.md").read_text()
    section = doc.split("## GET /status", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_\[\].]+)` \|", section, re.MULTILINE))


def test_every_field_of_status_and_of_its_peers_is_documented_in_the_http_reference(node):
    doc = node.status(digest=True)
    fields = set(doc)
    peer = RaftStatus(
        node="a", role="leader", leader="a", term=1, commit_index=1, applied_index=1,
        leader_commit_index=None, log_entries=1, peers=(PeerStatus("b", True),)).as_dict()
    fields |= {f"peers[].{key}" for key in peer["peers"][0]}
    assert fields == documented_status_fields()
