"""The rules version across a rolling upgrade: the cluster switches only when every member agrees.

Method: three real nodes start with ``--max-rules 1``, as a cluster of the earlier BeanRaft
would behave (it applies rules 1 and never tells a higher version). Each is then restarted
without the flag, one at a time, as the rolling upgrade guide says. While any member still
holds at 1 the cluster applies rules 1 (a kick with a worker waiting serves the most urgent job
kicked); once the last one is restarted every node applies the rules this BeanRaft applies
(1.12's answer: the oldest buried job), and the three replicas' states are equal. A cluster of
the release before (``--max-rules 2``) upgraded the same way switches to 3, after which jobs
released with equal delays in one packet become ready in the order released, and a client that
half-closes while it waits has the commands it sent behind its reserve run (before: dropped).
``earlier_rules.py`` stands in for an earlier BeanRaft: one from before rules versions (it tells
nothing) and one that applies only rules 1 (a node downgraded past the switch, which must stop
rather than diverge).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cluster_harness import (LineClient, NodePorts, NodeProcess, beanraft_argv, clean_env,
                             free_ports, wait_for)
from test_cluster_learner import _add_in_background, _learning, _members
from test_cluster_membership import TOKEN

from beanraft.jobs.commands import RULES_SUPPORTED
from beanraft.replication.rules import EXIT_NEWER_RULES

HOLD = ("--max-rules", "1")
TOP = RULES_SUPPORTED  # the rules version this BeanRaft applies, which its clusters switch to


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


def release_alike_with_a_worker_waiting(node, tube: bytes) -> int:
    """Reserve two jobs of ``tube``, then release the second and the first in one packet with
    equal delays while a worker waits. Returns the id the worker got, minus the first job's id:
    1 (the order released, rules 3) or, under rules 1 and 2, either."""
    with LineClient(node.client_address) as holder, LineClient(node.client_address) as worker:
        assert holder.request(b"use " + tube) == b"USING " + tube
        first, second = holder.put(b"a"), holder.put(b"b")
        for job in (first, second):
            holder.send(b"reserve-job %d\r\n" % job)
            assert holder.read_job()[0] == job
        worker.send(b"watch " + tube + b"\r\nignore default\r\nreserve\r\n")
        assert worker.read_line() == b"WATCHING 2" and worker.read_line() == b"WATCHING 1"
        holder.send(b"release %d 0 1\r\nrelease %d 0 1\r\n" % (second, first))
        assert holder.read_line() == b"RELEASED" and holder.read_line() == b"RELEASED"
        got, _body = worker.read_job(timeout_s=10)
        return got - first


def half_closed_waiter_runs_its_delete(node) -> bool:
    """A client holding a job waits in reserve with a delete of that job behind it, then
    half-closes. Returns whether the delete ran (rules 3, as 1.12) or the session's close gave
    the job back (before). Either way the waiting reserve is answered TIMED_OUT."""
    with LineClient(node.client_address) as client, LineClient(node.client_address) as other:
        job = client.put(b"held")
        client.send(b"reserve-job %d\r\n" % job)
        assert client.read_job()[0] == job
        client.send(b"watch empty\r\nignore default\r\nreserve\r\ndelete %d\r\n" % job)
        assert client.read_line() == b"WATCHING 2" and client.read_line() == b"WATCHING 1"
        time.sleep(0.2)  # the reserve is waiting
        client.sock.shutdown(socket.SHUT_WR)
        received = client.buffer
        while chunk := client.sock.recv(4096):  # the node closes once it has answered
            received += chunk
        assert received in (b"TIMED_OUT\r\n", b"TIMED_OUT\r\nDELETED\r\n"), received
        ran = received.endswith(b"DELETED\r\n")
        # The node closed the session before it closed the connection.
        assert other.request(b"peek %d" % job).startswith(b"NOT_FOUND" if ran else b"FOUND")
        return ran


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
    assert settled == TOP
    # A member may still hold the last restarted node's word from before its restart (fresh for
    # 5 s) until that node's next message: wait for every node to have heard the new one.
    wait_for(f"every node to agree to {TOP}", lambda: all(
        rules(node)["applied"] == rules(node)["agreed"] == rules(node)["own"] == TOP
        and set(rules(node)["members"].values()) == {TOP} for node in cluster.nodes), 15)
    assert kick_with_a_worker_waiting(cluster.leader(), b"after") == 0
    follower = next(node for node in cluster.nodes if node is not cluster.leader())
    assert kick_with_a_worker_waiting(follower, b"through-a-follower") == 0
    docs = cluster.converged()
    assert len({doc["digest"] for doc in docs.values()}) == 1


def test_a_cluster_of_the_release_before_switches_from_rules_two_to_three(start_cluster):
    hold = ("--max-rules", "2")
    cluster = start_cluster(*hold)
    assert cluster.wait_rules_settled() == 2
    assert kick_with_a_worker_waiting(cluster.leader(), b"before") == 0
    assert not half_closed_waiter_runs_its_delete(cluster.followers()[0])
    for node in cluster.followers() + [cluster.leader()]:
        node.extra_args = tuple(arg for arg in node.extra_args if arg not in hold)
        cluster.restart(node)
    assert cluster.wait_rules_settled(timeout_s=30) == TOP == 3
    assert release_alike_with_a_worker_waiting(cluster.leader(), b"leader") == 1
    follower = next(node for node in cluster.nodes if node is not cluster.leader())
    assert release_alike_with_a_worker_waiting(follower, b"follower") == 1
    assert kick_with_a_worker_waiting(follower, b"kicked") == 0
    assert half_closed_waiter_runs_its_delete(follower)
    assert half_closed_waiter_runs_its_delete(cluster.leader())
    assert len({doc["digest"] for doc in cluster.converged().values()}) == 1


def test_a_member_held_back_keeps_a_new_cluster_at_rules_one(start_cluster):
    cluster = start_cluster()
    assert cluster.wait_rules_settled() == TOP
    held = cluster.followers()[0]
    held.extra_args = held.extra_args + HOLD
    cluster.restart(held)
    # The switch is for good: a member that holds back later changes nothing already applied,
    # and says so in its status.
    assert cluster.wait_rules_settled(timeout_s=30) == TOP
    doc = rules(held)
    assert doc["own"] == 1 and doc["applied"] == TOP and doc["agreed"] == 1


EARLIER = [sys.executable, str(Path(__file__).with_name("earlier_rules.py"))]


def test_a_member_of_an_earlier_version_that_says_nothing_holds_the_cluster_at_rules_one(
        start_cluster):
    cluster = start_cluster(launchers={0: EARLIER + ["silent"]})
    earlier, upgraded = cluster.nodes[0], cluster.nodes[1:]

    def heard_the_upgraded_only() -> bool:
        docs = [rules(node) for node in upgraded]
        return all(doc["members"].get(other.raft_address) == TOP
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
    assert cluster.wait_rules_settled(timeout_s=30) == TOP
    assert kick_with_a_worker_waiting(cluster.leader(), b"upgraded") == 0
    assert len({doc["digest"] for doc in cluster.converged().values()}) == 1


def test_a_node_downgraded_past_the_switch_stops_instead_of_diverging(start_cluster):
    cluster = start_cluster()
    assert cluster.wait_rules_settled() == TOP
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
    assert f"rules version {TOP}, above 1, the highest this BeanRaft applies" in \
        downgraded.log_text(4000)
    with LineClient(cluster.leader().client_address) as client:
        client.put(b"the two others go on")



def _admin_token(tmp_path) -> tuple[Path, tuple[str, ...]]:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return token_file, ("--admin-token-file", str(token_file))


def _silent_joiner(cluster, leader, flags: tuple[str, ...], tmp_path) -> NodeProcess:
    """A node from before rules versions, started with --join and answering (not added yet)."""
    joiner = NodeProcess("joiner", NodePorts(*free_ports(3)), [], tmp_path,
                         clean_env(BEANRAFT_CLUSTER_SECRET=cluster.secret),
                         flags + ("--join", leader.http_address), launcher=EARLIER + ["silent"])
    cluster.retired.append(joiner)  # stopped at teardown, and no member yet
    joiner.start()
    wait_for("the joiner to answer", lambda: joiner.http("/healthz")[0] == 200, 60)
    return joiner


def _leader_rules_if(leader, accept) -> dict | None:
    """The leader's rules document when ``accept`` says yes to it, else None."""
    doc = leader.status()
    return doc["rules"] if doc and accept(doc["rules"]) else None


