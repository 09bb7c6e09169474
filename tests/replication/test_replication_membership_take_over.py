"""A leader elected while its own addition was pending ends that addition once it committed.

The node being added may win the next election (it has the entry that adds it, and counts in
the list that entry makes); it hears, as the other members do, what its previous leader said
was pending, and takes the addition over. It then waited for the new member, itself, to
acknowledge the entry as a follower would, which it never does: the addition stayed pending
for as long as it led, and every other change was refused as ``busy``. Method: the leader of
three pysyncobj nodes ticked by hand (``hand_ticked.Replicated``) with BeanRaft's ``Members``
on it, told by a previous leader that its own addition is pending.
"""

from __future__ import annotations

import asyncio
import time

from hand_ticked import Replicated

from beanraft.replication.membership import ADD, Members


def test_a_leader_that_takes_over_its_own_addition_ends_it_once_committed():
    loop = asyncio.new_event_loop()
    try:
        with Replicated(harden=False) as cluster:
            members = Members(cluster.leader, loop, None, joining=False, shared_secret=True,
                              on_change=lambda count: None)
            me = cluster.leader.selfNode.address
            now = time.monotonic()
            members._heard = ({"action": ADD, "address": me, "phase": "adding", "left_s": 20.0},
                              now, "127.0.0.1:9")
            members._take_over(now)
            assert members._run is not None and members._run.address == me
            members._advance(time.monotonic())
            assert members._run is None, members._doing()
            assert members.last == {"action": ADD, "address": me, "outcome": "done"}
    finally:
        loop.close()
