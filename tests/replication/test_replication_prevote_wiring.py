"""Which standings of a node may vote: every one but joining.

A joining node (new, or back under its address with an empty data directory) must not vote with
its empty log. A node told it is removed keeps its whole log and must keep voting: the removal
it was told of may be lost with its leader, and the next election may need its vote.
Method: one real RaftNode (``lone_node.Harness``) whose standing is set in turn.
"""

from __future__ import annotations

import asyncio

from lone_node import Harness

from beanraft.replication import standing


def test_only_a_joining_node_may_not_vote(tmp_path):
    async def scenario():
        async with Harness(str(tmp_path / "data")) as node:
            standing_ = node.raft.members.standing
            may_vote = node.raft._prevote._may_vote
            verdicts = {}
            for state in (standing.MEMBER, standing.REMOVED, standing.JOINING):
                standing_.state = state
                verdicts[state] = may_vote()
            standing_.state = standing.MEMBER
            return verdicts

    assert asyncio.run(scenario()) == {standing.MEMBER: True, standing.REMOVED: True,
                                       standing.JOINING: False}
