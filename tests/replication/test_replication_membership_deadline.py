"""A committed addition whose new member has not acknowledged it by the deadline ends there.

Once the entry that adds a node has committed, the node is a member whatever it does; the
leader only waits for it to acknowledge the entry so that ``member add`` returns with a member
that has the log. A new member that dies (or freezes) right after its addition committed never
acknowledges it. The addition used to stay pending for as long as that lasted, shown on every
node, and every other change (the removal of that very node included) was refused as ``busy``
unless forced. Method: the leader of three pysyncobj nodes ticked by hand
(``hand_ticked.Replicated``) with BeanRaft's ``Changes`` on it; a follower that is a member
stands for the new member, and is never ticked again, so it acknowledges nothing more.
"""

from __future__ import annotations

import time

from hand_ticked import Replicated

from beanraft.replication.member_change import (ADD, ADDING, CHECK, TIMEOUT, Changes,
                                                MembershipError, _Run)


def _unacknowledged_entry(cluster: Replicated) -> int:
    """The leader appends one more entry that no follower has (only the leader ticks)."""
    cluster.leader.inc(1)
    cluster.leader.doTick(0.0)
    last = Replicated.log(cluster.leader)[-1][1]
    assert cluster.match_index_of_follower() < last
    return last


def test_a_taken_over_committed_addition_ends_at_its_deadline_and_the_next_change_may_begin():
    with Replicated(harden=False) as cluster:
        changes = Changes(cluster.leader, shared_secret=True)
        member = cluster.follower.selfNode.address
        _unacknowledged_entry(cluster)
        now = time.monotonic()
        changes._heard = ({"action": ADD, "address": member, "phase": ADDING, "left_s": 0.5}, now,
                          "127.0.0.1:9")
        changes._take_over(now)
        assert changes._run is not None and changes._run.committed
        changes.on_tick(now + 0.2)
        assert changes._run is not None, "ended before its time"
        changes.on_tick(now + 1.0)
        assert changes._run is None, changes.pending()
        assert changes.pending() is None
        assert changes.last["outcome"].startswith(f"done, behind: {member} is a member")
        answers = []
        # The checks of a removal (CHECK, which proposes nothing) pass the one-change-at-a-time
        # gate now, as the removal of that member would.
        changes.begin(answers.append, (CHECK, member, False, 5.0), time.monotonic(), None)
        assert len(answers) == 1 and not isinstance(answers[0], MembershipError), answers


def _asked_addition(cluster: Replicated, left_s: float) -> tuple[Changes, str, int, list, float]:
    """The leader's ``Changes`` running an asked addition of the follower, committed, whose
    entry the follower has not acknowledged; (changes, member, entry, answers, start)."""
    changes = Changes(cluster.leader, shared_secret=True)
    member = cluster.follower.selfNode.address
    last = _unacknowledged_entry(cluster)
    answers: list = []
    now = time.monotonic()
    changes._run = _Run(action=ADD, address=member, started=now, until=now + left_s,
                        reply=answers.append, phase=ADDING, committed=True, log_index=last)
    return changes, member, last, answers, now


def test_the_asker_of_a_committed_addition_is_answered_once_at_the_deadline():
    with Replicated(harden=False) as cluster:
        changes, member, _last, answers, now = _asked_addition(cluster, 0.5)
        changes.on_tick(now + 0.2)
        assert answers == []
        changes.on_tick(now + 1.0)
        changes.on_tick(now + 1.5)
        assert len(answers) == 1 and answers[0].code == TIMEOUT
        assert f"{member} is a member (its addition committed)" in str(answers[0])
        assert changes._run is None


def test_a_committed_addition_acknowledged_in_time_is_done():
    with Replicated(harden=False) as cluster:
        changes, _member, last, answers, _now = _asked_addition(cluster, 60.0)
        cluster._tick_until(lambda: cluster.match_index_of_follower() >= last)
        changes.on_tick(time.monotonic())
        assert changes._run is None and changes.last["outcome"] == "done"
        assert len(answers) == 1 and not isinstance(answers[0], MembershipError)
