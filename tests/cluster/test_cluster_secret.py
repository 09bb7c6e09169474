"""A process that does not hold the cluster secret cannot join, disturb or lead the cluster.

Method: next to a fresh three-process cluster, start intruders with the same ``--peer`` list as
the members: one with a different secret (from ``beanraft secret``, in a file) and one with
``--insecure``. While they keep trying to connect, we poll everybody's /status, bounded: the
intruders never know a leader, never lead and never serve clients; the members' peer lists keep
showing exactly each other, connected; and the cluster's term, leader, commit index and state
digest do not move. Then the cluster still commits normally.
"""

from __future__ import annotations

import socket
import subprocess
import time

import greenstalk
from cluster_harness import Cluster, NodePorts, NodeProcess, beanraft_argv, clean_env, free_ports, wait_for

OBSERVE_S = 4.0  # several of the intruders' connection retries (every 0.5 s)


def start_intruder(cluster: Cluster, name: str, env: dict[str, str], *flags: str) -> NodeProcess:
    ports = NodePorts(*free_ports(3))
    intruder = NodeProcess(name, ports, [n.raft_address for n in cluster.nodes], cluster.workdir,
                           env, flags)
    cluster.retired.append(intruder)  # stopped by PID and logged with the cluster
    intruder.start()
    wait_for(f"{name}'s /status", intruder.status, timeout_s=30, poll_s=0.1,
             describe=lambda: intruder.log_text(2000))
    return intruder


def cluster_fingerprint(cluster: Cluster) -> dict[str, tuple]:
    """What must not move: each member's role, leader, term, indexes, digest and peer links."""
    docs = cluster.statuses(cluster.nodes, digest=True)
    return {name: (d["role"], d["leader"], d["term"], d["commit_index"], d["digest_index"],
                   d["digest"], tuple((p["address"], p["connected"]) for p in d["peers"]))
            for name, d in docs.items()}


def refuses_clients(node: NodeProcess) -> bool:
    try:
        with socket.create_connection(node.client_address, timeout=1):
            return False
    except OSError:
        return True


def test_peers_without_the_secret_are_refused_and_change_nothing(cluster, tmp_path):
    other_secret = subprocess.run(beanraft_argv() + ["secret"], capture_output=True, text=True,
                                  timeout=60, env=clean_env(), check=True).stdout.strip()
    assert other_secret != cluster.secret
    secret_file = tmp_path / "other-secret"
    secret_file.write_text(other_secret + "\n")
    secret_file.chmod(0o600)  # serve refuses a secret that others may read
    cluster.leader()
    cluster.wait_links_up()
    before = cluster_fingerprint(cluster)
    assert len({fp[5] for fp in before.values()}) == 1, before  # one digest at one index

    intruders = [
        start_intruder(cluster, "wrong-secret", clean_env(), "--cluster-secret-file", str(secret_file)),
        start_intruder(cluster, "insecure", clean_env(), "--insecure"),
    ]
    deadline = time.monotonic() + OBSERVE_S
    for _poll in range(int(OBSERVE_S / 0.2) + 1):
        for intruder in intruders:
            assert intruder.running, intruder.log_text()
            doc = intruder.status()
            # Its own "connected" flags are not checked: an --insecure node counts a bare TCP
            # connect as connected until the member drops it, so they may flicker.
            assert doc["role"] != "leader" and doc["leader"] is None, doc
            assert doc["ready"] is False and intruder.http("/readyz")[0] == 503
            assert refuses_clients(intruder)
        assert cluster_fingerprint(cluster) == before
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)

    with greenstalk.Client(cluster.nodes[0].client_address) as client:
        job_id = client.put("the cluster still works")
    docs = cluster.converged()
    assert len({d["digest"] for d in docs.values()}) == 1
    assert all(d["digest_index"] > before[name][4] for name, d in docs.items())
    with greenstalk.Client(cluster.nodes[2].client_address) as client:
        assert client.peek(job_id).body == "the cluster still works"
