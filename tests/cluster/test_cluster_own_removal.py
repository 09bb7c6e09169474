"""Goal: a member asked to remove itself answers success only once the removal committed, and
otherwise answers that the outcome is unknown (``timeout``, exit status 11), never success and
never a definite failure: when the removal cannot commit and its leader dies, and when the
leader runs the earlier version, which answered before it proposed the removal.

Method: real three-node clusters with an admin token. A follower is asked, over its own HTTP
port, to remove itself. (1) The moment its answer arrives, the leader's and the other member's
GET /admin/members must no longer name it, and the leader's last change must be the removal,
done (the leader records it as the removal commits); the removed node, hearing from no leader,
must campaign again once (one log line) and change nothing: the leader keeps its term. (2) The
other follower is frozen with SIGSTOP, so that the removal, forced, cannot commit; once the
leader has told the asked node it is removed (the removal is in the leader's log), the leader is
killed with SIGKILL and the frozen follower resumed: the real ``beanraft member remove`` must
exit 11 saying the outcome is unknown, and the next leader, which never had the entry, must
still list the node. The same with an entry committed while the follower is frozen: only the
asked node's log has it, so the asked node, running or restarted (its members file says
"removed"), must lead with that entry and be a member again. (3) Every node runs
``earlier_self_removal.py``, whose leader answers a member's own removal before proposing it,
as the earlier version did: the asked node must not report success.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cluster_harness import beanraft_argv, clean_env, wait_for

TOKEN = "own-removal-token-0123456789"
EXIT_TIMEOUT = 11


def _token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def _admin(node, doc: dict | None = None, timeout_s: float = 10.0) -> tuple[int | None, dict]:
    """GET (``doc`` None) or POST /admin/members on ``node``: (HTTP status, JSON body)."""
    data = json.dumps(doc).encode() if doc is not None else None
    request = urllib.request.Request(f"http://{node.http_address}/admin/members", data=data,
                                     method="POST" if doc is not None else "GET",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError as error:
        return None, {"error": repr(error)}


def _remove_in_background(asked, token_file: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([*beanraft_argv(), "member", "remove", asked.raft_address, "--http",
                             asked.http_address, "--admin-token-file", str(token_file), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())


def _membership(node) -> str | None:
    return (node.status() or {}).get("membership")


def test_a_member_that_removes_itself_answers_success_once_the_removal_committed(
        start_cluster, tmp_path):
    cluster = start_cluster("--admin-token-file", str(_token_file(tmp_path)))
    leader = cluster.leader()
    asked, other = cluster.followers()
    status, answer = _admin(asked, {"action": "remove", "address": asked.raft_address,
                                    "timeout_s": 20})
    seen = {node.name: _admin(node)[1] for node in (leader, other)}  # at once, before anything
    assert status == 200, answer
    assert asked.raft_address not in answer["members"], answer
    for name, doc in seen.items():
        assert asked.raft_address not in doc["members"], (name, doc)
    assert seen[leader.name]["last"] == {"action": "remove", "address": asked.raft_address,
                                         "outcome": "done"}, seen[leader.name]
    wait_for("the asked node to be told it is removed",
             lambda: _membership(asked) == "removed", 10)
    # Hearing from no leader for five election timeouts, it asks for pre-votes again in case
    # the removal was lost; it committed, so the members refuse it and nothing changes.
    term = leader.status()["term"]
    wait_for("the asked node to campaign again", lambda: "campaigns again" in asked.log_text(),
             30)
    time.sleep(3.0)  # a few of its pre-vote rounds (one per election timeout)
    assert leader.status()["term"] == term and (leader.status() or {})["role"] == "leader"
    assert _membership(asked) == "removed" and asked.status()["leader"] is None
    text = asked.log_text()
    # Only what came after: at the cluster's start this node may have campaigned and lost.
    after = text.split("campaigns again", 1)[1]
    assert "campaigns again" not in after and "granted by a majority" not in after, text


def test_a_removal_that_never_commits_answers_that_the_outcome_is_unknown(start_cluster,
                                                                         tmp_path):
    token_file = _token_file(tmp_path)
    cluster = start_cluster("--admin-token-file", str(token_file))
    leader = cluster.leader()
    asked, frozen = cluster.followers()
    frozen.signal(signal.SIGSTOP)  # without it, the smaller list {leader, frozen} cannot commit
    removing = None
    try:
        removing = _remove_in_background(asked, token_file, "--force", "--timeout", "8")
        # The leader appended the removal (and cut the asked node off): now it dies with the
        # only copy of that entry.
        wait_for("the leader to tell the asked node it is removed",
                 lambda: _membership(asked) == "removed" or removing.poll() is not None, 30)
        leader.kill()
        frozen.signal(signal.SIGCONT)
        out, err = removing.communicate(timeout=60)
    finally:
        frozen.signal(signal.SIGCONT)
        if removing is not None and removing.poll() is None:
            removing.kill()
            removing.communicate()
    assert removing.returncode == EXIT_TIMEOUT, (removing.returncode, out, err)
    assert "the outcome is unknown" in err and "may or may not have committed" in err, err
    assert "the leader told this node it is removed" in err, err
    # It never committed: the next leader never had the entry, and still counts the node. That
    # leader is the asked node itself when its log is the longer one (it acknowledged entries
    # the frozen node never got): told it is removed, it campaigns again once it has heard from
    # no leader for a few election timeouts, and the resumed follower cannot win without it.
    leaders: list = []

    def a_survivor_leads() -> bool:
        leaders[:] = [n for n in (asked, frozen) if (n.status() or {}).get("role") == "leader"]
        return bool(leaders)

    wait_for("a survivor to lead", a_survivor_leads, 40, describe=cluster.describe)
    assert asked.raft_address in _admin(leaders[0])[1]["members"]
    wait_for("the asked node to be a member again", lambda: _membership(asked) == "member", 30)


@pytest.mark.parametrize("restarted", [False, True], ids=["running", "restarted"])
def test_a_node_told_it_is_removed_leads_when_only_its_log_has_every_committed_entry(
        start_cluster, clients, tmp_path, restarted):
    token_file = _token_file(tmp_path)
    cluster = start_cluster("--admin-token-file", str(token_file))
    leader = cluster.leader()
    asked, frozen = cluster.followers()
    frozen.signal(signal.SIGSTOP)
    removing = None
    try:
        # Committed by the leader and the asked node alone: the frozen node never gets it, so
        # it can never be elected against the asked node's longer log.
        clients(leader).put(b"committed while one member was frozen")
        removing = _remove_in_background(asked, token_file, "--force", "--timeout", "8")
        wait_for("the leader to tell the asked node it is removed",
                 lambda: _membership(asked) == "removed" or removing.poll() is not None, 30)
        leader.kill()
        if restarted:
            # Its members file says "removed": it starts held, for the same bounded time.
            asked.kill()
            asked.start()
        frozen.signal(signal.SIGCONT)
        out, err = removing.communicate(timeout=60)
    finally:
        frozen.signal(signal.SIGCONT)
        if removing is not None and removing.poll() is None:
            removing.kill()
            removing.communicate()
    if not restarted:
        assert removing.returncode == EXIT_TIMEOUT, (removing.returncode, out, err)
    wait_for("the asked node to lead", lambda: (asked.status() or {}).get("role") == "leader",
             40, describe=cluster.describe)
    wait_for("the asked node to be a member again", lambda: _membership(asked) == "member", 30)
    assert asked.raft_address in _admin(asked)[1]["members"]
    members_file = json.loads((asked.data_dir / "members.json").read_text())
    assert "removed" not in members_file and asked.raft_address in members_file["members"]
    wait_for("the asked node to serve clients", asked.is_ready, 30)
    job = clients(asked).peek_ready()
    assert job.body == "committed while one member was frozen"


def test_a_leader_of_the_earlier_version_that_answers_first_is_not_taken_for_success(
        start_cluster, tmp_path):
    token_file = _token_file(tmp_path)
    earlier = [sys.executable, str(Path(__file__).with_name("earlier_self_removal.py"))]
    cluster = start_cluster("--admin-token-file", str(token_file),
                            launchers={i: earlier for i in range(3)})
    leader = cluster.leader()
    asked, other = cluster.followers()
    removing = _remove_in_background(asked, token_file, "--timeout", "20")
    try:
        out, err = removing.communicate(timeout=60)
    finally:
        if removing.poll() is None:
            removing.kill()
            removing.communicate()
    assert removing.returncode == EXIT_TIMEOUT, (removing.returncode, out, err)
    assert "answered before proposing the removal" in err, err
    assert "the leader told this node it is removed" in err, err
    # The removal itself went through: the remaining members agree without the node.
    wait_for("the remaining members to drop the node", lambda: all(
        asked.raft_address not in _admin(n)[1].get("members", [asked.raft_address])
        for n in (leader, other)), 20)
