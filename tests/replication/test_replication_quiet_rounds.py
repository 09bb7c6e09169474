"""A commit costs the peer messages it needs and no more.

* The leader sends no append_entries round that only repeats what it sent: pysyncobj sent the
  commit index a second time after applying each commit (after ``_tell_commit_first`` had sent
  it), and each follower answered both.
* A follower does not answer an append_entries that brought no entries when it answered its
  leader less than half a heartbeat period ago; the acknowledgements of entries always leave.

Method: three real BeanRaft ``RaftNode`` objects (real pysyncobj, sealed peer links on loopback
ports, one Raft thread each) in this process, with a long heartbeat period so that heartbeats
are few. Every peer message is recorded where it arrives, so only what crossed the wire counts.
COMMITS entries are committed one at a time through the leader, then, for each follower:
* repeated rounds: append_entries without entries that carry the same commit index as the one
  before. Heartbeats are such repeats, at most one per heartbeat period of the time measured;
  pysyncobj's second round after each apply added one per commit.
* answers: the next_node_idx messages the leader got from it; at most one per append_entries
  with entries, plus one per half heartbeat period. pysyncobj's follower answered every round.
The bounds grow with the time measured, so a slow machine can only make the test weaker, never
make it fail.
"""

from __future__ import annotations

import asyncio
import time

from raft_trio import applied_everywhere, build_three, leader_of

from beanraft.replication import seam
from beanraft.replication.codec import encode_entry
from beanraft.replication.raft import RaftNode, Timing

HEARTBEAT_S = 0.2
TIMING = Timing(heartbeat_s=HEARTBEAT_S, election_min_s=1.0, election_max_s=2.0,
                leader_fallback_s=5.0)
COMMITS = 30
ATTEMPTS = 3  # a loaded machine may elect another leader during a measurement: measure again


def _entry() -> bytes:
    return encode_entry(time.time_ns(), [(17, 0, 0)])


def _record(node: RaftNode, into: list) -> None:
    """Append (sender address, type, entries, commit index) of every message ``node`` receives."""
    sync = node._sync
    handler = seam.message_handler(sync)

    def on_message(peer, message):
        if isinstance(message, dict):
            into.append((getattr(peer, "address", str(peer)), message.get("type"),
                         len(message.get("entries") or ()), message.get("commit_index")))
        handler(peer, message)

    seam.transport(sync).setOnMessageReceivedCallback(on_message)


async def _measure(nodes, received) -> dict | None:
    """Per follower: (rounds with entries, repeated rounds, answers, seconds); None if the
    leader changed while measuring."""
    leader = await leader_of(nodes, 30)
    term = leader._sync.raftCurrentTerm
    await asyncio.wait_for(leader.submit(_entry()), 20)
    await applied_everywhere(nodes, leader.applied_index)
    for log in received.values():
        log.clear()
    began = time.monotonic()
    for _ in range(COMMITS):
        await asyncio.wait_for(leader.submit(_entry()), 20)
    await applied_everywhere(nodes, leader.applied_index)
    elapsed = time.monotonic() - began
    seen = {node: list(log) for node, log in received.items()}
    figures = {}
    for follower in (n for n in nodes if n is not leader):
        rounds = [r for r in seen[follower] if r[1] == "append_entries"]
        with_entries = sum(1 for r in rounds if r[2])
        repeats = sum(1 for before, r in zip(rounds, rounds[1:]) if not r[2] and r[3] == before[3])
        address = follower.config.self_addr
        answers = sum(1 for r in seen[leader] if r[0] == address and r[1] == "next_node_idx")
        figures[address] = (with_entries, repeats, answers, elapsed)
    if not leader.is_leader() or any(n._sync.raftCurrentTerm != term for n in nodes):
        return None
    return figures


async def _run() -> dict:
    nodes = build_three(asyncio.get_running_loop(), TIMING)
    received = {node: [] for node in nodes}
    for node in nodes:
        _record(node, received[node])
        node.start()
    try:
        for _ in range(ATTEMPTS):
            figures = await _measure(nodes, received)
            if figures is not None:
                return figures
        raise AssertionError("the leader changed during every measurement")
    finally:
        for node in nodes:
            node.stop()


def test_a_commit_is_sent_once_and_a_commit_index_alone_is_not_answered():
    figures = asyncio.run(_run())
    for address, (with_entries, repeats, answers, elapsed) in figures.items():
        assert with_entries >= COMMITS, (address, figures)  # the traffic was seen
        assert repeats <= elapsed / HEARTBEAT_S + 2, (address, figures)
        assert answers <= with_entries + elapsed / (HEARTBEAT_S / 2) + 2, (address, figures)
