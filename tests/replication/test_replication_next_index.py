"""A late acknowledgement must not make a follower truncate entries it already holds.

Method: three hand-ticked pysyncobj nodes on loopback ports, with entries sent as soon as they
are appended (``appendEntriesUseBatch=False``): the leader sends entries, then the ack of an
older append_entries is delivered to it. Upstream its next index for that follower moves back
(so it re-sends entries and the follower truncates what it acknowledged, logged CRITICAL); with
BeanRaft's hardening it stays. Then three real BeanRaft ``RaftNode`` objects take a stream of
2,000 entries and pysyncobj's CRITICAL "truncating already-applied log entries" never appears.
A single BeanRaft node must also commit without waiting out its tick period.
"""

from __future__ import annotations

import asyncio
import logging
import time

from raft_trio import start_three
from upstream import Counter, free_port

import pysyncobj.journal as pso_journal
import pysyncobj.syncobj as pso_syncobj
from pysyncobj import SyncObjConf

from beanraft.replication import seam
from beanraft.replication.codec import encode_entry
from beanraft.replication.raft import RaftConfig, RaftNode, Timing, keep_next_index_monotonic

TRUNCATING = "truncating already-applied log entries"


class Truncations(logging.Handler):
    def __init__(self):
        super().__init__(logging.CRITICAL)
        self.count = 0

    def emit(self, record):
        if TRUNCATING in record.getMessage():
            self.count += 1


def watch_truncations() -> Truncations:
    handler = Truncations()
    logging.getLogger("pysyncobj.syncobj").addHandler(handler)
    return handler


def _cluster_with_entries_in_flight(harden: bool):
    """Three hand-ticked pysyncobj nodes; the leader has sent entries its followers have not acked.

    Returns the leader, one follower node object as the leader knows it, the follower's match
    index and the leader's (optimistic) next index for it.
    """
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    saved = pso_syncobj.createJournal
    pso_syncobj.createJournal = pso_journal.createJournal
    try:
        nodes = [Counter(a, SyncObjConf(autoTick=False, appendEntriesUseBatch=False,
                                        raftMinTimeout=0.3, raftMaxTimeout=0.6,
                                        appendEntriesPeriod=0.05, connectionTimeout=60),
                         peers=[b for b in addresses if b != a]) for a in addresses]
    finally:
        pso_syncobj.createJournal = saved
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(n._isLeader() and n.isReady() for n in nodes):
        for n in nodes:
            n.doTick(0.0)
    leader = next(n for n in nodes if n._isLeader())
    if harden:
        keep_next_index_monotonic(leader)
    for _ in range(10):
        leader.inc(1)
    for _ in range(5):  # only the leader ticks: entries go out, no acks come back yet
        leader.doTick(0.0)
    follower = next(iter(leader._SyncObj__raftNextIndex))
    match = leader._SyncObj__raftMatchIndex[follower]
    return nodes, leader, follower, match, leader._SyncObj__raftNextIndex[follower]


def _late_ack(leader, follower, match) -> int:
    """Deliver the ack of an older append_entries; return the leader's next index afterwards."""
    ack = {"type": "next_node_idx", "next_node_idx": match + 2, "reset": False, "success": True}
    leader._SyncObj__transport._onMessageReceived(follower, ack)
    return leader._SyncObj__raftNextIndex[follower]


def test_upstream_a_late_ack_moves_the_next_index_backwards_so_entries_are_sent_again():
    nodes, leader, follower, match, sent_up_to = _cluster_with_entries_in_flight(harden=False)
    try:
        assert sent_up_to > match + 2  # entries beyond the late ack are already on their way
        assert _late_ack(leader, follower, match) == match + 2  # re-send from here: truncation
    finally:
        for node in nodes:
            node.destroy()
            seam.close_pipe_notifier(node)  # pysyncobj's destroy leaves it open


def test_beanraft_keeps_the_next_index_where_it_was_after_a_late_ack():
    nodes, leader, follower, match, sent_up_to = _cluster_with_entries_in_flight(harden=True)
    try:
        assert _late_ack(leader, follower, match) == sent_up_to
        assert leader._SyncObj__raftMatchIndex[follower] == match + 1  # the ack itself counts
    finally:
        for node in nodes:
            node.destroy()
            seam.close_pipe_notifier(node)  # pysyncobj's destroy leaves it open


async def _stream_through_beanraft(entries: int) -> int:
    nodes = start_three(asyncio.get_running_loop())
    try:
        for _ in range(400):
            if any(n.is_leader() for n in nodes):
                break
            await asyncio.sleep(0.05)
        leader = next(n for n in nodes if n.is_leader())
        futures = []
        for i in range(entries):
            futures.append(leader.submit(encode_entry(time.time_ns(), [(17, 0, 0)])))
            if i % 50 == 0:
                await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 60)
        return sum(1 for r in results if isinstance(r, list))
    finally:
        for node in nodes:
            node.stop()


def test_beanraft_followers_never_truncate_what_they_acknowledged():
    handler = watch_truncations()
    try:
        committed = asyncio.run(_stream_through_beanraft(2000))
    finally:
        logging.getLogger("pysyncobj.syncobj").removeHandler(handler)
    assert committed == 2000
    assert handler.count == 0


def test_a_single_node_commits_without_waiting_for_its_next_tick(tmp_path):
    async def scenario():
        slow_ticks = Timing(tick_s=3.0)  # without the wake-up, every commit would wait ~3 s
        node = RaftNode(RaftConfig(self_addr=f"127.0.0.1:{free_port()}", timing=slow_ticks),
                        asyncio.get_running_loop(), lambda events: None)
        node.start()
        try:
            for _ in range(200):
                if node.is_leader():
                    break
                await asyncio.sleep(0.02)
            began = time.monotonic()
            for _ in range(5):
                await asyncio.wait_for(node.submit(encode_entry(time.time_ns(), [(17, 0, 0)])), 10)
            return time.monotonic() - began
        finally:
            node.stop()

    assert asyncio.run(scenario()) < 3.0  # five commits inside one tick period
