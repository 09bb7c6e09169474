"""A follower deletes log entries only where the leader's log differs from its own.

Method: three pysyncobj nodes ticked by hand on loopback ports replicate ten entries. Then one
follower is handed an append_entries from its leader that arrives late: its entries are ones the
follower already holds, and its log goes further. Upstream pysyncobj deletes everything after
the message's last entry (it logs CRITICAL "truncating already-applied log entries") while the
leader still counts the follower for those entries. With BeanRaft's ``truncate_only_on_conflict``
the follower keeps its log, acknowledges what the message vouched for, still replaces entries
whose term differs and still adds new ones.
"""

from __future__ import annotations

import logging
import time

from upstream import Counter, free_port

import pysyncobj.journal as pso_journal
import pysyncobj.syncobj as pso_syncobj
from pysyncobj import SyncObjConf

from beanraft.replication import seam
from beanraft.replication.raft import truncate_only_on_conflict

TRUNCATING = "truncating already-applied log entries"


class Critical(logging.Handler):
    def __init__(self):
        super().__init__(logging.CRITICAL)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class Replicated:
    """Three hand-ticked nodes that all hold and applied the same ten entries."""

    def __init__(self, harden: bool):
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        saved = pso_syncobj.createJournal
        pso_syncobj.createJournal = pso_journal.createJournal
        try:
            self.nodes = [Counter(a, SyncObjConf(autoTick=False, appendEntriesUseBatch=False,
                                                 raftMinTimeout=0.3, raftMaxTimeout=0.6,
                                                 appendEntriesPeriod=0.05, connectionTimeout=60),
                                  peers=[b for b in addresses if b != a]) for a in addresses]
        finally:
            pso_syncobj.createJournal = saved
        self._tick_until(lambda: any(n._isLeader() and n.isReady() for n in self.nodes))
        self.leader = next(n for n in self.nodes if n._isLeader())
        self.follower = next(n for n in self.nodes if n is not self.leader)
        if harden:
            truncate_only_on_conflict(self.follower)
        self.sent: list[dict] = []
        seam.wrap_send(self.follower, self._record)
        for _ in range(10):
            self.leader.inc(1)
        self._tick_until(lambda: all(n.raftLastApplied == self.leader.raftCommitIndex
                                     and n.getStatus()["log_len"] == len(self.log(self.leader))
                                     for n in self.nodes) and self.leader.raftCommitIndex >= 11)
        self.critical = Critical()
        logging.getLogger("pysyncobj.syncobj").addHandler(self.critical)

    def _record(self, send, node, message):
        self.sent.append(message)
        return send(node, message)

    def _tick_until(self, done) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, "the three nodes did not get there in 20 s"
            for n in self.nodes:
                n.doTick(0.0)

    @staticmethod
    def log(node) -> list[tuple[bytes, int, int]]:
        return [tuple(entry) for entry in seam.journal(node)]

    def deliver(self, prev: int, entries: list) -> None:
        """The follower receives an append_entries of its leader's term and commit index."""
        terms = {entry[1]: entry[2] for entry in self.log(self.leader)}
        message = {"type": "append_entries", "term": self.leader.raftCurrentTerm,
                   "commit_index": self.leader.raftCommitIndex, "entries": entries,
                   "prevLogIdx": prev, "prevLogTerm": terms[prev]}
        self.sent.clear()
        leader_as_known = seam.leader_node(self.follower)
        seam.transport(self.follower)._onMessageReceived(leader_as_known, message)

    def match_index_of_follower(self) -> int:
        match = self.leader._SyncObj__raftMatchIndex
        node = next(n for n in match if n.address == self.follower.selfNode.address)
        return match[node]

    def close(self) -> None:
        logging.getLogger("pysyncobj.syncobj").removeHandler(self.critical)
        for node in self.nodes:
            node.destroy()


def _late(cluster: Replicated) -> tuple[list, int]:
    """The late message: prev six entries before the follower's last, two entries it holds."""
    log = cluster.log(cluster.leader)
    last = log[-1][1]
    prev = last - 6
    held = [entry for entry in log if prev < entry[1] <= prev + 2]
    return held, prev


def test_upstream_a_late_append_cuts_acknowledged_entries_the_leader_still_counts():
    cluster = Replicated(harden=False)
    try:
        before = cluster.log(cluster.follower)
        entries, prev = _late(cluster)
        cluster.deliver(prev, entries)
        after = cluster.log(cluster.follower)
        assert after == before[:len(before) - 4]  # the last four entries are gone
        assert any(TRUNCATING in m for m in cluster.critical.messages)
        # The leader goes on counting the follower for the four entries it no longer holds.
        assert cluster.match_index_of_follower() == before[-1][1]
    finally:
        cluster.close()


def test_beanraft_keeps_the_log_and_acknowledges_what_the_late_append_vouched_for():
    cluster = Replicated(harden=True)
    try:
        before = cluster.log(cluster.follower)
        applied = cluster.follower.raftLastApplied
        entries, prev = _late(cluster)
        cluster.deliver(prev, entries)
        assert cluster.log(cluster.follower) == before
        assert cluster.critical.messages == []
        assert cluster.sent == [{"type": "next_node_idx", "next_node_idx": prev + 3,
                                 "reset": False, "success": True}]
        assert cluster.follower.raftLastApplied == applied
        assert seam.leader_node(cluster.follower) is not None  # the leader was heard
        # An empty late heartbeat is kept from cutting the log as well.
        cluster.deliver(prev, [])
        assert cluster.log(cluster.follower) == before and cluster.critical.messages == []
        assert cluster.sent[-1]["next_node_idx"] == prev + 1
    finally:
        cluster.close()


def test_beanraft_still_replaces_entries_whose_term_differs_and_adds_new_ones():
    cluster = Replicated(harden=True)
    try:
        before = cluster.log(cluster.follower)
        last, term = before[-1][1], before[-1][2]
        # Entries it holds, then one more: only the new one is added, nothing is cut.
        extra = (before[-1][0], last + 1, term)
        cluster.deliver(last - 3, [*before[-3:], extra])
        assert cluster.log(cluster.follower) == [*before, extra]
        assert cluster.critical.messages == []
        assert cluster.sent[-1]["next_node_idx"] == last + 2
        # An entry whose term differs replaces the follower's from there on (Raft 5.3).
        other = (before[-1][0], last, term + 1)
        cluster.deliver(last - 1, [other])
        assert cluster.log(cluster.follower) == [*before[:-1], other]
        assert any(TRUNCATING in m for m in cluster.critical.messages)  # it had applied it
    finally:
        cluster.close()
