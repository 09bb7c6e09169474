"""A follower whose journal tail was torn by a crash notices it and recovers the entries from its peers.

Method: a real three-process cluster; jobs go in; one follower is killed with SIGKILL, the last
records of its journal are cut short and the bytes before them damaged, as a crash in the middle
of a write would leave them; it restarts, logs the damage, and catches up until every node
reports the same state digest at the same applied index, with every job present.
"""

from __future__ import annotations

import os

import pytest


def tear_journal_tail(data_dir) -> int:
    """Cut the journal in the middle of its last record; return how many bytes were dropped."""
    path = data_dir / "raft.journal"
    data = open(path, "rb").read()
    end = len(data.rstrip(b"\0"))
    cut = end - 7
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.seek(cut - 3)
        f.write(b"\xff\xff\xff")
        f.flush()
        os.fsync(f.fileno())
    return end - cut


@pytest.mark.timeout(120)
def test_a_follower_with_a_torn_journal_tail_recovers_from_its_peers(cluster, clients):
    leader = cluster.leader()
    follower = cluster.followers()[0]
    producer = clients(leader)
    ids = [producer.put(b"job %d" % i) for i in range(30)]
    cluster.converged()
    cluster.kill(follower)
    assert tear_journal_tail(follower.data_dir) > 0
    cluster.restart(follower)
    cluster.converged(timeout_s=30)
    assert "torn or damaged tail" in follower.log_text()
    reader = clients(follower)
    for job_id in ids:
        assert reader.peek(job_id).id == job_id
    assert reader.put(b"after") > ids[-1]
