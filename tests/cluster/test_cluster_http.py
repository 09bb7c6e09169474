"""The operator's view of a live cluster -- GET /status, /healthz, /readyz, /metrics and
``beanraft status`` -- agrees with what clients did and with the cluster's real health.

Method: a fresh three-process cluster; known jobs are put, reserved, buried and delayed through
different nodes, then every node's endpoints are read and compared with those facts and with each
other. For the unhealthy case the other two nodes are killed and we poll, bounded, until the
survivor says it is not ready and ``beanraft status`` exits 1; restarting one of them heals it.
Readiness is also sampled on every node while a client keeps writing: a healthy node stays ready.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
from cluster_harness import beanraft_argv, clean_env, wait_for
from prometheus_client.parser import text_string_to_metric_families

STATUS_KEYS = {"node", "role", "leader", "term", "commit_index", "applied_index", "peers",
               "uptime_s", "jobs", "ready", "connections", "draining", "digest", "digest_index"}


def make_known_jobs(cluster, clients):
    """Two ready, one reserved, one buried and one delayed job, made through three nodes.

    Returns the connections it keeps open, per node name (the reservation lives on one of them).
    """
    leader = cluster.leader()
    f1, f2 = cluster.followers()
    producer, worker, buryer = clients(f1), clients(f2), clients(leader)
    for body in ("reserve me", "bury me", "stay ready", "stay ready too"):
        producer.put(body)
    producer.put("later", delay=300)
    assert worker.reserve(timeout=0).body == "reserve me"
    buryer.bury(buryer.reserve(timeout=0))
    return {f1.name: [producer], f2.name: [worker], leader.name: [buryer]}


def beanraft_status(*addresses: str) -> subprocess.CompletedProcess:
    return subprocess.run(beanraft_argv() + ["status", *addresses], capture_output=True, text=True,
                          timeout=60, env=clean_env())


def metric_samples(node) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from the node's /metrics."""
    code, text = node.http("/metrics")
    assert code == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metrics_at(node, applied_index: int) -> dict[tuple, float] | None:
    """The node's metrics once they report at least ``applied_index``, else None."""
    samples = metric_samples(node)
    return samples if samples[("beanraft_raft_applied_index", ())] >= applied_index else None


def test_status_on_every_node_agrees_on_the_leader_and_reports_peers_jobs_and_connections(
        cluster, clients):
    open_connections = make_known_jobs(cluster, clients)
    leader = cluster.leader()
    rafts = {node.raft_address for node in cluster.nodes}

    cluster.wait_links_up()
    docs = cluster.converged()
    for node in cluster.nodes:
        doc = docs[node.name]
        assert STATUS_KEYS <= set(doc), sorted(STATUS_KEYS - set(doc))
        assert doc["node"] == node.raft_address
        assert doc["role"] == ("leader" if node is leader else "follower")
        assert doc["leader"] == leader.raft_address
        assert {p["address"] for p in doc["peers"]} == rafts - {node.raft_address}
        assert doc["jobs"] == {"ready": 2, "reserved": 1, "delayed": 1, "buried": 1}
        assert doc["ready"] is True and doc["draining"] is False
        assert doc["uptime_s"] > 0 and doc["commit_index"] >= doc["applied_index"] > 0
    assert len({d["term"] for d in docs.values()}) == 1
    assert all(isinstance(p["match_index"], int) for p in docs[leader.name]["peers"])
    wait_for("each node to count exactly the client connections made to it",
             lambda: all(n.status()["connections"] == len(open_connections[n.name]) for n in cluster.nodes),
             timeout_s=10, describe=cluster.describe)

    follower = cluster.followers()[0]
    follower.signal(signal.SIGUSR1)
    wait_for("drain mode on the signalled node", lambda: follower.status()["draining"], timeout_s=10)
    assert [n.status()["draining"] for n in cluster.nodes if n is not follower] == [False, False]
    for node in cluster.nodes:
        assert node.http("/healthz")[0] == 200
        assert node.http("/readyz")[0] == 200


