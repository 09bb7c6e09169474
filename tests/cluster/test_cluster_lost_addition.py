"""Goal: a ``member add`` whose leader loses its role after appending the addition, before it
commits, answers that the outcome is unknown (``timeout``, exit status 11) and how to check,
never the definite-sounding ``no_leader``: the addition may well commit under the next leader,
and here it does.

Method: a real three-node cluster with an admin token, and a real ``beanraft serve --join``
started through ``stalling_joiner.py``, which falls silent the moment the entry that adds it
reaches its log, before it acknowledges it: it keeps running and hearing the leader, but nothing
it sends over its Raft port leaves (no acknowledgement, no vote) until it gets SIGUSR1, so the
leader never counts it, however loaded the machine. One follower is frozen with SIGSTOP, and the
real ``beanraft member add`` is asked on the other. The joiner catches up as a learner, the
leader appends the addition (four members, three needed), and only the leader and the asked
follower acknowledge it: it cannot commit, and the leader, hearing from one of three others,
gives up its role 2 s later (pysyncobj's leader fallback) with the entry in its log; no leader
can be elected meanwhile, two of four being silent. Its answer must be exit status 11 saying
the outcome is unknown and naming ``beanraft member list``. Once the frozen follower resumes
and the joiner may speak again, the next leader (any node that can be elected has the entry: the
frozen follower lacks it) must list the new node, with no change pending.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cluster_harness import NodePorts, NodeProcess, beanraft_argv, clean_env, free_ports, wait_for
from test_cluster_learner import _members
from test_cluster_membership import TOKEN

EXIT_TIMEOUT = 11
STALLING_JOINER = [sys.executable, str(Path(__file__).with_name("stalling_joiner.py"))]


def _settled_leader(nodes: list[NodeProcess]) -> tuple[NodeProcess, dict] | None:
    """The node that leads, with its member list, once it has no change pending."""
    for node in nodes:
        if (node.status() or {}).get("role") == "leader":
            listed = _members(node)
            if listed and not listed.get("pending"):
                return node, listed
    return None


def test_an_addition_whose_leader_loses_its_role_after_appending_it_answers_that_the_outcome_is_unknown(
        start_cluster, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    flags = ("--admin-token-file", str(token_file))
    cluster = start_cluster(*flags)
    leader = cluster.leader()
    asked, frozen = cluster.followers()
    joiner = NodeProcess("joiner", NodePorts(*free_ports(3)), [], tmp_path,
                         clean_env(BEANRAFT_CLUSTER_SECRET=cluster.secret),
                         flags + ("--join", asked.http_address), launcher=STALLING_JOINER)
    adding = None
    try:
        joiner.start()
        wait_for("the joiner to answer", lambda: joiner.http("/healthz")[0] == 200, 60)
        frozen.signal(signal.SIGSTOP)
        adding = subprocess.Popen(
            [*beanraft_argv(), "member", "add", joiner.raft_address, "--http",
             asked.http_address, "--admin-token-file", str(token_file), "--timeout", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        out, err = adding.communicate(timeout=60)
        assert adding.returncode == EXIT_TIMEOUT, (adding.returncode, out, err)
        assert "the outcome is unknown" in err and "may or may not commit" in err, err
        assert "beanraft member list" in err and "on another member" in err, err
        # The case this test is about: the entry was in the leader's log when it lost its role,
        # and in the joiner's, which never acknowledged it.
        assert f"{joiner.raft_address} caught up" in leader.log_text(10 ** 7), leader.log_text(4000)
        assert "the entry that adds this node is in its log" in joiner.log_text(10 ** 7)
        assert (leader.status() or {}).get("role") != "leader"
    except BaseException:
        print(f"===== joiner raft {joiner.raft_address} =====\n{joiner.log_text(6000)}")
        raise
    finally:
        frozen.signal(signal.SIGCONT)
        if joiner.running:
            joiner.signal(signal.SIGUSR1)
        if adding is not None and adding.poll() is None:
            adding.kill()
            adding.communicate()
    try:
        # Every node that can be elected has the entry, so the next leader commits it.
        next_leader, listed = wait_for("a leader with no change pending", lambda: _settled_leader(
            cluster.nodes + [joiner]), 60, describe=cluster.describe)
        assert joiner.raft_address in listed["members"], (next_leader, listed)
        wait_for("the new node to be a member", lambda: (joiner.status() or {}).get("membership")
                 == "member", 30)
    finally:
        joiner.stop()
