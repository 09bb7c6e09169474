"""Every descriptor a node opens for a piece of work is closed again: after churn of every kind
its count of open files comes back to what it was.

Method: a three-node cluster of real ``beanraft serve`` processes with an admin token. Each
node's open files (``/proc/PID/fd``) are counted once the cluster has settled. Then, bounded in
count: client connections through every node, each put, reserved, waited in a reserve or left
mid-body, then closed or reset (SO_LINGER 0); HTTP requests, each on a connection of its own,
and a backup through the HTTP port; a follower killed with SIGKILL and started again, twice; a
leadership transfer and back. The nodes that ran through it all must come back, within 20 s,
to the count they had (a margin of two, for a peer connection being redialled); the restarted
follower to the count it had after its first restart. A leak of one descriptor per connection,
per request or per peer reconnect would exceed the margin many times over.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import urllib.request

import pytest
from cluster.cluster_harness import Cluster, LineClient, wait_for
from floodkit import open_files

CONNECTIONS = 60  # per node and kind of ending
HTTP_REQUESTS = 40  # per node
MARGIN = 2
SETTLE_S = 20.0

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fd-churn")
    token_file = workdir / "admin-token"
    token_file.write_text("churn-token-" + "x" * 32)
    os.chmod(token_file, 0o600)
    cluster = Cluster(workdir, size=3, extra_args=("--admin-token-file", str(token_file)))
    cluster.token = token_file.read_text()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def settled_counts(nodes, baseline: dict[str, int] | None = None) -> dict[str, int]:
    """Each node's open files, once two readings a second apart agree (and, given a baseline,
    are within the margin of it)."""
    counts: dict[str, int] = {}

    def steady() -> bool:
        first = {n.name: open_files(n.pid) for n in nodes}
        time.sleep(1.0)
        second = {n.name: open_files(n.pid) for n in nodes}
        counts.update(second)
        if first != second:
            return False
        return baseline is None or all(second[k] <= baseline[k] + MARGIN for k in second)

    try:
        wait_for("the open-file counts to settle", steady, SETTLE_S, poll_s=0.1)
    except AssertionError:
        raise AssertionError(f"open files now {counts}, before the churn {baseline}") from None
    return counts


def churn_clients(node) -> None:
    host, port = node.client_address
    for i in range(CONNECTIONS):
        with LineClient(node.client_address, timeout_s=10.0) as client:
            job = client.put(b"churn %d" % i)
            client.send(b"reserve-with-timeout 0\r\n")
            client.read_line()
            if i % 2:
                client.send(b"delete %d\r\n" % job)
                client.read_line()
    for ending in ("close", "reset"):
        socks = []
        for i in range(CONNECTIONS):
            sock = socket.create_connection((host, port), timeout=10.0)
            # Waiting in a reserve, or half-way through a put's body, when the client goes.
            sock.sendall(b"reserve-with-timeout 5\r\n" if i % 2 else b"put 0 0 60 10\r\nabc")
            socks.append(sock)
        time.sleep(0.3)
        for sock in socks:
            if ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def admin_post(node, path: str, token: str, body: bytes) -> bytes:
    request = urllib.request.Request(f"http://{node.http_address}{path}", data=body,
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=15) as answer:
        return answer.read()


def churn_http(node) -> None:
    for i in range(HTTP_REQUESTS):
        path = ("/status", "/metrics", "/readyz", "/api/tubes")[i % 4]
        code, body = node.http(path, timeout_s=15)
        assert code == 200, (path, code, body)


def transfer(node, token: str, to: str) -> None:
    admin_post(node, "/admin/leader/transfer", token, json.dumps({"to": to}).encode())


def test_churn_of_every_kind_leaves_no_descriptor_open(cluster):
    leader = cluster.leader()
    follower, other = cluster.followers()
    for node in cluster.nodes:  # every kind of work once before the count
        churn_clients(node)
        churn_http(node)
    cluster.converged()
    before = settled_counts(cluster.nodes)

    for node in cluster.nodes:
        churn_clients(node)
        churn_http(node)
    backup = admin_post(leader, "/admin/backup", cluster.token, b"")
    assert len(backup) > 0
    for _ in range(2):
        cluster.kill(follower)
        cluster.restart(follower)
    transfer(leader, cluster.token, other.raft_address)
    wait_for("the transfer", lambda: cluster.leader() is other, 10.0)
    transfer(other, cluster.token, leader.raft_address)
    wait_for("the transfer back", lambda: cluster.leader() is leader, 10.0)
    cluster.converged()
    stayed = [leader, other]
    settled_counts(stayed, {n.name: before[n.name] for n in stayed})

    restarted = settled_counts([follower])
    churn_clients(follower)
    churn_http(follower)
    settled_counts([follower], restarted)
