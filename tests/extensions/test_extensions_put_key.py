"""Keyed puts are created once per key, whichever node is asked, across a leader's kill -9, a full
restart of the cluster and snapshots.

Method: one real three-node cluster (durable data directories, snapshots every 100 entries so the
dedup table must travel through snapshot files); keyed puts go through each node in turn, then
the leader is killed with SIGKILL and restarted, then every node is killed and restarted. After
each fault the same keys must answer their first ids, and `stats` must count only the jobs the
first puts created.
"""

from __future__ import annotations

import pytest

from cluster.cluster_harness import wait_for
from ext_client import try_put_key

CLUSTER_ARGS = ("--snapshot-entries", "100", "--dedup-window", "600", "--dedup-cap", "1000")


def total_jobs(client) -> int:
    return int(client.yaml(b"stats")["total-jobs"])


def test_the_same_key_through_every_node_creates_one_job(extension_cluster, connect):
    clients = [connect(node) for node in extension_cluster.nodes]
    before = total_jobs(clients[0])
    first = clients[0].put_key(b"order:1", b"one")
    assert [c.put_key(b"order:1", b"again") for c in clients] == [first] * 3
    assert total_jobs(clients[2]) == before + 1
    clients[1].send(b"peek %d\r\n" % first)
    assert clients[1].read_line() == b"FOUND %d 3" % first


def test_a_key_survives_a_kill_of_the_leader_and_its_restart(extension_cluster, connect):
    cluster = extension_cluster
    leader = cluster.leader()
    first = connect(leader).put_key(b"order:2", b"two")
    cluster.kill(leader)
    survivor = connect(cluster.running[0])
    # The first attempt may meet the election: a node without a leader closes the connection.
    job_id = wait_for("a keyed put through a survivor",
                      lambda: try_put_key(cluster.running, b"order:2"), timeout_s=30, poll_s=0.5)
    assert job_id == first
    cluster.restart(leader)
    assert connect(leader).put_key(b"order:2", b"two") == first
    assert survivor.put_key(b"order:3", b"three") == first + 1


def test_keys_survive_a_full_restart_from_snapshots(extension_cluster, connect):
    cluster = extension_cluster
    client = connect(cluster.nodes[0])
    ids = {b"snap:%d" % i: client.put_key(b"snap:%d" % i, b"x") for i in range(20)}
    for _ in range(150):  # enough entries for every node to snapshot and compact its journal
        client.put(b"filler")
    for node in cluster.nodes:
        assert (node.data_dir / "raft.snapshot").exists(), f"no snapshot in {node.data_dir}"
    count = total_jobs(client)
    client.close()
    for node in cluster.nodes:
        node.kill()
    for node in cluster.nodes:
        node.start()
    cluster.wait_ready(timeout_s=40)
    again = connect(cluster.nodes[2])
    assert {key: again.put_key(key, b"y") for key in ids} == ids
    assert total_jobs(again) == count


pytestmark = pytest.mark.timeout(120)
