"""A follower's event loop hears of the entries it applies at once only while something on it
waits for an apply; otherwise within ``LAZY_NOTIFY_S``.

Method: three real BeanRaft ``RaftNode`` objects (real pysyncobj, sealed peer links on loopback
ports, one Raft thread each) in this process, sharing its event loop. The leader commits entries
one at a time; what each node's Raft thread hands to the loop is counted where it is posted
(``_post``), and a follower's apply waiters and listeners are watched from the loop.
"""

from __future__ import annotations

import asyncio
import time

from pysyncobj.monotonic import monotonic as raft_clock
from raft_trio import applied_everywhere, run_three, until, watch_polls

from beanraft.replication import raft as raft_module
from beanraft.replication.codec import encode_entry
from beanraft.replication.raft import Timing

ENTRIES = 100
TICK = (17, 0, 0)  # Op.TICK: applied by every replica, no reply owed to anyone, no events


def _count_notifies(node) -> list[float]:
    """The times at which ``node``'s Raft thread posts a "notify" to the loop."""
    times: list[float] = []
    post = node._post

    def counting_post(item):
        if item[0] == "notify":
            times.append(time.monotonic())
        post(item)

    node._post = counting_post
    return times


async def _commit_one(leader) -> None:
    await asyncio.wait_for(leader.submit(encode_entry(time.time_ns(), [TICK])), 20)


async def _settled(nodes, timeout_s: float = 20) -> None:
    """Every node has seen the leader in its status: the notice of that change (posted from the
    status, every 0.1 s) is behind us, so it cannot end a wait below by itself."""
    await until(lambda: f"one leader in every status: {[n._last_leader for n in nodes]}",
                lambda: len({n._last_leader for n in nodes}) == 1
                and nodes[0]._last_leader is not None, timeout_s)
    await asyncio.sleep(0.2)


def test_a_follower_loop_is_not_woken_for_each_entry_its_leader_commits():
    async def body(nodes, leader):
        await _commit_one(leader)
        await applied_everywhere(nodes, leader.applied_through())
        follower = next(n for n in nodes if n is not leader)
        on_follower, on_leader = _count_notifies(follower), _count_notifies(leader)
        began = time.monotonic()
        for _ in range(ENTRIES):
            await _commit_one(leader)
        await applied_everywhere(nodes, leader.applied_through())
        took = time.monotonic() - began
        assert len(on_leader) >= ENTRIES  # the leader's pulse hears of every apply
        # At most one notify per LAZY_NOTIFY_S (the first once it is due), plus the
        # one the last entries may still owe.
        assert len(on_follower) <= took / raft_module.LAZY_NOTIFY_S + 2, (len(on_follower), took)

    run_three(body)


def test_a_follower_listener_still_hears_of_an_apply_that_no_one_waits_for():
    async def body(nodes, leader):
        await _commit_one(leader)
        follower = next(n for n in nodes if n is not leader)
        await applied_everywhere(nodes, leader.applied_through())
        await asyncio.sleep(2 * raft_module.LAZY_NOTIFY_S + 0.1)  # nothing owed any more
        heard: list[int] = []
        follower.add_listener(lambda: heard.append(follower.applied_through()))
        await _commit_one(leader)
        index = leader.applied_through()
        await until(lambda: f"the listener to hear of {index}: {heard}",
                    lambda: any(seen >= index for seen in heard), 10)

    run_three(body)


def test_a_waiter_on_a_follower_is_woken_by_the_apply_itself(monkeypatch):
    # With the lazy notice an hour away, only the prompt notice can end the wait before its
    # own timeout.
    monkeypatch.setattr(raft_module, "LAZY_NOTIFY_S", 3600.0)

    async def body(nodes, leader):
        await _commit_one(leader)
        follower = next(n for n in nodes if n is not leader)
        await applied_everywhere(nodes, leader.applied_through())
        await _settled(nodes)
        seen = follower.applied_through()
        waiting = asyncio.ensure_future(follower.applied_or(seen, 30.0))
        await asyncio.sleep(0)  # registered
        assert follower._apply_waiters
        began = time.monotonic()
        await _commit_one(leader)
        await asyncio.wait_for(waiting, 30.0)
        assert time.monotonic() - began < 20.0  # woken, not timed out
        assert follower.applied_through() > seen

    run_three(body)


def test_applied_or_returns_at_once_when_the_caller_looked_before_an_apply(monkeypatch):
    # The caller read the applied index, then an entry was applied before it registered: no
    # notice will come for that apply, so applied_or must see it by itself.
    monkeypatch.setattr(raft_module, "LAZY_NOTIFY_S", 3600.0)

    async def body(nodes, leader):
        follower = next(n for n in nodes if n is not leader)
        await _settled(nodes)
        seen = follower.applied_through()
        await _commit_one(leader)
        await applied_everywhere(nodes, leader.applied_through())
        began = time.monotonic()
        await asyncio.wait_for(follower.applied_or(seen, 30.0), 30.0)
        assert time.monotonic() - began < 20.0
        assert not follower._apply_waiters

    run_three(body)


def test_no_poll_of_a_follower_waits_past_a_notice_it_owes(monkeypatch):
    """A follower's tick applies an entry, owes its loop a notice within LAZY_NOTIFY_S, then
    polls with the wait it was given before. With ticks 0.25 s apart, that poll must still wake
    for the notice."""
    slow_ticks = Timing(tick_s=0.25, heartbeat_s=0.5, election_min_s=1.6, election_max_s=2.4)
    def left(follower):
        owed_at = follower._notify_owed_at
        return None if owed_at is None else owed_at + raft_module.LAZY_NOTIFY_S - raft_clock()

    polls = watch_polls(monkeypatch, left)

    async def body(nodes, leader):
        for node in nodes:
            if node is not leader:
                polls.watch(node)
        for _ in range(5):
            await _commit_one(leader)
            await applied_everywhere(nodes, leader.applied_through())
            await asyncio.sleep(2 * raft_module.LAZY_NOTIFY_S)

    run_three(body, slow_ticks)
    assert polls.checked, "no follower owed its loop a notice"
    assert not polls.overslept, polls.overslept
