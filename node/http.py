"""The HTTP endpoint of a node (aiohttp): /status, /healthz, /readyz and /metrics."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("beanraft.http")


class Metrics:
    """Prometheus metrics of one node, in a registry of its own."""

    def __init__(self, node):
        self.node = node
        self.registry = r = CollectorRegistry()
        self.commands = Counter("beanraft_commands", "Client commands parsed, by name.", ["command"], registry=r)
        self.jobs = Gauge("beanraft_jobs", "Jobs in the cluster, by state.", ["state"], registry=r)
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
        self._seen = {"leader_changes": 0, "batches": 0}

    def refresh(self) -> None:
        node = self.node
        status = node.raft.status
        with node.raft.lock:
            counts = node.raft.machine.job_counts()
        for state, count in counts.items():
            self.jobs.labels(state).set(count)
        for name, count in node.cmd_counts.items():
            # Counters only go up; set the child to the node's own running total.
            self.commands.labels(name)._value.set(count)
        self.term.set(status.term)
        self.commit_index.set(status.commit_index)
        self.applied_index.set(status.applied_index)
        self.is_leader.set(1 if status.role == "leader" else 0)
        self._advance(self.leader_changes, "leader_changes", node.raft.leader_changes)
        self.connections.set(len(node.connections))
        self._advance(self.batches, "batches", node.commit.batches)

    def _advance(self, counter: Counter, key: str, total: int) -> None:
        counter.inc(max(0, total - self._seen[key]))
        self._seen[key] = max(total, self._seen[key])


def status_document(node) -> dict:
    """The JSON of GET /status."""
    status = node.raft.status
    with node.raft.lock:
        counts = node.raft.machine.job_counts()
        # Read together under the lock: replicas must have equal digests at an equal index.
        digest_index = node.raft.applied_index
        digest = node.raft.machine.digest()
    doc = status.as_dict()
    doc.update({
        "digest": digest,
        "digest_index": digest_index,
        "uptime_s": round(time.monotonic() - node.started_at, 3),
        "jobs": counts,
        "client": node.client_address(),
        "ready": node.is_ready(),
        "connections": len(node.connections),
        "draining": node.draining,
    })
    return doc


async def start_http(node, address: str) -> web.AppRunner:
    """Serve the endpoint on HOST:PORT; return the runner (``await runner.cleanup()`` stops it)."""
    metrics = Metrics(node)
    node.commit.on_latency = metrics.commit_latency.observe

    async def status(_request):
        return web.json_response(status_document(node))

    async def healthz(_request):
        return web.json_response({"ok": True})

    async def readyz(_request):
        ready = node.is_ready()
        return web.json_response({"ready": ready, "leader": node.raft.status.leader},
                                 status=200 if ready else 503)

    async def prometheus(_request):
        metrics.refresh()
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/status", status), web.get("/healthz", healthz),
                    web.get("/readyz", readyz), web.get("/metrics", prometheus)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = address.rpartition(":")
    await web.TCPSite(runner, host, int(port)).start()
    log.info("HTTP endpoint on http://%s/status", address)
    return runner
