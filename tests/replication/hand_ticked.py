"""Three pysyncobj nodes ticked by hand on loopback ports, with ten entries replicated and
applied on all of them: the stage for reproducing pysyncobj's defects in the way a follower and
its leader handle each other's messages, one message at a time."""

from __future__ import annotations

import logging
import time

from upstream import Counter, free_port

import pysyncobj.journal as pso_journal
import pysyncobj.syncobj as pso_syncobj
from pysyncobj import SyncObjConf

from beanraft.replication import seam
from beanraft.replication.raft import truncate_only_on_conflict


class Critical(logging.Handler):
    def __init__(self):
        super().__init__(logging.CRITICAL)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class Replicated:
    """Three hand-ticked nodes that all hold and applied the same ten entries (``dynamic``:
    with pysyncobj's dynamic membership changes)."""

    def __init__(self, harden: bool, dynamic: bool = False):
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        saved = pso_syncobj.createJournal
        pso_syncobj.createJournal = pso_journal.createJournal
        try:
            self.nodes = [Counter(a, SyncObjConf(autoTick=False, appendEntriesUseBatch=False,
                                                 raftMinTimeout=0.3, raftMaxTimeout=0.6,
                                                 appendEntriesPeriod=0.05, connectionTimeout=60,
                                                 dynamicMembershipChange=dynamic),
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

    def __enter__(self) -> "Replicated":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        logging.getLogger("pysyncobj.syncobj").removeHandler(self.critical)
        for node in self.nodes:
            node.destroy()
            seam.close_pipe_notifier(node)  # pysyncobj's destroy leaves it open
