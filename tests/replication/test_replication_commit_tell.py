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

from raft_trio import build_three, leader_of

from beanraft.jobs.commands import Op
from beanraft.replication import raft as raft_module
from beanraft.replication import seam
from beanraft.replication.codec import encode_entry
from beanraft.replication.raft import Timing

HEARTBEAT_S = 0.5
TIMING = Timing(tick_s=0.02, heartbeat_s=HEARTBEAT_S, election_min_s=1.6, election_max_s=2.4)
PROMPT_S = 0.15  # well under a heartbeat: a follower told at once knows by then
ROUNDS = 3  # a follower not told learns it from a heartbeat, within PROMPT_S only by luck


def _entry(*commands) -> bytes:
    return encode_entry(time.time_ns(), list(commands))


async def _trio(monkeypatch, timing: Timing = TIMING):
    monkeypatch.setattr(raft_module, "COMMIT_TELL_WITHIN_S", 3600.0)
    nodes = build_three(asyncio.get_running_loop(), timing)
    for node in nodes:
        node.start()
    leader = await leader_of(nodes, 30)
    await asyncio.wait_for(leader.submit(_entry((Op.TICK, 0, 0))), 20)
    return nodes, leader, [n for n in nodes if n is not leader]


async def _knows_commit(follower, index: int, timeout_s: float = 20) -> float:
    """Seconds until ``follower`` has applied ``index``."""
    began = time.monotonic()
    while follower.applied_through() < index:
        assert time.monotonic() - began < timeout_s, (follower.applied_through(), index)
        await asyncio.sleep(0.002)
    return time.monotonic() - began


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
    async def scenario():
        nodes, leader, _followers = await _trio(monkeypatch)
        try:
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
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())


def test_a_batch_forwarded_by_a_follower_is_told_committed_at_once(monkeypatch):
    async def scenario():
        nodes, _leader, followers = await _trio(monkeypatch)
        try:
            entries = 10
            began = time.monotonic()
            for _ in range(entries):
                await asyncio.wait_for(followers[0].submit(_entry((Op.TICK, 0, 0))), 20)
            took = time.monotonic() - began
            # Told by heartbeats, ten entries would take about ten half-heartbeats.
            assert took < 0.1 * entries, took
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())


def test_a_follower_whose_session_waits_for_a_job_is_told_at_once(monkeypatch):
    async def scenario():
        nodes, leader, followers = await _trio(monkeypatch)
        try:
            epoch = (await leader.submit(_entry((Op.NODE_START, 0, 0, "a"))))[0][1]
            waiter, producer = (epoch << 32) | 1, (epoch << 32) | 2
            await leader.submit(_entry((Op.OPEN, waiter, 1), (Op.OPEN, producer, 1)))
            for seq in range(2, 2 + ROUNDS):
                # The waiter's reserve is proposed on a follower: the session waits there.
                reply = await followers[0].submit(_entry((Op.RESERVE, waiter, seq, 60 * 10**9)))
                assert reply[0][0] == "WAITING", reply
                await _knows_commit(followers[1], leader.applied_through())
                await asyncio.sleep(0.05)
                await leader.submit(_entry((Op.PUT, producer, seq, 0, 0, 60, b"job")))
                index = leader.applied_through()
                took = await _knows_commit(followers[0], index)
                if took < PROMPT_S:
                    return
            raise AssertionError(f"the follower learned the commit only {took:.3f} s later")
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())


def test_a_follower_read_index_comes_after_the_commit_index_it_names(monkeypatch):
    async def scenario():
        nodes, leader, followers = await _trio(monkeypatch)
        try:
            for _ in range(ROUNDS):
                await leader.submit(_entry((Op.TICK, 0, 0)))  # held back from the followers
                began = time.monotonic()
                index = await followers[0].read_index(5.0)
                assert index >= leader.applied_through() - 1
                await _knows_commit(followers[0], index)
                took = time.monotonic() - began
                if took < PROMPT_S:
                    return
            raise AssertionError(f"the read index was applied only {took:.3f} s later")
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())


def test_a_commit_index_held_back_goes_out_within_its_limit(monkeypatch):
    # Ticks every 0.25 s when no socket wakes them: the Raft thread must wake for the limit.
    slow_ticks = Timing(tick_s=0.25, heartbeat_s=HEARTBEAT_S, election_min_s=1.6,
                        election_max_s=2.4)

    async def scenario():
        nodes, leader, followers = await _trio(monkeypatch, slow_ticks)
        monkeypatch.setattr(raft_module, "COMMIT_TELL_WITHIN_S", 0.01)
        try:
            for _ in range(ROUNDS):
                await leader.submit(_entry((Op.TICK, 0, 0)))
                took = await _knows_commit(followers[0], leader.applied_through())
                if took < PROMPT_S:
                    return
            raise AssertionError(f"the follower learned the commit only {took:.3f} s later")
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())
