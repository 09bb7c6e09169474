"""Goal: only a member campaigns, however often it becomes one.

Method: a real pysyncobj node (not ticked) under BeanRaft's ``Standing``, fed the membership
entries that add this node, roll that addition back and add it again, as the tick thread would;
the election hold it asks for is recorded after each.
"""

from __future__ import annotations

from upstream import Counter, free_port

from pysyncobj import SyncObjConf

from beanraft.replication import standing


def test_a_node_added_again_after_its_addition_was_rolled_back_campaigns_again():
    me, other = (f"127.0.0.1:{free_port()}" for _ in range(2))
    sync = Counter(me, SyncObjConf(autoTick=False), peers=[other])
    holds: list[bool] = []
    try:
        node = standing.Standing(sync, standing.JOINING, holds.append)
        node.after_change("add", me, False, True)  # the entry that adds this node
        assert (node.state, holds[-1]) == (standing.MEMBER, False)
        node.after_change("add", me, True, True)  # rolled back by the next leader
        assert (node.state, holds[-1]) == (standing.JOINING, True)
        node.after_change("add", me, False, True)  # added again
        assert (node.state, holds[-1]) == (standing.MEMBER, False), holds
    finally:
        sync.destroy()
