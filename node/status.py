"""What the HTTP endpoint reports: the /status document, the Prometheus metrics, the state digest.

Theory of operation. Pollers must never slow the queue down, however many there are.
* Everything here runs on the HTTP thread (``http.py``), not on the event loop that serves
  clients. It reads only figures that are O(1) to get: the Raft status copy that the tick thread
  refreshes every 100 ms, the job counts the state machine keeps (under the state lock for a few
  microseconds) and the node's own counters (read whole, never iterated while they change).
* /status and /metrics are built at most once per ``CACHE_S`` and the same bytes are served to
  every poller meanwhile, so a crowd of pollers costs what one does.
* The digest of the whole state is O(state) and must encode it under the state lock. It is made
  only on request (``/status?digest=1``), in a worker thread, by one computation shared by every
  request that waits for it, and computations are spaced (``DIGEST_SPACING``, at most
  ``DIGEST_GAP_MAX_S``) so that digests hold the lock for a small share of the time however
  often they are asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from beanraft.jobs.commands import RULES_SUPPORTED

CACHE_S = 0.1  # the Raft status copy is refreshed this often anyway
DIGEST_SPACING = 4  # a digest that took t seconds is followed by 4 t without one ...
DIGEST_GAP_MAX_S = 2.0  # ... or by 2 s, whichever is shorter
MAX_TUBES_AGED = 1000  # tubes whose ready head is looked at for beanraft_oldest_ready_seconds


class Cached:
    """The value of ``build()``, rebuilt at most once per ``max_age_s``, or when ``key`` changes."""

    def __init__(self, build: Callable[[], bytes], max_age_s: float = CACHE_S):
        self._build = build
        self._max_age_s = max_age_s
        self._value = b""
        self._key = None
        self._at = float("-inf")

    def get(self, key=None) -> bytes:
        now = time.monotonic()
        if now - self._at >= self._max_age_s or key != self._key:
            self._value = self._build()
            self._at = now
            self._key = key
        return self._value


def status_document(node, counts: dict[str, int] | None = None) -> dict:
    """The JSON of GET /status (fields: docs/reference/http.md)."""
    doc = node.raft.status.as_dict()
    doc.update({
        "uptime_s": round(time.monotonic() - node.started_at, 3),
        "jobs": node.raft.job_counts() if counts is None else counts,
        "client": node.client_address(),
        "ready": node.is_ready(),
        "connections": len(node.connections),
        "draining": node.draining,
        "http": node.config.http,
        "http_peers": list(node.config.peer_http),
        "admin": node.auth is not None,
        "membership": node.raft.members.standing.state,
        "journal_failed": node.raft.journal_failed(),
        "rules": rules_document(node.raft),
    })
    return doc


def rules_document(raft) -> dict:
    """The rules version the state applies, and what this node and each member agree to."""
    census = raft.rules
    return {"applied": raft.read(lambda machine: machine.rules), "supported": RULES_SUPPORTED,
            "own": census.own, "agreed": census.agreed, "members": dict(census.members)}


def encode(doc: dict) -> bytes:
    return json.dumps(doc).encode()


class Digester:
    """The state digest at an index at least as recent as the request's, shared and spaced."""

    def __init__(self, raft):
        self.raft = raft
        self._latest: tuple[int, str, dict] | None = None  # (index, digest, job counts)
        self._running: asyncio.Future | None = None
        self._next_start = 0.0

    async def latest(self) -> tuple[int, str, dict]:
        """(digest_index, digest, job counts) of an index at or after the one applied now."""
        wanted = self.raft.applied_index
        for _round in range(3):  # the computation that runs now may have begun before ``wanted``
            if self._latest is not None and self._latest[0] >= wanted:
                return self._latest
            if self._running is None:
                self._running = asyncio.ensure_future(self._compute())
                # Its waiters may all have gone (clients hung up): a failure is theirs to see.
                self._running.add_done_callback(lambda t: t.cancelled() or t.exception())
            await asyncio.shield(self._running)
        return self._latest

    async def _compute(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._next_start - time.monotonic()))
            began = time.monotonic()
            result = await asyncio.get_running_loop().run_in_executor(None, self.raft.state_digest)
            took = time.monotonic() - began
            self._next_start = time.monotonic() + min(DIGEST_SPACING * took, DIGEST_GAP_MAX_S)
            if self._latest is None or result[0] >= self._latest[0]:
                self._latest = result
        finally:
            self._running = None


