"""A follower installs a snapshot its leader sends only when the snapshot is ahead of what it holds,
and a message carrying a snapshot commits nothing on it.

Method: three nodes on loopback ports ticked by hand, with a cut that drops every message to or
from chosen nodes at the sender; a node cut off and never ticked again stands for one killed with
SIGKILL. Upstream pysyncobj 0.3.17 nodes (``hand_ticked.Replicated``) show each defect; three
BeanRaft ``RaftNode``s with real data directories, the job state machine and puts show BeanRaft
immune, with the anomaly named as the fault checker names it: a put answered INSERTED whose job
the surviving cluster does not hold is a lost job.

* A snapshot sent again. A follower that fell behind gets its leader's snapshot, then
  acknowledges entries while the third member is away. A refusal it sent before the snapshot
  reaches the leader late, the leader sends the same snapshot again and dies right after its last
  chunk left; the follower and the third member elect a new leader.
* A snapshot chunk's commit index. A leader cut off appends puts that never commit; the others
  elect a leader that compacts past them. When the cut heals the old leader gets the first chunk
  of the snapshot and ticks before the last one arrives.

Then, on a hand-ticked follower: the decision itself, and a message saying the leader's snapshot is
not ready (the leader is writing one), which pysyncobj takes as a commit index too; and the
receiver declining a snapshot as soon as its header has arrived.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from hand_ticked import Replicated
from raft_trio import build_three

from beanraft.jobs.commands import Op
from beanraft.replication import seam
from beanraft.replication.codec import encode_entry
from beanraft.replication.snapshot_file import (RECEIVING_SUFFIX, SnapshotAnchor, SnapshotReceiver,
                                                read_snapshot, write_snapshot)
from beanraft.replication.snapshot_install import install_only_ahead, is_ahead

DECLINED = "is not ahead of this node: not installed"
RESTORED = "state restored from snapshot at index"
CLAMPED = "exceeds journal end"


class Cut:
    """Drops every message from or to the addresses in ``out`` at the sender; with ``hold_last``
    set, holds back the last chunk of a snapshot instead of sending it (``release`` sends it)."""

    def __init__(self, syncs: list):
        self.out: set[str] = set()
        self.hold_last = False
        self.held: list = []
        self.dead_after_snapshot: str | None = None  # this sender dies once a last chunk left
        for sync in syncs:
            seam.wrap_send(sync, self._sender(sync))

    def _sender(self, sync):
        me = sync.selfNode.address

        def send(send, to, message):
            if me in self.out or to.address in self.out:
                return False
            chunk = message.get("serialized") if isinstance(message, dict) else None
            if chunk and chunk[2] and self.hold_last:
                self.held.append((sync, to, message))
                return True
            sent = send(to, message)
            if chunk and chunk[2] and me == self.dead_after_snapshot:
                self.out.add(me)
            return sent
        return send

    def release(self) -> None:
        self.hold_last = False
        for sync, to, message in self.held:
            seam.transport(sync).send(to, message)
        self.held.clear()


def _tick_until(nodes: list, done, what: str, seconds: float = 20) -> None:
    """Tick the upstream ``nodes`` (and no other) until ``done()``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        for node in nodes:
            node.doTick(0.0)
        time.sleep(0.001)


def _journal(sync) -> list[tuple[int, int]]:
    return [(entry[1], entry[2]) for entry in seam.journal(sync)]


def _node_as_known_by(sync, address: str):
    return next(n for n in seam.next_index(sync) if n.address == address)


def _record_refusals(sync) -> list[dict]:
    """The refusals (``reset``) ``sync`` sends from now on, as they left (with their term)."""
    refusals: list[dict] = []

    def record(send, to, message):
        sent = send(to, message)
        if isinstance(message, dict) and message.get("type") == "next_node_idx" \
                and message.get("reset"):
            refusals.append(dict(message))
        return sent

    seam.wrap_send(sync, record)
    return refusals


# -- a snapshot sent again: upstream ------------------------------------------------------------


