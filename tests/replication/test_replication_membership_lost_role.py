"""What a leader that loses its role during a membership change answers: ``no_leader`` only while
nothing is in the log (a learner catching up), else ``timeout``, since the next leader may have
the entry or not, and commit it or not (an addition whose entry was appended sounded refused,
``no_leader``, though it could commit under the next leader).

Method: three pysyncobj nodes ticked by hand (``hand_ticked.Replicated``) with BeanRaft's
``Changes`` on the leader, holding a change at each stage; the leader is then left unticked
while the two others elect one of them, and ticked again until it has heard of the newer term.
"""

from __future__ import annotations

import time

import pytest
from hand_ticked import Replicated

from beanraft.replication.member_change import (ADD, ADDING, LEARNING, NO_LEADER, REMOVE,
                                                REMOVING, TIMEOUT, Changes, _Run)
from beanraft.replication.membership import MembershipError

NEW = "127.0.0.1:9"


def _depose(cluster: Replicated) -> None:
    """The two others elect one of them; then the old leader hears of it and steps down."""
    old = cluster.leader
    others = [n for n in cluster.nodes if n is not old]
    deadline = time.monotonic() + 20
    while not any(n._isLeader() for n in others):
        assert time.monotonic() < deadline, "the two others elected no leader in 20 s"
        for node in others:
            node.doTick(0.0)
    while old._isLeader():
        assert time.monotonic() < deadline, "the old leader did not step down in 20 s"
        for node in cluster.nodes:
            node.doTick(0.0)


@pytest.mark.parametrize("action, phase, committed, code, says", [
    (ADD, LEARNING, False, NO_LEADER, "the members are unchanged"),
    (ADD, ADDING, False, TIMEOUT, "the outcome is unknown"),
    (ADD, ADDING, True, TIMEOUT, "committed, before the new member acknowledged it"),
    (REMOVE, REMOVING, False, TIMEOUT, "may or may not commit"),
])
def test_a_leader_that_loses_its_role_answers_timeout_once_the_change_may_be_in_the_log(
        action, phase, committed, code, says):
    with Replicated(harden=False) as cluster:
        changes = Changes(cluster.leader, shared_secret=True)
        address = NEW if action == ADD else cluster.follower.selfNode.address
        answers: list = []
        changes._run = _Run(action=action, address=address, started=time.monotonic(),
                            until=time.monotonic() + 60, reply=answers.append, phase=phase,
                            committed=committed, log_index=cluster.leader.raftCommitIndex)
        _depose(cluster)
        changes._advance(time.monotonic())
        assert changes._run is None
        assert len(answers) == 1 and isinstance(answers[0], MembershipError), answers
        assert answers[0].code == code and says in str(answers[0]), answers[0]
        if code == TIMEOUT:
            assert "beanraft member list" in str(answers[0])