class Metrics:
    """Prometheus metrics of one node, in a registry of its own."""

    def __init__(self, node):
        self.node = node
        self.registry = r = CollectorRegistry()
        self.commands = Counter("beanraft_commands", "Client commands parsed, by name.", ["command"], registry=r)
        self.jobs = Gauge("beanraft_jobs", "Jobs in the cluster, by state.", ["state"], registry=r)
        self.dedup_keys = Gauge("beanraft_dedup_keys", "put-key keys the cluster remembers "
                                "(expired ones until the next keyed put reclaims them).",
                                registry=r)
        self.term = Gauge("beanraft_raft_term", "Current Raft term.", registry=r)
        self.commit_index = Gauge("beanraft_raft_commit_index", "Raft commit index.", registry=r)
        self.applied_index = Gauge("beanraft_raft_applied_index", "Raft index applied here.", registry=r)
        self.is_leader = Gauge("beanraft_raft_is_leader", "1 on the leader, else 0.", registry=r)
        self.leader_changes = Counter("beanraft_raft_leader_changes",
                                      "Times this node saw the leader change.", registry=r)
        self.connections = Gauge("beanraft_connections", "Open client connections.", registry=r)
        self.commit_latency = Histogram(
            "beanraft_commit_latency_seconds", "Time from proposing a batch to its reply.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r)
        self.batches = Counter("beanraft_batches", "Batches (Raft entries) this node proposed and "
                               "saw to an end, committed or given up.", registry=r)
        self.disk_free = Gauge("beanraft_disk_free_bytes", "Bytes free for this node on its data "
                               "volume (-1 without a data directory).", registry=r)
        self.journal_failed = Gauge("beanraft_journal_failed", "1 once a write or an fsync of this "
                                    "node's journal failed (until it restarts), else 0.", registry=r)
        self.oldest_ready = Gauge("beanraft_oldest_ready_seconds", "Age of the oldest job at the "
                                  "head of a tube's ready queue (0 when none is ready).", registry=r)
        self.auth_failures = Counter("beanraft_auth_failures", "Failed authentications on the "
                                     "client port and the HTTP port of this node.", registry=r)
        self._seen = {"leader_changes": 0, "batches": 0, "auth_failures": 0}

    def render(self) -> bytes:
        """The text exposition, with every figure read now."""
        self.refresh()
        return generate_latest(self.registry)

    def refresh(self) -> None:
        node = self.node
        status = node.raft.status
        for state, count in node.raft.job_counts().items():
            self.jobs.labels(state).set(count)
        self.dedup_keys.set(node.raft.read(lambda machine: len(machine.dedup)))
        # A copy made in one step: the event loop's thread adds names to the dict meanwhile.
        for name, count in dict(node.cmd_counts).items():
            # Counters only go up; set the child to the node's own running total.
            self.commands.labels(name)._value.set(count)
        self.term.set(status.term)
        self.commit_index.set(status.commit_index)
        self.applied_index.set(status.applied_index)
        self.is_leader.set(1 if status.role == "leader" else 0)
        self._advance(self.leader_changes, "leader_changes", node.raft.leader_changes)
        self.connections.set(len(node.connections))
        self._advance(self.batches, "batches", node.commit.batches)
        if node.auth is not None:
            self._advance(self.auth_failures, "auth_failures", node.auth.failures)
        self.disk_free.set(_free_bytes(node.config.data_dir))
        self.journal_failed.set(1 if node.raft.journal_failed() else 0)
        now_ns = node.raft.cluster_now_ns()
        self.oldest_ready.set(node.raft.read(lambda machine: _oldest_ready_ns(machine, now_ns)) / 1e9)

    def _advance(self, counter: Counter, key: str, total: int) -> None:
        counter.inc(max(0, total - self._seen[key]))
        self._seen[key] = max(total, self._seen[key])


def _free_bytes(data_dir: str | None) -> int:
    if data_dir is None:
        return -1
    try:
        vfs = os.statvfs(data_dir)
    except OSError:
        return -1
    return vfs.f_bavail * vfs.f_frsize


def _oldest_ready_ns(machine, now_ns: int) -> int:
    """Under the state lock: the age of the oldest of the tubes' next ready jobs.

    A tube's ready queue is ordered by priority, so its head is the job served next, not
    always its oldest; the head is what waits when workers fall behind, and finding it is
    O(1) per tube (at most ``MAX_TUBES_AGED`` tubes, in list-tubes order).
    """
    oldest = 0
    for tube in itertools.islice(machine.tube_list, MAX_TUBES_AGED):
        if tube.ready_ct:
            job = machine.min_ready(tube)
            if job is not None:
                oldest = max(oldest, now_ns - job.created_ns)
    return oldest
