"""Goal: only a member campaigns, however often it becomes one; a joiner becomes one only when
the last word of its log about it, caught up with the leader's commit index, says so; a node told
it is removed (or restarted so) campaigns again once it has heard from no leader for five
election timeouts, in case the removal was lost, and is a member again once it leads.

Method: a real pysyncobj node (not ticked) under BeanRaft's ``Standing``, fed the membership
entries and snapshots that add this node, roll that addition back, list it or remove it, as the
tick thread would; the commit indices pysyncobj would have learnt from the leader's messages
are set on the node, and the election hold ``Standing`` asks for is recorded after each step.
The time since the notice of removal is read from a clock the test sets.
"""

from __future__ import annotations

from contextlib import contextmanager

from upstream import Counter, free_port

from pysyncobj import SyncObjConf

from beanraft.replication import standing


@contextmanager
def _node(state: str):
    """A ``Standing`` in ``state`` on a real pysyncobj node: (sync, me, other, holds, standing)."""
    me, other = (f"127.0.0.1:{free_port()}" for _ in range(2))
    sync = Counter(me, SyncObjConf(autoTick=False), peers=[other])
    holds: list[bool] = []
    try:
        yield sync, me, other, holds, standing.Standing(sync, state, holds.append)
    finally:
        sync.destroy()


def _commits(sync, own: int, leader: int) -> None:
    """What an append_entries from the leader leaves: its commit index, and ours."""
    sync._SyncObj__leaderCommitIndex = leader
    sync._SyncObj__raftCommitIndex = own


def test_a_node_added_again_after_its_addition_was_rolled_back_campaigns_again():
    with _node(standing.JOINING) as (sync, me, _other, holds, node):
        _commits(sync, 7, 7)
        node.after_change("add", me, False, True)  # the entry that adds this node
        assert (node.state, holds[-1]) == (standing.MEMBER, False)
        node.after_change("add", me, True, True)  # rolled back by the next leader
        assert (node.state, holds[-1]) == (standing.JOINING, True)
        node.after_change("add", me, False, True)  # added again
        assert (node.state, holds[-1]) == (standing.MEMBER, False), holds


def test_a_joiner_listed_by_an_old_snapshot_waits_for_the_entries_after_it():
    with _node(standing.JOINING) as (sync, me, other, holds, node):
        _commits(sync, 0, 500)  # the leader sent a snapshot of index 100 with commit 500
        node.snapshot_lists({me, other})
        node.on_tick()
        assert node.state == standing.JOINING and holds == []  # held, as it started
        node.after_change("rem", me, False, True)  # entry 200: this node's earlier removal
        node.after_change("add", me, False, True)  # entry 300: added back back then
        node.on_tick()
        assert node.state == standing.JOINING  # still behind the leader
        node.after_change("rem", me, False, True)  # entry 400: removed again
        _commits(sync, 500, 500)  # caught up: nothing since says it is a member
        node.on_tick()
        assert node.state == standing.JOINING and holds == []
        _commits(sync, 500, 501)
        node.after_change("add", me, False, True)  # entry 501: this addition
        node.on_tick()
        assert node.state == standing.JOINING  # the leader's commit is ahead: wait for it
        _commits(sync, 501, 501)
        node.on_tick()
        assert (node.state, holds) == (standing.MEMBER, [False])


def test_a_joiner_listed_by_a_current_snapshot_is_a_member_once_caught_up():
    with _node(standing.JOINING) as (sync, me, other, holds, node):
        _commits(sync, 0, 900)
        node.snapshot_lists({me, other})  # taken after this node's addition committed
        assert node.state == standing.JOINING
        _commits(sync, 900, 900)
        node.on_tick()
        assert (node.state, holds) == (standing.MEMBER, [False])


def test_a_member_replaying_its_log_keeps_campaigning_whatever_old_entries_say():
    with _node(standing.MEMBER) as (sync, me, _other, holds, node):
        node.after_change("rem", me, False, True)
        node.after_change("add", me, False, True)
        node.after_change("rem", me, False, True)
        node.on_tick()
        assert (node.state, holds) == (standing.MEMBER, [])


def test_a_node_told_it_is_removed_campaigns_again_after_five_election_timeouts_alone():
    clock = [100.0]
    me, other = (f"127.0.0.1:{free_port()}" for _ in range(2))
    sync = Counter(me, SyncObjConf(autoTick=False), peers=[other])
    holds: list[bool] = []
    try:
        node = standing.Standing(sync, standing.MEMBER, holds.append,
                                 election_max_s=lambda: 1.0, now=lambda: clock[0])
        leader = next(iter(sync.otherNodes))
        sync._SyncObj__raftLeader = leader
        clock[0] = 200.0
        node.on_message(leader, {"type": standing.REMOVED_MESSAGE, "term": sync.raftCurrentTerm})
        assert (node.state, holds) == (standing.REMOVED, [True])
        clock[0] = 204.9  # counted from the notice, not from the start
        node.on_tick()
        assert holds == [True]
        clock[0] = 205.0
        node.on_tick()
        node.on_tick()
        # It campaigns again (once), still removed until it leads or hears a newer leader.
        assert (node.state, holds) == (standing.REMOVED, [True, False])
        sync._SyncObj__setCurrentTerm(sync.raftCurrentTerm + 1, None)  # it won an election
        sync._SyncObj__raftLeader = sync.selfNode
        node.on_tick()
        assert (node.state, holds) == (standing.MEMBER, [True, False, False])
    finally:
        sync.destroy()


def test_a_node_restarted_removed_campaigns_again_after_five_election_timeouts_alone():
    clock = [50.0]
    with _node(standing.MEMBER) as (sync, _me, _other, _holds, _unused):
        holds: list[bool] = []
        node = standing.Standing(sync, standing.REMOVED, holds.append,
                                 election_max_s=lambda: 1.0, now=lambda: clock[0])
        clock[0] = 54.9
        node.on_tick()
        assert holds == []  # held as it started (raft.py)
        clock[0] = 55.0
        node.on_tick()
        assert (node.state, holds) == (standing.REMOVED, [False])