def test_a_learner_of_an_earlier_version_holds_the_switch_while_it_catches_up(start_cluster,
                                                                              tmp_path):
    # A joining node receives every entry from the leader before it is a member. One from
    # before rules versions (silent) is added while the last held member is upgraded: the
    # leader must count the learner, or the RULES entry it proposes would reach the learner,
    # which applies it as an unknown command and goes on by rules 1, parted from the others.
    token_file, flags = _admin_token(tmp_path)
    cluster = start_cluster(*flags, *HOLD)
    assert cluster.wait_rules_settled() == 1
    held = cluster.followers()[0]
    for node in cluster.nodes:
        if node is not held:
            node.extra_args = tuple(arg for arg in node.extra_args if arg not in HOLD)
            cluster.restart(node)
    assert cluster.wait_rules_settled(timeout_s=30) == 1
    leader = cluster.leader()
    joiner = _silent_joiner(cluster, leader, flags, tmp_path)
    joiner.signal(signal.SIGSTOP)  # a learner for as long as this test needs
    try:
        adding = _add_in_background(leader, token_file, joiner.raft_address)
        wait_for("the leader to replicate to its learner",
                 lambda: _learning(leader, joiner.raft_address), 30)
        held.extra_args = tuple(arg for arg in held.extra_args if arg not in HOLD)
        cluster.restart(held)
        leader = cluster.leader()
        members = [n.raft_address for n in cluster.nodes if n is not leader]
        wait_for(f"the leader to hear every member agree to {TOP}", lambda: _leader_rules_if(
            leader, lambda doc: all(doc["members"].get(a) == TOP for a in members)), 15)
        time.sleep(1.0)  # a leader that switched would have done it by now (RULES_CHECK_S)
        assert {rules(node)["applied"] for node in cluster.nodes} == {1}
        doc = rules(leader)
        assert doc["agreed"] == 1 and doc["members"][joiner.raft_address] is None
    finally:
        joiner.signal(signal.SIGCONT)
    # The held member may have been the leader: its addition is then taken over by the next
    # one, and the answer of the one asked is lost.
    adding.communicate(timeout=90)
    leader = cluster.leader()
    wait_for("the addition to complete", lambda: joiner.raft_address in _members(leader).get(
        "members", ()) and not _members(leader).get("pending"), 60)
    cluster.nodes.append(joiner)
    assert len({doc["digest"] for doc in cluster.converged().values()}) == 1
    assert {rules(node)["applied"] for node in cluster.nodes} == {1}
    joiner.launcher = held.launcher  # the last member of the earlier version is upgraded
    cluster.restart(joiner)
    assert cluster.wait_rules_settled(timeout_s=30) == TOP
    assert len({doc["digest"] for doc in cluster.converged().values()}) == 1


