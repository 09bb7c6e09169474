"""A session resumed on another node keeps its reservations when its node is killed or frozen,
learns of a job whose RESERVED reply its node never sent (and which the thawed node then
withholds from the old connection), and is released as before when nobody resumes it within the
node grace.

Method: one real three-node cluster with a two-second ``--node-grace`` (the grace test runs first,
on undisturbed nodes). A worker connected to one node asks for its session id and reserves jobs;
that node is then killed with SIGKILL or frozen with SIGSTOP, and the worker connects to a
surviving node and resumes. We wait past the grace
before acting on the jobs, so the dead node's DROP_NODE has happened and must not have released
them, then check RESUMED's list, that the TTR kept running, and that delete succeeds. Every node
is running again at the end of each test.
"""

from __future__ import annotations

import signal
import time

import pytest

from cluster.cluster_harness import wait_for

NODE_GRACE_S = 2
CLUSTER_ARGS = ("--node-grace", str(NODE_GRACE_S))
ELECTION_S = 30  # a bound for an election on a busy machine, not a measurement


def job_state(client, job_id: int) -> dict[str, str]:
    return client.yaml(b"stats-job %d" % job_id)


def resume_somewhere(connect, nodes, session_id: bytes):
    """(client, RESUMED list) through the first of ``nodes`` that can commit the resume."""

    def attempt():
        for node in nodes:
            try:
                client = connect(node)
                return client, client.resume(session_id)
            except (OSError, TimeoutError):
                continue
        return None

    return wait_for("a node to commit the resume", attempt, timeout_s=ELECTION_S, poll_s=0.5)


def test_a_session_not_resumed_within_the_grace_is_released(extension_cluster, connect):
    cluster = extension_cluster
    doomed = cluster.followers()[0]
    producer = connect(cluster.leader())
    worker = connect(doomed)
    session_id = worker.session_id()
    job_id = producer.put(b"c", ttr=300)
    worker.send(b"reserve\r\n")
    assert worker.read_job()[0] == job_id
    cluster.kill(doomed)
    wait_for("the job to be released after the grace",
             lambda: job_state(producer, job_id)["state"] == "ready",
             timeout_s=NODE_GRACE_S + ELECTION_S, poll_s=0.2)
    assert connect(cluster.running[0]).resume(session_id) is None
    cluster.restart(doomed)
    assert producer.request(b"delete %d" % job_id) == b"DELETED"


def test_a_session_resumed_after_its_node_is_killed_keeps_its_reservations(
        extension_cluster, connect):
    cluster = extension_cluster
    doomed = cluster.leader()  # the hardest case: the resume waits for a new leader
    worker = connect(doomed)
    session_id = worker.session_id()
    first, second = worker.put(b"a", ttr=120), worker.put(b"b", ttr=120)
    worker.send(b"reserve\r\nreserve\r\n")
    assert sorted([worker.read_job()[0], worker.read_job()[0]]) == [first, second]
    cluster.kill(doomed)
    survivors = cluster.running
    client, jobs = resume_somewhere(connect, survivors, session_id)
    assert jobs == [first, second]
    time.sleep(NODE_GRACE_S + 1)  # the dead node's sessions are dropped by now
    stats = job_state(client, first)
    assert stats["state"] == "reserved" and int(stats["time-left"]) < 120
    assert client.request(b"delete %d" % first) == b"DELETED"
    assert client.request(b"touch %d" % second) == b"TOUCHED"
    assert client.request(b"release %d 0 0" % second) == b"RELEASED"
    assert client.session_id() == session_id  # one id across resumes
    cluster.restart(doomed)
    assert client.request(b"delete %d" % second) == b"DELETED"


def test_a_reserved_reply_lost_on_a_frozen_node_is_reported_by_resumed(
        extension_cluster, connect):
    cluster = extension_cluster
    leader = cluster.leader()
    frozen, other = cluster.followers()
    producer = connect(leader)
    worker = connect(frozen)
    session_id = worker.session_id()
    worker.send(b"reserve\r\n")  # waits: the wait itself is in the replicated state
    time.sleep(0.3)
    frozen.signal(signal.SIGSTOP)
    try:
        job_id = producer.put(b"never seen by the worker")
        client, jobs = resume_somewhere(connect, [other, leader], session_id)
        assert jobs == [job_id]
        time.sleep(NODE_GRACE_S + 1)
        assert job_state(client, job_id)["state"] == "reserved"
    finally:
        frozen.signal(signal.SIGCONT)
    # Thawed, the old connection may no longer act on the job, nor even be told of it: its
    # node confirms with the leader that the session is still its own before it sends a
    # RESERVED (the resume committed while it was frozen), then closes it.
    try:
        worker.send(b"delete %d\r\n" % job_id)
    except OSError:
        pass  # already closed
    wait_for("the old connection to be closed", lambda: _closed(worker), timeout_s=20, poll_s=0.2)
    assert b"DELETED" not in worker.buffer and b"RESERVED" not in worker.buffer
    assert job_state(client, job_id)["state"] == "reserved"
    assert client.request(b"delete %d" % job_id) == b"DELETED"
    cluster.wait_ready(timeout_s=ELECTION_S)


def _closed(client) -> bool:
    try:
        client.sock.settimeout(0.05)
        chunk = client.sock.recv(65536)
    except TimeoutError:
        return False
    except OSError:
        return True
    client.buffer += chunk
    return not chunk


pytestmark = pytest.mark.timeout(120)
