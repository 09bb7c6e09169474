"""A leader tells its followers a new commit index at once only when one of them needs it: for a
batch a follower forwarded, while a session waits for a job, and before it answers a follower's
read index. Otherwise the index goes with the next round, within ``COMMIT_TELL_WITHIN_S``.

Method: three real BeanRaft ``RaftNode`` objects (real pysyncobj, sealed peer links on loopback
ports, one Raft thread each) in this process, with a heartbeat of 0.5 s, so that a follower that
was not told would learn the commit index only from the next heartbeat, up to 0.5 s later. The
hold-back limit is raised to an hour: whatever a follower learns sooner, it was told at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from pysyncobj.monotonic import monotonic as raft_clock
from raft_trio import run_three, watch_polls

from beanraft.jobs.commands import Op
from beanraft.replication import commit_tell
from beanraft.replication import seam
from beanraft.replication.codec import encode_entry
from beanraft.replication.raft import Timing

HEARTBEAT_S = 0.5
TIMING = Timing(tick_s=0.02, heartbeat_s=HEARTBEAT_S, election_min_s=1.6, election_max_s=2.4)
PROMPT_S = 0.15  # well under a heartbeat: a follower told at once knows by then
ROUNDS = 3  # a follower not told learns it from a heartbeat, within PROMPT_S only by luck


def _entry(*commands) -> bytes:
    return encode_entry(time.time_ns(), list(commands))


def _on_trio(monkeypatch, body, timing: Timing = TIMING) -> None:
    """Run ``await body(leader, followers)`` on three nodes whose leader has committed an entry
    of its term, with commit indexes held back for an hour unless a follower needs them."""
    monkeypatch.setattr(commit_tell, "COMMIT_TELL_WITHIN_S", 3600.0)

    async def with_leader(nodes, leader) -> None:
        await asyncio.wait_for(leader.submit(_entry((Op.TICK, 0, 0))), 20)
        await body(leader, [n for n in nodes if n is not leader])

    run_three(with_leader, timing)


async def _knows_commit(follower, index: int, timeout_s: float = 20) -> float:
    """Seconds until ``follower`` has applied ``index``."""
    began = time.monotonic()
    while follower.applied_through() < index:
        assert time.monotonic() - began < timeout_s, (follower.applied_through(), index)
        await asyncio.sleep(0.002)
    return time.monotonic() - began


async def _prompt_in_some_round(one_round: Callable[[int], Awaitable[float]], what: str) -> None:
    """``one_round(i)`` answers how long a follower took to learn something; told at once, one
    of ROUNDS rounds is under PROMPT_S (a heartbeat makes each so with odds of 0.3 at most)."""
    for i in range(ROUNDS):
        took = await one_round(i)
        if took < PROMPT_S:
            return
    raise AssertionError(f"{what} only {took:.3f} s later")


def _count_appends(leader) -> list[int]:
    """Counts the append_entries messages ``leader`` sends (one element per message)."""
    sent: list[int] = []
    transport = seam.transport(leader._sync)
    send = transport.send

    def counting_send(node, message, *args, **kwargs):
        if isinstance(message, dict) and message.get("type") == "append_entries":
            sent.append(1)
        return send(node, message, *args, **kwargs)

    transport.send = counting_send
    return sent


def test_the_leader_holds_back_the_commit_index_of_its_own_entries(monkeypatch):
    async def body(leader, _followers):
        sent = _count_appends(leader)
        began = time.monotonic()
        entries = 40
        for _ in range(entries):
            await asyncio.wait_for(leader.submit(_entry((Op.TICK, 0, 0))), 20)
        took = time.monotonic() - began
        # One round per entry to each follower (it carries the commit index of the entry
        # before), plus the heartbeats; a round per commit as well would double it.
        heartbeats = 2 * (took / HEARTBEAT_S + 2)
        assert len(sent) <= 2 * entries + heartbeats, (len(sent), took)

    _on_trio(monkeypatch, body)


def test_a_batch_forwarded_by_a_follower_is_told_committed_at_once(monkeypatch):
    async def body(_leader, followers):
        entries = 10
        began = time.monotonic()
        for _ in range(entries):
            await asyncio.wait_for(followers[0].submit(_entry((Op.TICK, 0, 0))), 20)
        took = time.monotonic() - began
        # Told by heartbeats, ten entries would take about ten half-heartbeats.
        assert took < 0.1 * entries, took

    _on_trio(monkeypatch, body)


def test_a_follower_whose_session_waits_for_a_job_is_told_at_once(monkeypatch):
    async def body(leader, followers):
        epoch = (await leader.submit(_entry((Op.NODE_START, 0, 0, "a"))))[0][1]
        waiter, producer = (epoch << 32) | 1, (epoch << 32) | 2
        await leader.submit(_entry((Op.OPEN, waiter, 1), (Op.OPEN, producer, 1)))

        async def one_round(i: int) -> float:
            seq = 2 + i
            # The waiter's reserve is proposed on a follower: the session waits there.
            reply = await followers[0].submit(_entry((Op.RESERVE, waiter, seq, 60 * 10**9)))
            assert reply[0][0] == "WAITING", reply
            await _knows_commit(followers[1], leader.applied_through())
            await asyncio.sleep(0.05)
            await leader.submit(_entry((Op.PUT, producer, seq, 0, 0, 60, b"job")))
            return await _knows_commit(followers[0], leader.applied_through())

        await _prompt_in_some_round(one_round, "the follower learned the commit")

    _on_trio(monkeypatch, body)


def test_a_follower_read_index_comes_after_the_commit_index_it_names(monkeypatch):
    async def body(leader, followers):
        async def one_round(_i: int) -> float:
            await leader.submit(_entry((Op.TICK, 0, 0)))  # held back from the followers
            began = time.monotonic()
            index = await followers[0].read_index(5.0)
            await _knows_commit(followers[0], index)
            return time.monotonic() - began

        await _prompt_in_some_round(one_round, "the read index was applied")

    _on_trio(monkeypatch, body)


# Ticks every 0.25 s when no socket wakes them: the Raft thread must wake for the limit.
SLOW_TICKS = Timing(tick_s=0.25, heartbeat_s=HEARTBEAT_S, election_min_s=1.6, election_max_s=2.4)


def test_a_commit_index_held_back_goes_out_within_its_limit(monkeypatch):

    async def body(leader, followers):
        monkeypatch.setattr(commit_tell, "COMMIT_TELL_WITHIN_S", 0.01)

        async def one_round(_i: int) -> float:
            await leader.submit(_entry((Op.TICK, 0, 0)))
            return await _knows_commit(followers[0], leader.applied_through())

        await _prompt_in_some_round(one_round, "the follower learned the commit")

    _on_trio(monkeypatch, body, SLOW_TICKS)


def test_no_poll_of_the_leader_waits_past_a_held_back_commit_index(monkeypatch):
    """The leader computes a commit index, applies it and holds it back in one tick, whose last
    step is a poll given the tick's wait before any of that. That poll must not outsleep the
    limit: told by the next heartbeat instead, a follower learned the commit 0.25 s late."""
    def left(leader):
        at = leader._commit_tell_at
        return None if at is None else at - raft_clock()  # the clock it was set on

    polls = watch_polls(monkeypatch, left)

    async def body(leader, followers):
        monkeypatch.setattr(commit_tell, "COMMIT_TELL_WITHIN_S", 0.01)
        polls.watch(leader)
        for _ in range(5):
            await leader.submit(_entry((Op.TICK, 0, 0)))
            await _knows_commit(followers[0], leader.applied_through())
            await _knows_commit(followers[1], leader.applied_through())

    _on_trio(monkeypatch, body, SLOW_TICKS)
    assert polls.checked, "the leader never held a commit index back"
    assert not polls.overslept, polls.overslept