def test_a_node_of_an_earlier_version_is_not_added_once_the_cluster_switched(start_cluster,
                                                                             tmp_path):
    # After the switch a node that does not apply its rules would apply what follows by rules 1:
    # it catches up as a learner, but its addition times out with the reason, and the members
    # stay as they were. The same node upgraded is added.
    token_file, flags = _admin_token(tmp_path)
    cluster = start_cluster(*flags)
    assert cluster.wait_rules_settled() == TOP
    leader = cluster.leader()
    joiner = _silent_joiner(cluster, leader, flags, tmp_path)
    done = subprocess.run([*beanraft_argv(), "member", "add", joiner.raft_address, "--http",
                           leader.http_address, "--admin-token-file", str(token_file),
                           "--timeout", "4"], capture_output=True, text=True, env=clean_env(),
                          timeout=60)
    assert done.returncode == 11, done.stderr
    assert "has said nothing of the rules version it applies, and the cluster applies " \
           f"version {TOP}" in done.stderr
    assert joiner.raft_address not in _members(leader).get("members", ())
    joiner.stop()
    joiner.launcher = leader.launcher
    joiner.start()
    wait_for("the upgraded joiner to answer", lambda: joiner.http("/healthz")[0] == 200, 60)
    adding = _add_in_background(leader, token_file, joiner.raft_address)
    out, err = adding.communicate(timeout=90)
    assert adding.returncode == 0, err
    assert joiner.raft_address in _members(leader)["members"]
    cluster.nodes.append(joiner)
    assert cluster.wait_rules_settled(timeout_s=30) == TOP