def test_upstream_a_snapshot_sent_again_drops_acknowledged_entries_and_a_committed_write_is_lost(
        caplog):
    with Replicated(harden=False) as cluster:
        nodes, leader, follower = cluster.nodes, cluster.leader, cluster.follower
        other = next(n for n in nodes if n is not leader and n is not follower)
        cut = Cut(nodes)
        cut.out.add(follower.selfNode.address)  # it falls behind while the leader compacts
        for _ in range(5):
            leader.inc(1)
        _tick_until(nodes, lambda: other.value == leader.value == 15, "five increments")
        leader.forceLogCompaction()
        _tick_until(nodes, lambda: seam.journal(leader)[0][1] > _journal(follower)[-1][0] + 1,
                    "the leader's compaction")
        refusals = _record_refusals(follower)
        cut.out.clear()
        _tick_until(nodes, lambda: follower.value == 15 and bool(refusals), "the snapshot")
        snapshot_at = _journal(follower)

        cut.out.add(other.selfNode.address)  # away: the leader and this follower commit alone
        acked = []
        for _ in range(5):
            leader.inc(1, callback=lambda value, error: acked.append((value, error)))
        _tick_until(nodes, lambda: len(acked) == 5 and follower.value == 20, "five more")
        assert acked == [(16, 0), (17, 0), (18, 0), (19, 0), (20, 0)]  # FAIL_REASON.SUCCESS
        grown = _journal(follower)
        assert grown[-1][0] == snapshot_at[-1][0] + 5

        node = _node_as_known_by(leader, follower.selfNode.address)
        seam.transport(leader)._onMessageReceived(node, refusals[0])  # the late refusal
        cut.dead_after_snapshot = leader.selfNode.address
        _tick_until([leader], lambda: leader.selfNode.address in cut.out,
                    "the leader sending its snapshot again")
        with caplog.at_level(logging.WARNING, logger="pysyncobj.syncobj"):
            for _ in range(10):
                follower.doTick(0.01)
        assert _journal(follower) == snapshot_at  # emptied down to the snapshot
        assert follower.value == 15  # its state put back
        assert cluster.match_index_of_follower() == grown[-1][0]  # still counted for them
        assert CLAMPED in caplog.text

        cut.out.discard(other.selfNode.address)  # the leader stays dead
        survivors = [follower, other]
        _tick_until(survivors, lambda: any(n._isLeader() for n in survivors), "a new leader")
        new = next(n for n in survivors if n._isLeader())
        new.inc(100)
        _tick_until(survivors, lambda: follower.value == other.value >= 100, "the survivors")
        assert new.value == 115 != acked[-1][0] + 100  # the five acknowledged increments lost


# -- a snapshot sent again: BeanRaft ------------------------------------------------------------


