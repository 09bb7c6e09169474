"""A backup's header names the members of the state it holds, not changes appended after it.

pysyncobj changes its member list when it appends a membership entry, so while an addition or
a removal is being committed its list already shows it, and the header used to name those
members: ``restore`` takes them as the new cluster's by default. Method: the leader of three
hand-ticked pysyncobj nodes appends a change that its followers, never ticked again, do not
acknowledge; the header's members are worked out from its journal as ``_fork`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "replication"))

from hand_ticked import Replicated  # noqa: E402  (tests/replication, beside this directory)

from beanraft.replication import seam  # noqa: E402
from beanraft.replication.backup import _members_at  # noqa: E402

NEWCOMER = "127.0.0.1:9"


def _listed(node) -> set[str]:
    return {str(other) for other in node.otherNodes}


def _appended_uncommitted(cluster: Replicated, change) -> int:
    """The leader appends ``change``'s entry alone; returns its applied index before."""
    leader = cluster.leader
    applied = leader.raftLastApplied
    change()
    leader.doTick(0.0)
    last = Replicated.log(leader)[-1][1]
    assert leader.raftCommitIndex < last and leader.raftLastApplied == applied
    return applied


def test_an_addition_not_committed_is_not_in_the_headers_members():
    with Replicated(harden=False, dynamic=True) as cluster:
        leader = cluster.leader
        before = _listed(leader)
        applied = _appended_uncommitted(cluster, lambda: leader.addNodeToCluster(NEWCOMER))
        assert _listed(leader) == before | {NEWCOMER}, "pysyncobj lists it once appended"
        assert _members_at(seam.journal(leader), applied, _listed(leader)) == before
        # Entries up to the applied index stay counted: as of the new entry, it is a member.
        last = Replicated.log(leader)[-1][1]
        assert _members_at(seam.journal(leader), last, _listed(leader)) == before | {NEWCOMER}


def test_a_removal_not_committed_leaves_the_member_in_the_header():
    with Replicated(harden=False, dynamic=True) as cluster:
        leader = cluster.leader
        before = _listed(leader)
        removed = cluster.follower.selfNode.address
        applied = _appended_uncommitted(cluster, lambda: leader.removeNodeFromCluster(removed))
        assert removed not in _listed(leader)
        assert _members_at(seam.journal(leader), applied, _listed(leader)) == before
