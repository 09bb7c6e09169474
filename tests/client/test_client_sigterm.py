"""Goal: a stopping leader hands its role over first, and a stopping node's hang-up is not its
clients' close: a beanraft.client session keeps its jobs to resume elsewhere, a plain client's
session ends at once.

Method: a real three-node cluster; a plain client holding a job and a beanraft.client worker
holding another are both connected to the leader, which gets SIGTERM; then the jobs' states are
read on another node and the worker deletes its job. The rolling restart under load is
test_how_to_rolling_upgrade.py; its write pause is measured by the command
`.venv/bin/python tests/client/rolling_restart.py --rounds 3`, never asserted in the suite.
"""

from __future__ import annotations

import pytest
from test_client_failover import on_node

from cluster.cluster_harness import LineClient


def job_state(node, job_id: int) -> str:
    with LineClient(node.client_address) as client:
        return client.yaml(b"stats-job %d" % job_id)["state"]


@pytest.mark.timeout(120)
def test_sigterm_of_the_leader_hands_over_keeps_sessions_with_an_id_and_closes_the_others(
        client_cluster, tube):
    cluster = client_cluster
    leader = cluster.leader()
    other = next(n for n in cluster.nodes if n is not leader)
    with LineClient(other.client_address) as producer:
        assert producer.request(b"use " + tube.encode()) == b"USING " + tube.encode()
        producer.put(b"for the plain client")
        producer.put(b"for the beanraft.client worker")
    plain = LineClient(leader.client_address)
    assert plain.request(b"watch " + tube.encode()).startswith(b"WATCHING")
    plain.send(b"reserve-with-timeout 5\r\n")
    plain_job, _body = plain.read_job()
    worker = on_node(cluster, leader, tube)
    try:
        job = worker.reserve(timeout=5)
        leader.stop()  # SIGTERM, and wait for the exit
        assert leader.process.returncode == 0
        assert "handed the leadership to" in leader.log_text()
        # The plain client was answered and hung up on cleanly: an end of file, not a reset.
        plain.sock.settimeout(5)
        assert plain.sock.recv(100) == b""
        # Its session was closed before the node exited, so its job is ready at once ...
        assert job_state(other, plain_job) == "ready"
        # ... while the worker's session was kept for it to resume on another node.
        assert job_state(other, job.id) == "reserved"
        job.delete()
        assert worker.failovers == 1 and worker.address != leader.client_address
    finally:
        plain.close()
        worker.close()
        cluster.restart(leader)