def test_metrics_count_commands_jobs_connections_and_raft_state_per_node(cluster, clients):
    open_connections = make_known_jobs(cluster, clients)
    leader = cluster.leader()
    f1 = cluster.followers()[0]  # the producer's node: five puts went through it
    applied = max(doc["digest_index"] for doc in cluster.converged().values())
    terms = set()
    for node in cluster.nodes:
        # The Raft figures are a copy the node refreshes every 100 ms: wait for it to catch up.
        m = wait_for("the Raft metrics to reach the applied index",
                     lambda: metrics_at(node, applied), timeout_s=10)
        assert m[("beanraft_raft_is_leader", ())] == (1 if node is leader else 0)
        terms.add(m[("beanraft_raft_term", ())])
        assert m[("beanraft_raft_commit_index", ())] >= m[("beanraft_raft_applied_index", ())]
        assert m[("beanraft_raft_leader_changes_total", ())] >= 1
        for state, count in {"ready": 2, "reserved": 1, "delayed": 1, "buried": 1}.items():
            assert m[("beanraft_jobs", (("state", state),))] == count
        assert m[("beanraft_connections", ())] == len(open_connections[node.name])
        assert m[("beanraft_commit_latency_seconds_count", ())] >= 1  # at least its registration
        puts = m.get(("beanraft_commands_total", (("command", "put"),)), 0)
        assert puts == (5 if node is f1 else 0)
    assert len(terms) == 1


def test_beanraft_status_prints_a_line_per_node_and_exits_0_while_there_is_a_leader(cluster):
    leader = cluster.leader()
    result = beanraft_status(*(node.http_address for node in cluster.nodes))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(cluster.nodes)  # a header, then one line per node
    for node in cluster.nodes:
        (line,) = [line for line in lines if line.startswith(node.http_address)]
        assert node.raft_address in line and line.endswith("ready")
        assert ("leader" if node is leader else "follower") in line.split()


@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_a_node_that_lost_its_quorum_answers_readyz_503_and_beanraft_status_exits_1(
        cluster, survivor_role):
    leader = cluster.leader()
    survivor = leader if survivor_role == "leader" else cluster.followers()[0]
    others = [node for node in cluster.nodes if node is not survivor]
    addresses = [node.http_address for node in cluster.nodes]
    for node in others:
        cluster.kill(node)

    wait_for("/readyz 503 on the survivor", lambda: survivor.http("/readyz")[0] == 503,
             timeout_s=10, describe=lambda: str(survivor.http("/readyz")))
    assert survivor.status()["ready"] is False
    assert survivor.http("/healthz")[0] == 200  # alive, just not ready
    wait_for("beanraft status to exit 1", lambda: beanraft_status(*addresses).returncode == 1,
             timeout_s=10, poll_s=0.5)
    down = beanraft_status(*addresses)
    assert down.returncode == 1 and "no leader" in down.stderr
    assert sum("unreachable" in line for line in down.stdout.splitlines()) == 2

    cluster.restart(others[0])
    cluster.wait_ready([survivor, others[0]])
    assert beanraft_status(*addresses).returncode == 0


def test_readyz_stays_200_on_every_node_while_clients_keep_writing(cluster, clients):
    leader = cluster.leader()
    producer = clients(leader)
    done = threading.Event()

    def produce() -> None:
        try:
            for i in range(300):
                producer.put(f"load {i}")
        finally:
            done.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    codes: dict[str, list] = {node.name: [] for node in cluster.nodes}
    deadline = time.monotonic() + 60
    for _poll in range(3000):
        if done.is_set() or time.monotonic() > deadline:
            break
        for node in cluster.nodes:
            codes[node.name].append(node.http("/readyz")[0])
    thread.join(timeout=30)
    assert done.is_set() and producer.stats()["total-jobs"] == 300
    assert all(len(seen) >= 5 for seen in codes.values()), codes  # we did look while it wrote
    assert {name: sorted(set(seen)) for name, seen in codes.items()} == {
        node.name: [200] for node in cluster.nodes}
