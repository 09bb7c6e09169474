"""A leader elected while its own addition was pending ends that addition once it committed.

The node being added may win the next election (it has the entry that adds it, and counts in
the list that entry makes); it hears, as the other members do, what its previous leader said
was pending, and takes the addition over. It then waited for the new member, itself, to
acknowledge the entry as a follower would, which it never does: the addition stayed pending
for as long as it led, and every other change was refused as ``busy``. Method: the leader of
three pysyncobj nodes ticked by hand (``hand_ticked.Replicated``) with BeanRaft's ``Changes``
on it, told by a previous leader that its own addition is pending.
"""

from __future__ import annotations

import time

from hand_ticked import Replicated

from beanraft.replication.member_change import ADD, Changes


def test_a_leader_that_takes_over_its_own_addition_ends_it_once_committed():
    with Replicated(harden=False) as cluster:
        changes = Changes(cluster.leader, shared_secret=True)
        me = cluster.leader.selfNode.address
        now = time.monotonic()
        changes._heard = ({"action": ADD, "address": me, "phase": "adding", "left_s": 20.0}, now,
                          "127.0.0.1:9")
        changes._take_over(now)
        assert changes._run is not None and changes._run.address == me
        changes._advance(time.monotonic())
        assert changes._run is None, changes._doing()
        assert changes.last == {"action": ADD, "address": me, "outcome": "done"}
