"""Goal: a node that joins catches up as a learner before it counts toward the quorum, so a
joiner that lags (here: frozen) never weakens the majority; a pending addition survives the
kill -9 of the leader (the next leader takes it over and completes it); a removed node is told,
stops campaigning and says so in its log and /status.

Method: one real 3-node cluster (admin token, small snapshots so a joiner gets a snapshot, then
the log) under a ``beanraft.client`` producer and worker. Each joiner is a real
``beanraft serve --join`` added with the real ``beanraft member add``. The joiner is frozen with
SIGSTOP before it can catch up; then one old follower is frozen too: with the joiner counted
(four members, two alive) no write could commit, with the joiner a learner (three members, two
alive) writes go on, which is what the test asserts. The second joiner is frozen, its addition
asked on the leader, and the leader killed with SIGKILL; once the joiner resumes, the addition
must complete on the new leader without being asked again. At the end every acknowledged put
has been reserved and deleted exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

from cluster_harness import (HOST, Cluster, NodePorts, NodeProcess, beanraft_argv, clean_env,
                             free_ports, wait_for)
from test_cluster_membership import TOKEN, Load, member

FROZEN_PROGRESS_PUTS = 15  # puts the cluster must commit while a follower and the joiner sleep
# Longer than the follower stays frozen: a client of the load that sits on it waits out its 5 s
# timeout before it fails over, and with the default 5 s grace the leader could drop the frozen
# node meanwhile, ending the worker's session there with a job reserved (its delete then gets
# NOT_FOUND, which this test is not about).
NODE_GRACE_S = 15


def _members(node: NodeProcess) -> dict:
    """GET /admin/members (what ``beanraft member list --json`` prints), straight over HTTP:
    the waits below poll it, and a CLI process per poll is slow on a loaded machine."""
    request = urllib.request.Request(f"http://{node.http_address}/admin/members",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as reply:
            return json.loads(reply.read())
    except OSError:
        return {}


def _add_in_background(ask: NodeProcess, token_file, address: str) -> subprocess.Popen:
    return subprocess.Popen([*beanraft_argv(), "member", "add", address, "--http",
                             ask.http_address, "--admin-token-file", str(token_file),
                             "--timeout", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())


def _learning(node: NodeProcess, address: str) -> bool:
    pending = _members(node).get("pending") or {}
    return pending.get("address") == address and pending.get("phase", "").startswith("catching")


def test_a_joiner_counts_only_once_caught_up_survives_a_leader_kill_and_a_removed_node_is_told(
        tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    flags = ("--admin-token-file", str(token_file), "--snapshot-entries", "200",
             "--node-grace", str(NODE_GRACE_S))
    cluster = Cluster(tmp_path, size=3, extra_args=flags)
    joiners: list[NodeProcess] = []
    adds: list[subprocess.Popen] = []
    load = None
    try:
        cluster.start()
        ports = free_ports(6)  # after the cluster has bound its own: a port drawn before could
        #                        be drawn again by the cluster (seen: a joiner's raft port was
        #                        a member's HTTP port)
        env = clean_env(BEANRAFT_CLUSTER_SECRET=cluster.secret)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        for i in range(2):
            # The second joiner reads the members from a follower, which outlives the leader.
            via = leader if i == 0 else follower
            joiners.append(NodeProcess(f"joiner{i + 1}", NodePorts(*ports[3 * i: 3 * i + 3]), [],
                                       tmp_path, env, flags + ("--join", via.http_address)))
        x, y = joiners
        for joiner in joiners:
            joiner.start()
        addresses = [f"{HOST}:{n.ports.client}" for n in cluster.nodes + joiners]
        load = Load(addresses).start()
        for joiner in joiners:
            wait_for(f"{joiner.name} to answer", lambda: joiner.http("/healthz")[0] == 200, 60)
        y.signal(signal.SIGSTOP)  # it waits for its turn (below)
        wait_for("the load to start", lambda: len(load.acked) > 20, 30)

        # 1. A frozen joiner is a learner: the cluster keeps committing on its old majority
        #    even with one old follower frozen too.
        x.signal(signal.SIGSTOP)
        adds.append(_add_in_background(leader, token_file, x.raft_address))
        wait_for("the addition to wait for its learner", lambda: _learning(leader, x.raft_address),
                 30)
        follower.signal(signal.SIGSTOP)
        try:
            before = len(load.acked)
            wait_for("puts to commit with a follower and the joiner frozen",
                     lambda: len(load.acked) >= before + FROZEN_PROGRESS_PUTS, 20)
            listed = _members(leader)
            assert sorted(listed.get("members", ())) == sorted(n.raft_address for n in cluster.nodes)
            assert listed["pending"]["address"] == x.raft_address
        finally:
            follower.signal(signal.SIGCONT)
            x.signal(signal.SIGCONT)
        out, err = adds[0].communicate(timeout=90)
        assert adds[0].returncode == 0, err + x.log_text(3000)
        assert out.startswith(f"added {x.raft_address} in "), out
        wait_for("the new member to register", lambda: (x.status() or {}).get("ready"), 30)
        assert x.status()["membership"] == "member"
        assert "learner" in leader.log_text() and "caught up" in leader.log_text()

        # 2. kill -9 of the leader while a joiner is catching up: the next leader takes the
        #    addition over and completes it.
        # y read the members before x was added: if x leads next, y learns of it by reading
        # the members again from the follower it joins through, or x's connection names it.
        joining = next(line for line in y.log_text().splitlines() if "joining the cluster" in line)
        assert x.raft_address not in joining, joining
        adds.append(_add_in_background(leader, token_file, y.raft_address))
        wait_for("the addition to wait for its learner", lambda: _learning(leader, y.raft_address),
                 30)
        time.sleep(0.6)  # the followers hear what is pending twice a second
        leader.kill()
        adds[1].communicate(timeout=60)  # the node asked died: its answer is lost
        survivors = [n for n in cluster.nodes + [x] if n.running]
        new_leader = wait_for("a new leader", lambda: next(
            (n for n in survivors if (n.status() or {}).get("role") == "leader"), None), 30)
        wait_for("the new leader to take the addition over",
                 lambda: _learning(new_leader, y.raft_address), 30)
        if new_leader is not x:
            # Hand the leadership to x, which y has never heard of: x takes the addition over
            # in turn and must reach y all the same.
            time.sleep(0.6)
            moved = subprocess.run([*beanraft_argv(), "leader", "transfer", "--to", x.raft_address,
                                    "--http", x.http_address, "--admin-token-file",
                                    str(token_file)], capture_output=True, text=True,
                                   env=clean_env(), timeout=60)
            assert moved.returncode == 0, moved.stderr
            wait_for("x to take the addition over", lambda: _learning(x, y.raft_address), 30)
        y.signal(signal.SIGCONT)
        wait_for("the addition to complete on x",
                 lambda: y.raft_address in _members(x).get("members", ())
                 and not _members(x).get("pending"), 60)
        assert "taking over the addition of " + y.raft_address in x.log_text()
        assert f"joining: {x.raft_address} is a member too" in y.log_text()
        wait_for("the taken-over member to register",
                 lambda: (y.status() or {}).get("membership") == "member"
                 and (y.status() or {}).get("ready"), 30)

        # 3. A removed node is told: it stops campaigning, and says so.
        deadline = time.monotonic() + 20
        while True:  # right after a change or an election the leader says "ask again" (12)
            done = member(y, token_file, "remove", x.raft_address)
            if done.returncode != 12 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 0, done.stderr
        wait_for("the removed node to know", lambda: (x.status() or {}).get("membership")
                 == "removed", 20)
        term = x.status()["term"]
        time.sleep(1.5)  # several election timeouts of a cluster
        assert x.status()["term"] == term and x.status()["role"] == "follower"
        assert x.http("/readyz")[0] == 503 and not x.status()["ready"]
        assert "this node is no longer a member" in x.log_text()

        load.finish()
        assert not load.errors, load.errors[:5]
        lost = [b for b in load.acked if b not in load.deleted]
        assert not lost, f"{len(lost)} acknowledged jobs never delivered: {lost[:5]}"
        twice = {b: c for b, c in load.reserved.items() if c > 1}
        assert not twice, f"jobs run twice: {list(twice.items())[:5]}"
        load = None
    except BaseException:
        for node in cluster.nodes + joiners:
            print(f"===== {node.name} raft {node.raft_address} =====\n{node.log_text(6000)}")
        raise
    finally:
        if load is not None:
            load.stop.set()
        for proc in adds:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for node in joiners:
            if node.running:
                node.signal(signal.SIGCONT)
            node.stop()
        for node in cluster.nodes:
            if node.running:
                node.signal(signal.SIGCONT)
        cluster.stop()