class Trio:
    """Three BeanRaft RaftNodes with data directories, ticked by hand on a loop of their own,
    a session on the first leader and a cut between them."""

    def __init__(self, tmp_path):
        self.loop = asyncio.new_event_loop()
        dirs = [str(tmp_path / f"node{i}") for i in range(3)]
        for d in dirs:
            os.makedirs(d)
        self.nodes = build_three(self.loop, data_dirs=dirs)
        self.cut = Cut([n._sync for n in self.nodes])
        self.tick_until(lambda: any(n.is_leader() for n in self.nodes), "a leader")
        self.leader = next(n for n in self.nodes if n.is_leader())
        epoch = self.submit(self.leader, (Op.NODE_START, 0, 0, "single"))[0]
        self.sid = (epoch[1] << 32) | 1
        self.seq = 1
        assert self.submit(self.leader, (Op.OPEN, self.sid, 1)) == [("OK",)]

    def tick_until(self, done, what: str, skip=(), seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
            for node in self.nodes:
                if node not in skip:
                    node._tick(0.0)
            self.loop.run_until_complete(asyncio.sleep(0))  # results reach their futures
            time.sleep(0.001)

    def submit(self, node, command, skip=()):
        future = node.submit(encode_entry(time.time_ns(), [command]))
        self.tick_until(future.done, f"{command[0]!r} committed", skip)
        return future.result()

    def propose_puts(self, node, count: int) -> list[tuple[bytes, object]]:
        """``count`` puts proposed on ``node``: (body, future of its reply) each."""
        proposed = []
        for _ in range(count):
            self.seq += 1
            body = b"job %d" % self.seq
            command = (Op.PUT, self.sid, self.seq, 0, 0, 10**9, body)
            proposed.append((body, node.submit(encode_entry(time.time_ns(), [command]))))
        return proposed

    def address(self, node) -> str:
        return node.config.self_addr

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        self.loop.close()


def _lost(puts: list[tuple[bytes, object]], survivor) -> list[tuple[int, bytes]]:
    """The puts answered INSERTED whose job ``survivor`` does not hold with that body."""
    inserted = [(f.result()[0][1], body) for body, f in puts
                if f.done() and not f.exception() and f.result()[0][0] == "INSERTED"]
    return [(job, body) for job, body in inserted
            if job not in survivor.machine.jobs or survivor.machine.jobs[job].body != body]


def test_beanraft_keeps_the_entries_after_a_snapshot_it_holds_and_loses_no_acknowledged_put(
        tmp_path, caplog):
    caplog.set_level(logging.INFO)
    trio = Trio(tmp_path)
    try:
        leader = trio.leader
        follower, other = [n for n in trio.nodes if n is not leader]
        puts = trio.propose_puts(leader, 5)
        trio.tick_until(lambda: all(f.done() for _b, f in puts)
                        and follower.applied_index == leader.applied_index, "five puts")
        trio.cut.out.add(trio.address(follower))  # behind while the leader compacts
        puts += trio.propose_puts(leader, 5)
        trio.tick_until(lambda: all(f.done() for _b, f in puts), "five more", skip=(follower,))
        leader._sync.forceLogCompaction()
        trio.tick_until(lambda: seam.journal(leader._sync)[0][1] > _journal(follower._sync)[-1][0]
                        + 1, "the leader's compaction", skip=(follower,))
        refusals = _record_refusals(follower._sync)
        trio.cut.out.clear()
        trio.tick_until(lambda: follower.applied_index == leader.applied_index and refusals,
                        "the follower installing the snapshot")
        assert caplog.text.count(RESTORED) == 1

        trio.cut.out.add(trio.address(other))  # away: the leader and this follower commit alone
        acked = trio.propose_puts(leader, 5)
        trio.tick_until(lambda: all(f.done() for _b, f in acked)
                        and follower.applied_index == leader.applied_index, "five more puts",
                        skip=(other,))
        puts += acked
        assert not _lost(puts, leader) and len(_lost(puts, other)) == 5
        grown, applied = _journal(follower._sync), follower.applied_index
        jobs = dict(follower.machine.jobs)

        node = _node_as_known_by(leader._sync, trio.address(follower))
        seam.transport(leader._sync)._onMessageReceived(node, refusals[0])  # the late refusal
        assert seam.next_index(leader._sync)[node] <= seam.journal(leader._sync)[0][1]
        trio.cut.dead_after_snapshot = trio.address(leader)
        deadline = time.monotonic() + 10
        while trio.address(leader) not in trio.cut.out:
            assert time.monotonic() < deadline, "the leader did not send its snapshot again"
            leader._tick(0.01)
        for _ in range(10):
            follower._tick(0.01)
        assert DECLINED in caplog.text and CLAMPED not in caplog.text
        assert caplog.text.count(RESTORED) == 1  # not loaded again
        assert _journal(follower._sync)[-1] == grown[-1]
        assert follower.applied_index >= applied and follower.machine.jobs == jobs
        assert not os.path.exists(os.path.join(follower.config.data_dir,
                                               "raft.snapshot" + RECEIVING_SUFFIX))

        trio.cut.out.discard(trio.address(other))  # the leader stays dead
        survivors = (follower, other)
        trio.tick_until(lambda: any(n.is_leader() for n in survivors), "a new leader",
                        skip=(leader,))
        new = next(n for n in survivors if n.is_leader())
        trio.tick_until(lambda: all(n._sync.raftLastApplied >= new._sync.raftCommitIndex > applied
                                    for n in survivors), "the survivors applying", skip=(leader,))
        assert _lost(puts, new) == [] and _lost(puts, other) == []
    finally:
        trio.close()


# -- a snapshot chunk's commit index ------------------------------------------------------------


def test_upstream_a_snapshot_chunk_commits_a_deposed_leader_s_entries_and_answers_its_clients():
    with Replicated(harden=False) as cluster:
        nodes, old = cluster.nodes, cluster.leader
        others = [n for n in nodes if n is not old]
        cut = Cut(nodes)
        cut.out.add(old.selfNode.address)
        answers = []
        for _ in range(3):
            old.inc(100, callback=lambda value, error: answers.append((value, error)))
        for _ in range(5):
            old.doTick(0.0)
        committed, last = old.raftCommitIndex, _journal(old)[-1][0]
        assert last == committed + 3
        _tick_until(others, lambda: any(n._isLeader() for n in others), "a new leader")
        new = next(n for n in others if n._isLeader())
        for _ in range(6):
            new.inc(1)
        _tick_until(others, lambda: all(n.value == 16 for n in others), "six increments")
        new.forceLogCompaction()
        _tick_until(others, lambda: seam.journal(new)[0][1] > last + 1, "the compaction")
        cut.hold_last = True
        cut.out.clear()
        _tick_until(nodes, lambda: bool(cut.held), "the snapshot's last chunk")
        for _ in range(3):
            old.doTick(0.01)  # the first chunk arrives, and the ticks after it apply
        assert old.raftCommitIndex == last  # its own entries, never checked against the leader's
        assert answers == [(110, 0), (210, 0), (310, 0)]  # told they succeeded
        cut.release()
        _tick_until(nodes, lambda: old.raftLastApplied >= new.raftCommitIndex, "the snapshot")
        assert old.value == new.value == 16  # none of the three is in the cluster's state


def test_beanraft_a_snapshot_chunk_commits_nothing_and_the_snapshot_then_installs(tmp_path):
    trio = Trio(tmp_path)
    try:
        old = trio.leader
        others = [n for n in trio.nodes if n is not old]
        trio.cut.out.add(trio.address(old))
        phantom = trio.propose_puts(old, 3)
        for _ in range(5):
            old._tick(0.0)
        committed, last = old._sync.raftCommitIndex, _journal(old._sync)[-1][0]
        assert last == committed + 3
        trio.tick_until(lambda: any(n.is_leader() for n in others), "a new leader", skip=(old,))
        new = next(n for n in others if n.is_leader())
        puts = trio.propose_puts(new, 6)
        trio.tick_until(lambda: all(f.done() for _b, f in puts), "six puts", skip=(old,))
        new._sync.forceLogCompaction()
        trio.tick_until(lambda: seam.journal(new._sync)[0][1] > last + 1,
                        "the new leader's compaction", skip=(old,))
        trio.cut.hold_last = True
        trio.cut.out.clear()
        trio.tick_until(lambda: bool(trio.cut.held), "the snapshot's last chunk")
        for _ in range(5):  # the first chunk arrives, and ticks follow that could apply
            old._tick(0.01)
            trio.loop.run_until_complete(asyncio.sleep(0))
        assert old._sync.raftCommitIndex == committed and old.applied_index == committed
        assert not any(f.done() for _b, f in phantom)  # nobody told anything
        trio.cut.release()
        trio.tick_until(lambda: old.applied_index >= new._sync.raftCommitIndex,
                        "the old leader installing the snapshot")
        assert old.machine.digest() == new.machine.digest()
        assert _lost(puts + phantom, new) == []
    finally:
        trio.close()


# -- the decision, and the receiver -------------------------------------------------------------


def _anchor(index: int, term: int) -> SnapshotAnchor:
    return SnapshotAnchor(last=(b"x", index, term), prev=(b"x", index - 1, term), cluster=())


def test_a_snapshot_is_ahead_only_past_the_commit_index_and_unless_the_log_holds_its_last_entry():
    with Replicated(harden=False) as cluster:
        follower = cluster.follower
        log = cluster.log(follower)
        last, term = log[-1][1], log[-1][2]
        extra = (log[-1][0], last + 1, term)
        cluster.deliver(last, [extra])  # held, not committed: the leader never had it
        assert follower.raftCommitIndex == last and cluster.log(follower)[-1] == extra
        assert not is_ahead(follower, _anchor(last - 3, term))  # committed here
        assert not is_ahead(follower, _anchor(last, term))
        assert not is_ahead(follower, _anchor(last + 1, term))  # held: its log is kept
        assert is_ahead(follower, _anchor(last + 1, term + 1))  # another entry there
        assert is_ahead(follower, _anchor(last + 2, term))  # beyond its log


def _not_ready_yet(cluster: Replicated, harden: bool, tmp_path) -> tuple[int, int]:
    """The follower holds an entry its leader never had; then its leader, which committed one
    of its own at that index, says that its snapshot is not ready (it is writing one): the
    follower's commit index before and after."""
    follower = cluster.follower
    if harden:
        install_only_ahead(follower, str(tmp_path / "raft.snapshot"), lambda: None)
    log = cluster.log(follower)
    last = log[-1][1]
    cluster.deliver(last, [(log[-1][0], last + 1, log[-1][2])])
    before = follower.raftCommitIndex
    message = {"type": "append_entries", "term": cluster.leader.raftCurrentTerm,
               "commit_index": last + 1, "serialized": None}
    seam.transport(follower)._onMessageReceived(seam.leader_node(follower), message)
    return before, follower.raftCommitIndex


def test_upstream_a_snapshot_not_ready_yet_commits_an_entry_nothing_vouched_for(tmp_path):
    with Replicated(harden=False) as cluster:
        before, after = _not_ready_yet(cluster, False, tmp_path)
        assert after == before + 1  # the follower's own entry: the next tick applies it


def test_beanraft_a_snapshot_not_ready_yet_commits_nothing(tmp_path):
    with Replicated(harden=False) as cluster:
        before, after = _not_ready_yet(cluster, True, tmp_path)
        assert after == before


def _chunks(path: str, size: int) -> list[tuple[bytes, bool, bool]]:
    """What pysyncobj hands the receiver for the file at ``path``: chunks, then an empty last."""
    data = open(path, "rb").read()
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return [(p, i == 0, False) for i, p in enumerate(pieces)] + [(b"", False, True)]


def test_a_snapshot_not_ahead_is_declined_once_its_header_is_in_and_nothing_of_it_is_kept(
        tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beanraft.snapshot")
    ours = SnapshotAnchor(last=(b"o" * 300, 30, 2), prev=(b"p", 29, 2), cluster=("127.0.0.1:1",))
    sent_anchor = SnapshotAnchor(last=(b"n" * 300, 20, 2), prev=(b"m", 19, 2),
                                 cluster=("127.0.0.1:1",))
    sent = str(tmp_path / "sent")
    write_snapshot(sent, sent_anchor, os.urandom(200_000))
    path = str(tmp_path / "raft.snapshot")
    write_snapshot(path, ours, b"the follower's own state")
    asked, replaced = [], []
    receiver = SnapshotReceiver(path, lambda: replaced.append(1),
                                wanted=lambda anchor: asked.append(anchor) or False)
    with open(sent, "rb") as f:
        header_end = 8 + int.from_bytes(f.read(8)[4:], "little")
    chunks = _chunks(sent, 100)  # the header (over 300 bytes) spans several chunks
    for number, chunk in enumerate(chunks):
        assert receiver.receive(chunk) is False
        # Asked as soon as the header is in, and nothing of the snapshot is left after that.
        assert len(asked) == (number * 100 + len(chunk[0]) >= header_end)
        assert os.path.exists(path + RECEIVING_SUFFIX) == (not asked)
    assert asked == [sent_anchor] and not replaced  # the rest of it was ignored
    assert not os.path.exists(path + RECEIVING_SUFFIX)
    assert read_snapshot(path) == (ours, b"the follower's own state")
    assert caplog.text.count(DECLINED) == 1

    # Wanted at its header but not any more once whole (the node moved on meanwhile).
    answers = iter([True, False])
    receiver.wanted = lambda anchor: next(answers)
    assert not any(receiver.receive(chunk) for chunk in _chunks(sent, 64 * 1024))
    assert not replaced and read_snapshot(path)[0] == ours
    assert not os.path.exists(path + RECEIVING_SUFFIX)
    receiver.wanted = lambda anchor: True
    assert [receiver.receive(chunk) for chunk in _chunks(sent, 64 * 1024)][-1] is True
    assert read_snapshot(path)[0] == sent_anchor and replaced == [1]
