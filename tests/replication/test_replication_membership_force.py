"""``--force`` never replaces a membership change whose entry is in the log but not committed.

Two uncommitted changes (N to N+1, then N+1 to N) could leave member lists two nodes apart,
whose majorities need not overlap; pysyncobj's own guard against a second change never fires
(the index it reads is never set). Method: the leader of three pysyncobj nodes ticked by hand
(``hand_ticked.Replicated``) with BeanRaft's ``Changes`` on it, holding an addition whose entry
is appended but not committed; a forced removal is asked of it.
"""

from __future__ import annotations

import time

import pytest
from hand_ticked import Replicated

from beanraft.replication.member_change import ADD, ADDING, BUSY, REMOVE, Changes, _Run
from beanraft.replication.membership import MembershipError


def test_a_forced_change_is_refused_while_the_pending_ones_entry_is_uncommitted():
    with Replicated(harden=False) as cluster:
        changes = Changes(cluster.leader, shared_secret=True)
        pending = _Run(action=ADD, address="127.0.0.1:9", started=0.0, until=1e9,
                       reply=None, phase=ADDING, committed=False)
        changes._run = pending
        answers: list = []
        args = (REMOVE, cluster.follower.selfNode.address, True, 10.0)
        changes.begin(answers.append, args, time.monotonic(), None)
        assert len(answers) == 1 and isinstance(answers[0], MembershipError)
        assert answers[0].code == BUSY and "--force cannot skip" in str(answers[0])
        assert changes._run is pending  # the pending addition goes on
        # Once committed, --force may move past it: the pending run ends and the removal is
        # proposed (which this stage's upstream nodes, without dynamic membership, refuse).
        pending.committed = True
        with pytest.raises(Exception, match="dynamicMembershipChange"):
            changes.begin(answers.append, args, time.monotonic(), None)
        assert changes._run is None and len(answers) == 1
