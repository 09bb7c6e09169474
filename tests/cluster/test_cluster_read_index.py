"""Reads on a cluster stay linearizable without writing to the log (read index, read_index.py).

Method: one real three-node cluster, shared by the tests of this module. Reads through every node must leave the commit index where it
was; a leader whose followers are frozen (SIGSTOP) must not answer a read until a majority can
confirm it; and a read sent to a frozen leader, which the others have replaced meanwhile, must
see the job put through the new leader once the old one resumes, not its own stale state.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
from cluster_harness import Cluster, LineClient, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    shared = Cluster(tmp_path_factory.mktemp("read-index")).start()
    yield shared
    shared.stop()


def commit_indexes(cluster) -> list[int]:
    time.sleep(0.3)  # /status is refreshed every 0.1 s
    return [cluster.statuses()[n.name]["commit_index"] for n in cluster.nodes]


def test_reads_through_any_node_write_nothing_to_the_log(cluster):
    readers = [LineClient(node.client_address) for node in cluster.nodes]
    try:
        job_id = readers[0].put(b"hello")
        for reader in readers:
            reader.request(b"list-tube-used")  # every session is open
        before = commit_indexes(cluster)
        for _ in range(50):
            for reader in readers:
                assert reader.request(b"peek %d" % job_id) == b"FOUND %d 5" % job_id
                assert reader.read_exactly(7) == b"hello\r\n"
                assert reader.yaml(b"stats-tube default")["current-jobs-ready"] == "1"
        assert commit_indexes(cluster) == before, "reads wrote to the log"
    finally:
        for reader in readers:
            reader.close()


def test_a_leader_without_a_majority_answers_no_read_until_one_is_back(cluster):
    leader = cluster.leader()
    followers = cluster.followers()
    with LineClient(leader.client_address) as client:
        client.request(b"list-tube-used")
        for follower in followers:
            follower.signal(signal.SIGSTOP)
        try:
            for follower in followers:  # SIGSTOP is delivered asynchronously
                wait_for(f"{follower.name} stopped", lambda: _state(follower.pid) == "T", 5)
            client.send(b"peek 999999\r\n")
            time.sleep(1.5)
            assert _pending(client) == b"", "answered without a majority"
        finally:
            for follower in followers:
                follower.signal(signal.SIGCONT)
        assert client.read_line(timeout_s=10) == b"NOT_FOUND"


def test_a_read_sent_to_a_replaced_leader_sees_what_the_new_leader_committed(cluster):
    old = cluster.leader()
    with LineClient(old.client_address) as stale:
        stale.request(b"list-tube-used")
        old.signal(signal.SIGSTOP)
        try:
            others = [n for n in cluster.nodes if n is not old]

            def new_leader():
                docs = cluster.statuses(others)
                leaders = {d and d["leader"] for d in docs.values()}
                return len(leaders) == 1 and None not in leaders and old.raft_address not in leaders

            wait_for("a new leader among the others", new_leader, timeout_s=20)
            with LineClient(others[0].client_address) as producer:
                job_id = producer.put(b"after")
            stale.send(b"peek %d\r\n" % job_id)  # read by the frozen node once it resumes
        finally:
            old.signal(signal.SIGCONT)
        assert stale.read_line(timeout_s=10) == b"FOUND %d 5" % job_id
        assert stale.read_exactly(7) == b"after\r\n"


def _pending(client: LineClient) -> bytes:
    """What the server sent that was not read yet, without consuming it."""
    client.sock.settimeout(0.01)
    try:
        return client.buffer + client.sock.recv(4096, socket.MSG_PEEK)
    except (BlockingIOError, TimeoutError):
        return client.buffer


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
