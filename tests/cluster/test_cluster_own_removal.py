"""Goal: a member asked to remove itself answers success only once the removal committed, and
otherwise answers that the outcome is unknown (``timeout``, exit status 11), never success and
never a definite failure: when the removal cannot commit and its leader dies, and when the
leader runs the earlier version, which answered before it proposed the removal.

Method: real three-node clusters with an admin token. A follower is asked, over its own HTTP
port, to remove itself. (1) The moment its answer arrives, the leader's and the other member's
GET /admin/members must no longer name it, and the leader's last change must be the removal,
done (the leader records it as the removal commits). (2) The other follower is frozen with
SIGSTOP, so that the removal, forced, cannot commit; once the leader has told the asked node it
is removed (the removal is in the leader's log), the leader is killed with SIGKILL and the frozen
follower resumed: the real ``beanraft member remove`` must exit 11 saying the outcome is
unknown, and the next leader, which never had the entry, must still list the node. (3) Every node
runs ``earlier_self_removal.py``, whose leader answers a member's own removal before proposing
it, as the earlier version did: the asked node must not report success.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

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
    # It never committed: the next leader never had the entry, and still counts the node.
    wait_for("the resumed follower to lead", lambda: (frozen.status() or {}).get("role")
             == "leader", 30, describe=cluster.describe)
    assert asked.raft_address in _admin(frozen)[1]["members"]
    wait_for("the asked node to be a member again", lambda: _membership(asked) == "member", 30)


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
