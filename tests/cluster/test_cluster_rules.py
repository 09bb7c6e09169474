"""The rules version across a rolling upgrade: the cluster switches only when every member agrees.

Method: three real nodes start with ``--max-rules 1``, as a cluster of the earlier BeanRaft
would behave (it applies rules 1 and never tells a higher version). Each is then restarted
without the flag, one at a time, as the rolling upgrade guide says. While any member still
holds at 1 the cluster applies rules 1 (a kick with a worker waiting serves the most urgent job
kicked); once the last one is restarted every node applies rules 2 (1.12's answer: the oldest
buried job), and the three replicas' states are equal. ``earlier_rules.py`` stands in for an
earlier BeanRaft: one from before rules versions (it tells nothing) and one that applies only
rules 1 (a node downgraded past the switch, which must stop rather than diverge).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from cluster_harness import LineClient, wait_for

from beanraft.jobs.commands import RULES_SUPPORTED
from beanraft.replication.rules import EXIT_NEWER_RULES

HOLD = ("--max-rules", "1")


def kick_with_a_worker_waiting(node, tube: bytes) -> int:
    """Bury a pri-50 job, then a pri-0 one, in ``tube``; kick both while a worker waits.
    Returns the id the worker got, minus the first job's id: 0 (oldest buried) or 1."""
    with LineClient(node.client_address) as producer, LineClient(node.client_address) as worker:
        assert producer.request(b"use " + tube) == b"USING " + tube
        first = producer.put(b"a", pri=50)
        second = producer.put(b"b", pri=0)
        for job, pri in ((first, 50), (second, 0)):
            producer.send(b"reserve-job %d\r\n" % job)
            assert producer.read_job()[0] == job
            assert producer.request(b"bury %d %d" % (job, pri)) == b"BURIED"
        worker.send(b"watch " + tube + b"\r\nignore default\r\nreserve\r\n")
        assert worker.read_line() == b"WATCHING 2" and worker.read_line() == b"WATCHING 1"
        time.sleep(0.2)  # the reserve is waiting
        assert producer.request(b"kick 2") == b"KICKED 2"
        got, _body = worker.read_job()
        return got - first


def rules(node) -> dict:
    return node.status()["rules"]


def test_the_cluster_switches_rules_once_the_last_member_agrees(start_cluster):
    cluster = start_cluster(*HOLD)
    assert cluster.wait_rules_settled() == 1
    leader = cluster.leader()
    assert rules(leader)["own"] == 1 and kick_with_a_worker_waiting(leader, b"t0") == 1
    others = [node for node in cluster.nodes if node is not leader]
    for number, node in enumerate(others + [leader], 1):
        node.extra_args = tuple(arg for arg in node.extra_args if arg not in HOLD)
        cluster.restart(node)
        settled = cluster.wait_rules_settled(timeout_s=30)
        if number < len(cluster.nodes):
            # A member still holds at 1: nothing switches, whatever the others agree to.
            assert settled == 1
            assert kick_with_a_worker_waiting(cluster.leader(), b"t%d" % number) == 1
    assert settled == RULES_SUPPORTED == 2
    for node in cluster.nodes:
        doc = rules(node)
        assert doc["applied"] == doc["agreed"] == doc["own"] == 2
        assert set(doc["members"].values()) == {2}
    assert kick_with_a_worker_waiting(cluster.leader(), b"after") == 0
    follower = next(node for node in cluster.nodes if node is not cluster.leader())
    assert kick_with_a_worker_waiting(follower, b"through-a-follower") == 0
    docs = cluster.converged()
    assert len({doc["digest"] for doc in docs.values()}) == 1


def test_a_member_held_back_keeps_a_new_cluster_at_rules_one(start_cluster):
    cluster = start_cluster()
    assert cluster.wait_rules_settled() == 2
    held = cluster.followers()[0]
    held.extra_args = held.extra_args + HOLD
    cluster.restart(held)
    # The switch is for good: a member that holds back later changes nothing already applied,
    # and says so in its status.
    assert cluster.wait_rules_settled(timeout_s=30) == 2
    doc = rules(held)
    assert doc["own"] == 1 and doc["applied"] == 2 and doc["agreed"] == 1


EARLIER = [sys.executable, str(Path(__file__).with_name("earlier_rules.py"))]


def test_a_member_of_an_earlier_version_that_says_nothing_holds_the_cluster_at_rules_one(
        start_cluster):
    cluster = start_cluster(launchers={0: EARLIER + ["silent"]})
    earlier, upgraded = cluster.nodes[0], cluster.nodes[1:]

    def heard_the_upgraded_only() -> bool:
        docs = [rules(node) for node in upgraded]
        return all(doc["members"].get(other.raft_address) == 2
                   for doc in docs for other in upgraded if other.raft_address in doc["members"])

    wait_for("the upgraded members to hear each other", heard_the_upgraded_only, 15)
    time.sleep(1.0)  # a leader that switched would have done it by now (RULES_CHECK_S: 0.25 s)
    for node in upgraded:
        doc = rules(node)
        assert doc["applied"] == doc["agreed"] == 1
        assert doc["members"][earlier.raft_address] is None
    assert kick_with_a_worker_waiting(cluster.leader(), b"mixed") == 1
    earlier.launcher = upgraded[0].launcher
    cluster.restart(earlier)
    assert cluster.wait_rules_settled(timeout_s=30) == 2
    assert kick_with_a_worker_waiting(cluster.leader(), b"upgraded") == 0
    assert len({doc["digest"] for doc in cluster.converged().values()}) == 1


def test_a_node_downgraded_past_the_switch_stops_instead_of_diverging(start_cluster):
    cluster = start_cluster()
    assert cluster.wait_rules_settled() == 2
    with LineClient(cluster.leader().client_address) as client:
        client.put(b"after the switch")
    cluster.converged()
    downgraded = cluster.followers()[0]
    downgraded.stop()
    downgraded.launcher = EARLIER + ["only-1"]
    downgraded.extra_args = downgraded.extra_args + ("--max-rules", "1")
    downgraded.start()
    wait_for("the downgraded node to exit", lambda: not downgraded.running, 30)
    assert downgraded.process.returncode == EXIT_NEWER_RULES
    assert "rules version 2, above 1, the highest this BeanRaft applies" in \
        downgraded.log_text(4000)
    with LineClient(cluster.leader().client_address) as client:
        client.put(b"the two others go on")
