"""Goal: `beanraft leader transfer` moves the leadership where it is asked, from any node, and
refuses with a clear message and its own exit status what it cannot do.

Method: one three-node cluster for the module, started with an admin token file; the real CLI
is run as a subprocess against the nodes' HTTP ports. The refusals are produced for real: an
address that is not a member, a missing or wrong token, a SIGSTOPped follower that cannot
acknowledge the latest entry (not caught up), a follower SIGSTOPped after it caught up, which
is asked to take over and cannot (timeout), and at the end a node left alone (no leader).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from cluster_harness import Cluster, LineClient, beanraft_argv, clean_env, wait_for

TOKEN = "transfer-token-0123456789"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("transfer")
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cluster = Cluster(workdir, extra_args=("--admin-token-file", str(token_file)))
    cluster.token_file = token_file
    cluster.start()
    yield cluster
    cluster.stop()


def transfer(node, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = clean_env(**({"BEANRAFT_ADMIN_TOKEN": token} if token else {}))
    return subprocess.run([*beanraft_argv(), "leader", "transfer", "--http", node.http_address,
                           *args], capture_output=True, text=True, env=env, timeout=60)


def test_a_transfer_asked_on_a_follower_moves_the_leadership_to_the_named_node(cluster):
    leader = cluster.leader()
    asked, target = [n for n in cluster.nodes if n is not leader]
    done = transfer(asked, "--to", target.raft_address, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["previous"] == leader.raft_address
    assert answer["leader"] == target.raft_address
    assert cluster.leader() is target
    with LineClient(leader.client_address) as client:  # the old leader serves through the new
        assert client.put(b"after the transfer") > 0


def test_a_transfer_without_a_target_picks_a_caught_up_follower(cluster):
    leader = cluster.leader()
    done = transfer(leader, "--admin-token-file", str(cluster.token_file))
    assert done.returncode == 0, done.stderr
    new = cluster.leader()
    assert new is not leader
    assert done.stdout.strip().startswith(f"leader is now {new.raft_address} (was "
                                          f"{leader.raft_address};")


def test_a_transfer_succeeds_under_a_steady_stream_of_writes(cluster):
    """The leader holds new commands until the target has the whole log: without that, a log
    that grows on every tick is never exactly acknowledged, and the transfer is refused."""
    leader = cluster.leader()
    target, other = [n for n in cluster.nodes if n is not leader]
    stop, acked, failures = threading.Event(), [], []

    def load(node) -> None:  # 20 pipelined puts at a time, until stopped
        try:
            with LineClient(node.client_address) as client:
                for _round in range(100_000):
                    if stop.is_set():
                        return
                    client.send(b"put 0 0 60 1\r\nx\r\n" * 20)
                    acked.extend(client.read_line() for _ in range(20))
        except Exception as error:  # reported below
            failures.append(repr(error))

    threads = [threading.Thread(target=load, args=(node,)) for node in (leader, other, other)]
    for thread in threads:
        thread.start()
    try:
        wait_for("writes to flow", lambda: len(acked) > 200, 30)
        done = transfer(other, "--to", target.raft_address)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert cluster.leader() is target
    assert failures == [] and all(line.startswith(b"INSERTED ") for line in acked)


def test_asking_for_the_current_leader_changes_nothing(cluster):
    leader = cluster.leader()
    done = transfer(leader, "--to", leader.raft_address)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{leader.raft_address} is already the leader"
    assert cluster.leader() is leader


def test_an_address_that_is_not_a_member_is_refused_with_the_members(cluster):
    follower = cluster.followers()[0]
    done = transfer(follower, "--to", "127.0.0.1:1")
    assert done.returncode == 3
    assert "127.0.0.1:1 is not a member of the cluster (members: " in done.stderr
    assert all(n.raft_address in done.stderr for n in cluster.nodes)


def test_without_the_right_token_nothing_moves(cluster):
    leader = cluster.leader()
    missing = transfer(leader, token=None)
    assert missing.returncode == 2 and "BEANRAFT_ADMIN_TOKEN" in missing.stderr
    wrong = transfer(leader, token="not-the-token")
    assert wrong.returncode == 4 and "missing or wrong admin token" in wrong.stderr
    assert cluster.leader() is leader


def post(node, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{node.http_address}/admin/leader/transfer",
                                     data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_endpoint_refuses_a_malformed_request_with_400(cluster):
    leader = cluster.leader()
    for body in (b"[1]", b"not json", b'{"to": 7}', b'{"timeout_s": 0}', b'{"timeout_s": true}',
                 b"[" * 10_000):  # nested deeper than the JSON parser goes, within 16 KiB
        code, answer = post(leader, body)
        assert (code, answer["code"]) == (400, "bad_request"), body
    assert cluster.leader() is leader


def test_a_follower_that_is_behind_is_refused_as_not_caught_up_and_blocks_a_second_transfer(
        cluster):
    leader = cluster.leader()
    frozen, other = [n for n in cluster.nodes if n is not leader]
    started = leader.log_text().count("leadership transfer to")
    frozen.signal(signal.SIGSTOP)
    try:
        with LineClient(other.client_address) as client:
            client.put(b"the frozen follower never acknowledges this")
        env = clean_env(BEANRAFT_ADMIN_TOKEN=TOKEN)
        # Half the timeout is the catch-up wait: long enough for the second CLI to start and
        # ask on a loaded machine (its start-up alone can take over a second).
        first = subprocess.Popen([*beanraft_argv(), "leader", "transfer", "--http",
                                  other.http_address, "--to", frozen.raft_address, "--timeout",
                                  "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env)
        try:
            wait_for("the first transfer to begin on the leader",
                     lambda: leader.log_text().count("leadership transfer to") > started, 20)
            second = transfer(leader)
            _out, first_err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
    finally:
        frozen.signal(signal.SIGCONT)
    assert second.returncode == 4 and "already in progress" in second.stderr
    assert first.returncode == 10, first_err
    assert f"{frozen.raft_address} has " in first_err and "no follower caught up" in first_err
    assert cluster.leader() is leader
    with LineClient(leader.client_address) as client:  # the held commands were let go
        assert client.put(b"after a refused transfer") > 0


def caught_up(leader, follower) -> bool:
    """The leader's /status shows ``follower`` holding everything committed, and nothing is
    appended beyond it (the leader's commit index did not move between two reads)."""
    first = leader.status() or {}
    time.sleep(0.3)
    second = leader.status() or {}
    match = {p["address"]: p["match_index"] for p in second.get("peers", [])}
    return (first.get("commit_index") == second.get("commit_index") is not None
            and match.get(follower.raft_address) == second["commit_index"])


def test_a_target_frozen_after_it_caught_up_times_out_with_504_and_exit_status_11(cluster):
    """The target has the whole log, so the leader asks it to take over; frozen by SIGSTOP, it
    cannot, and the hand-over times out: HTTP 504 with code "timeout", and exit status 11 from
    the CLI. Asked on the other follower, so the answer also travels back from the leader."""
    leader = cluster.leader()
    target, asked = [n for n in cluster.nodes if n is not leader]
    wait_for("the target to hold the leader's whole log", lambda: caught_up(leader, target), 30)
    target.signal(signal.SIGSTOP)
    try:
        body = json.dumps({"to": target.raft_address, "timeout_s": 2}).encode()
        code, answer = post(asked, body)
        done = transfer(asked, "--to", target.raft_address, "--timeout", "2")
    finally:
        target.signal(signal.SIGCONT)
    assert (code, answer["code"]) == (504, "timeout"), answer
    assert f"asked {target.raft_address} to take over" in answer["error"]
    assert done.returncode == 11, done.stderr
    assert f"asked {target.raft_address} to take over" in done.stderr
    # The target, continued, acts on the request it got: one leader again, whichever it is.
    wait_for("one leader that every node knows", lambda: len({
        (n.status() or {}).get("leader") for n in cluster.nodes} - {None}) == 1
        and all((n.status() or {}).get("leader") for n in cluster.nodes), 30)
    with LineClient(asked.client_address) as client:
        assert client.put(b"after a transfer that timed out") > 0


def test_a_node_without_a_leader_says_so(cluster):
    """Last in the module: it stops two of the three nodes."""
    alone = cluster.nodes[0]
    for node in cluster.nodes[1:]:
        node.stop()
    wait_for("the node left alone to know no leader",
             lambda: (alone.status() or {}).get("leader", "?") is None, timeout_s=20)
    done = transfer(alone)
    assert done.returncode == 9
    assert "no leader" in done.stderr
