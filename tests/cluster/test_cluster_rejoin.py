"""Goal: a node removed from the cluster, emptied and joining again under the same address is
added back, even when the leader's latest snapshot predates the removal and so still lists it.

Method: one real 3-node cluster with small snapshots (``--snapshot-bytes``). Big puts through the
leader make every node write a snapshot; a follower is then removed with the real ``beanraft
member remove`` (the removal is the log's next entry, after the snapshot), stopped, its data
directory emptied, started again with ``--join`` and added with ``beanraft member add``. The
joiner gets the leader's snapshot, which lists it, then the entries after it, which remove it:
it must wait for the entry that adds it before it takes part in elections. The moment the
joiner has the snapshot, the leader is frozen (SIGSTOP) for a few election timeouts. A joiner
that took the snapshot's word campaigned then, with terms the members ignore; it refused the
leader's older term once the leader was back, never caught up, and the addition timed out. At
the end the node is a member, it never campaigned before it was one, and every job put is
still there.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from cluster_harness import Cluster, LineClient, beanraft_argv, clean_env, wait_for
from test_cluster_membership import TOKEN, member, members_of

SNAPSHOT_BYTES = 50_000  # a leader waits for four times this much journal
BIG_PUTS = 6
BODY = b"r" * 60_000
ADD_ATTEMPTS = 3  # member add, asked again after a leader change
FROZEN_S = 3.0  # the leader stays frozen this long: a few election timeouts of a cluster


def _tail(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def test_a_removed_node_joins_again_though_the_leader_s_snapshot_still_lists_it(tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    flags = ("--admin-token-file", str(token_file), "--snapshot-bytes", str(SNAPSHOT_BYTES))
    cluster = Cluster(tmp_path, size=3, extra_args=flags)
    try:
        cluster.start()
        leader = cluster.leader()
        with LineClient(leader.client_address, timeout_s=30) as client:
            for _ in range(BIG_PUTS):
                client.put(BODY)
        wait_for("every node to write a snapshot",
                 lambda: all("snapshot written at index" in n.log_text() for n in cluster.nodes),
                 60)
        victim = next(n for n in cluster.nodes if n is not leader)
        others = [n for n in cluster.nodes if n is not victim]
        done = member(leader, token_file, "remove", victim.raft_address)
        assert done.returncode == 0, done.stderr
        victim.stop()

        for entry in victim.data_dir.iterdir():
            entry.unlink()
        victim.extra_args = (*flags, "--join", leader.http_address)
        first_life = victim.log_path.stat().st_size
        victim.start()
        wait_for("the joiner to answer", lambda: victim.http("/healthz")[0] == 200, 60)
        adding = subprocess.Popen(
            [*beanraft_argv(), "member", "add", victim.raft_address, "--timeout", "20", "--http",
             leader.http_address, "--admin-token-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        try:
            # Silence the leader once the joiner has the snapshot, for a few election timeouts:
            # a joiner that counted itself a member would campaign. (The other member campaigns
            # too, in vain, so the leader may lose its role when it is back, and the addition
            # with it: it is asked again below, as an operator would.)
            wait_for("the joiner to restore the leader's snapshot", lambda: b"state restored from "
                     b"snapshot" in _tail(victim.log_path, first_life), 30, poll_s=0.002)
            leader.signal(signal.SIGSTOP)
            time.sleep(FROZEN_S)
            leader.signal(signal.SIGCONT)
            _out, err = adding.communicate(timeout=60)
        finally:
            leader.signal(signal.SIGCONT)
            if adding.poll() is None:
                adding.kill()
                adding.communicate()
        for _attempt in range(ADD_ATTEMPTS):
            if adding.returncode == 0 or "is already a member" in err:
                break
            # Any node: the joiner, added before the freeze, may have been elected during it.
            current = wait_for("a leader", lambda: next(
                (n for n in cluster.nodes if (n.status() or {}).get("role") == "leader"), None), 30)
            adding = member(current, token_file, "add", victim.raft_address, "--timeout", "20")
            err = adding.stderr
        assert adding.returncode == 0 or "is already a member" in err, err + victim.log_text(4000)
        wait_for("the joiner to be a ready member",
                 lambda: (victim.status() or {}).get("membership") == "member"
                 and (victim.status() or {}).get("ready"), 30)
        log = _tail(victim.log_path, first_life).decode(errors="replace")
        # It never campaigned before it was a member (once added, it may, like any member).
        campaigned = log.find("role follower -> candidate")
        added = log.find("this node is now a member of the cluster")
        assert campaigned == -1 or -1 < added < campaigned, log
        # The case this test is about: the snapshot listed the joiner, a later entry removed it.
        assert "state restored from snapshot" in log, log
        assert "a snapshot from the leader lists this node" in log, log
        assert "an entry in this node's log removes it" in log, log
        everyone = sorted(n.raft_address for n in cluster.nodes)
        wait_for("every node to list the three members",
                 lambda: all(members_of(n) == everyone for n in cluster.nodes), 30)
        for node in others + [victim]:
            with LineClient(node.client_address, timeout_s=30) as client:
                assert client.yaml(b"stats")["current-jobs-ready"] == str(BIG_PUTS)
    except BaseException:
        for node in cluster.nodes:
            print(f"===== {node.name} raft {node.raft_address} =====\n{node.log_text(6000)}")
        raise
    finally:
        cluster.stop()
