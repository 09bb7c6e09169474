"""A restored node cannot be out-voted by empty ones, and refuses to start with other peers.

Method: a small backup is restored into ONE node's data directory only; the two other nodes
start empty first, elect a leader among themselves (they are a majority) and acknowledge a put.
Then the restored node starts: its log ends in the restore's term (the backup's plus 2**32), so
Raft's election rule makes its state win, and every node ends up serving the restored jobs, not
the empty pair's. The backup's own term is 0, lower than any the pair reaches: without the added
2**32 the pair's log wins and overwrites the restored node (checked by hand: the test then
fails). A restored directory started with peers other than the members it was restored for is
refused at start with a message naming them.
"""

from __future__ import annotations

import json
import time

from backup_kit import cli, cluster_on, restored_layout
from cluster_harness import HOST, LineClient, wait_for

from beanraft.jobs.commands import Op
from beanraft.jobs.machine import Machine
from beanraft.replication.backup_file import encode_head, header_for


def write_backup(path, jobs: int) -> None:
    """A backup of a machine holding ``jobs`` ready jobs (as a node's child would write it)."""
    machine = Machine()
    now = time.time_ns()
    (reply,), _ = machine.apply_batch(now, [(Op.NODE_START, 0, 0, "127.0.0.1:1")])
    sid = (reply[1] << 32) | 1
    machine.apply_batch(now, [(Op.OPEN, sid, 1)] + [
        (Op.PUT, sid, 2 + i, 10, 0, 60 * 10**9, b"restored %d" % i) for i in range(jobs)])
    body = machine.snapshot()
    path.write_bytes(encode_head(header_for(body, index=500, term=0, members=("127.0.0.1:1",),
                                            node="127.0.0.1:1", cluster_time_ns=now,
                                            jobs=len(machine.jobs))) + body)


def current_jobs(node) -> int | None:
    try:
        with LineClient(node.client_address, timeout_s=2) as client:
            return int(client.yaml(b"stats")["current-jobs-ready"])
    except (OSError, AssertionError, KeyError, ValueError):
        return None


def test_two_empty_nodes_cannot_out_vote_one_restored_node(tmp_path):
    backup = tmp_path / "small.backup"
    write_backup(backup, 25)
    layout = restored_layout()
    members = [f"{HOST}:{ports.raft}" for ports in layout]
    data_root = tmp_path / "data"
    done = cli("restore", str(backup), "-b", str(data_root / "node1"),
               *[arg for member in members for arg in ("--member", member)])
    assert done.returncode == 0, done.stderr
    cluster = cluster_on(tmp_path / "logs", data_root, layout, "guard-secret-" + "x" * 20)
    restored, empty = cluster.nodes[0], cluster.nodes[1:]
    try:
        for node in empty:
            node.start()
        cluster.wait_ready(nodes=empty, timeout_s=60)
        with LineClient(empty[0].client_address) as client:
            client.put(b"acknowledged by the empty pair")
        assert current_jobs(empty[1]) == 1
        restored.start()
        for node in cluster.nodes:
            wait_for(f"{node.name} serves the restored jobs", lambda n=node: current_jobs(n) == 25,
                     timeout_s=60)
        assert json.loads(restored.http("/status")[1])["term"] > 2**32
    finally:
        cluster.stop()


def test_a_restored_node_started_with_other_peers_is_refused(tmp_path):
    backup = tmp_path / "small.backup"
    write_backup(backup, 1)
    members = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
    data = tmp_path / "node"
    assert cli("restore", str(backup), "-b", str(data),
               *[arg for member in members for arg in ("--member", member)]).returncode == 0
    done = cli("serve", "-l", HOST, "-p", "0", "-b", str(data), "--raft", members[0],
               "--peer", members[1], "--peer", "127.0.0.1:7999", "--insecure", timeout_s=60)
    assert done.returncode == 111
    assert "restored for a cluster of 127.0.0.1:7101, 127.0.0.1:7102, 127.0.0.1:7103" in done.stderr


def test_restore_the_first_node_and_the_others_join(tmp_path):
    """docs/how-to/backup-restore.md, "Restore one node, the others join"."""
    token_file = tmp_path / "admin-token"
    token_file.write_text("join-token-5678\n")
    token_file.chmod(0o600)
    backup = tmp_path / "small.backup"
    write_backup(backup, 12)
    layout = restored_layout(2)
    first, second = (f"{HOST}:{ports.raft}" for ports in layout)
    data_root = tmp_path / "data"
    done = cli("restore", str(backup), "-b", str(data_root / "node1"), "--member", first)
    assert done.returncode == 0, done.stderr
    token = ("--admin-token-file", str(token_file))
    cluster = cluster_on(tmp_path / "logs", data_root, layout, "join-secret-" + "y" * 20, token)
    node1, node2 = cluster.nodes
    node1.peers = []  # the first node alone: no --peer
    node2.peers = []
    node2.extra_args = token + ("--join", node1.http_address)
    try:
        node1.start()
        cluster.wait_ready(nodes=[node1], timeout_s=60)
        assert current_jobs(node1) == 12
        node2.start()
        wait_for("node2 answers", lambda: node2.http("/healthz")[0] == 200, timeout_s=60)
        done = cli("member", "add", second, "--http", node1.http_address,
                   "--admin-token-file", str(token_file))
        assert done.returncode == 0, done.stderr
        wait_for("node2 serves the restored jobs", lambda: current_jobs(node2) == 12,
                 timeout_s=60)
    finally:
        cluster.stop()
