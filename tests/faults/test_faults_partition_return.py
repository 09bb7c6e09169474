"""A member back from a network partition follows the leader it left, at the same term.

Method: three real ``beanraft serve`` processes, each in a network namespace of its own
(``faultkit.netns``). iptables cuts one follower off from both others, silently (its TCP
connections stay open), for five maximum election timeouts while a client puts jobs through
the leader; then the cut heals. Without pre-vote the cut-off member raises its term at every
election timeout and its first vote request after the cut deposes the leader (every client then
waits for an election); with it, the member only asks, keeps its term, and catches up.
"""

from __future__ import annotations

import time

import pytest

from faultkit import netns
from faultkit.client import Conn
from faultkit.cluster import Cluster

from beanraft.replication.config import Timing

CUT_S = 5 * Timing().election_max_s


def _put(conn: Conn, body: bytes) -> None:
    assert conn.call("put 0 0 60 %d" % len(body), body, timeout_s=10)[0] == "INSERTED"


@pytest.mark.timeout(180)
def test_a_member_back_from_a_partition_does_not_depose_the_leader(tmp_path):
    why = netns.unavailable_reason()
    if why:
        pytest.skip(f"needs network namespaces: {why}")
    with Cluster(tmp_path, layout="netns") as cluster:
        assert cluster.wait_ready(60), "the cluster did not elect a leader"
        leader = cluster.leader()
        term = leader.status()["term"]
        cut_off = next(n for n in cluster.nodes if n is not leader)
        conn = Conn((leader.spec.host, leader.spec.client_port))
        try:
            _put(conn, b"before")
            cluster.network.isolate(cluster.nodes.index(cut_off))
            ends = time.monotonic() + CUT_S
            puts = 0
            while time.monotonic() < ends:  # the majority goes on committing
                _put(conn, b"during %d" % puts)
                puts += 1
                time.sleep(0.05)
            alone = cut_off.status()
            assert alone["term"] == term, alone  # it asked for votes and raised nothing
            assert alone["leader"] is None and not alone["ready"], alone
            cluster.network.heal()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                back = cut_off.status()
                if back and back["leader"] == leader.spec.raft and back["applied_index"] >= \
                        leader.status()["commit_index"]:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"the cut-off member did not catch up: {cut_off.status()}")
            _put(conn, b"after")
            time.sleep(2 * Timing().election_max_s)  # time for a late vote request to land
            docs = cluster.statuses()
            assert {d["term"] for d in docs.values()} == {term}, docs
            assert leader.status()["role"] == "leader"
        finally:
            conn.close()
        assert "leader -> follower" not in leader.log_tail(200_000)
        assert puts >= 10
