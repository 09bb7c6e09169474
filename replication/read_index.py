"""Linearizable reads without writing to the log: a read index confirmed by one heartbeat round.

Theory of operation (Raft dissertation §6.4; the same scheme as etcd's ReadIndex).
* A read that arrives at time t may be answered from a node's applied state once that state
  holds every entry committed before t. The leader knows such an index, its commit index, as long
  as it is still the leader at some moment after t and has committed an entry of its own term
  (pysyncobj appends a no-op when it becomes leader; until that commits, a new leader's commit
  index can trail what its predecessor acknowledged).
* Leadership is confirmed by a round of ``br_ping`` messages, sent after the reads of the round
  arrived. A follower answers ``br_pong`` only while it follows this leader in this very term.
  A follower never answers an older term's leader, so once a majority (counting the leader) has
  answered a round, no other leader can have been elected before those answers were sent: the
  commit index noted when the round began is a safe read index. One round serves every read
  that arrived before it began, so a busy node pays one round per heartbeat period, not per read.
* A follower asks its leader (``br_read_req``); the leader runs a round and answers with the
  index (``br_read_index``), after an append_entries round that tells the follower the commit
  index if it may not know it yet (``before_remote_answers``: a leader holds back a commit
  index no follower waits for). The follower then waits until it has applied that index.
* No timing assumption is made (no lease): clocks may drift, processes may freeze. A request
  that gets no answer, because the leader changed or a message was lost, is asked again by the
  caller (``RaftNode.read_index``) until its own deadline.
* Everything here runs in the Raft tick thread (``on_tick`` and ``on_message``), the only thread
  that may touch pysyncobj; the event loop hands requests over through a deque and a wake-up.

The messages travel over pysyncobj's own connections, sealed like every other peer message.
pysyncobj ignores message types it does not know, so an older node simply never answers.
"""

from __future__ import annotations

import collections
import itertools
import secrets
from typing import Callable

from . import seam

PING, PONG, REQUEST, ANSWER = "br_ping", "br_pong", "br_read_req", "br_read_index"
TYPES = frozenset((PING, PONG, REQUEST, ANSWER))
MAX_REMOTE_WAITERS = 65_536  # followers' requests queued on the leader for the next round
MAX_ROUNDS = 1_024  # unconfirmed rounds kept (a cut-off leader); older ones are asked again


class ReadIndex:
    """The tick-thread side of read indexes; ``deliver(token, index)`` hands results back."""

    def __init__(self, sync, deliver: Callable[[int, int], None],
                 before_remote_answers: Callable[[], None] = lambda: None):
        self._sync = sync
        self._deliver = deliver
        self._before_remote_answers = before_remote_answers  # the leader tells its commit index
        # Tokens from a random start: an answer meant for this node's previous process (it
        # asked, died and came back within the leader's fallback) must not settle a new request.
        self._tokens = itertools.count(secrets.randbits(62) + 1)
        self.requests: collections.deque = collections.deque()  # tokens from the event loop
        self._local: list[int] = []  # this node's tokens for the next round
        self._remote: list[tuple[object, int]] = []  # (follower node, its token)
        self._seq = 0
        self._term = -1
        self._acked: dict[object, int] = {}  # follower node -> highest round it answered
        self._rounds: collections.deque = collections.deque()  # (seq, commit index, local, remote)

    def new_token(self) -> int:
        """A token for one request (any thread); put it in ``requests`` and wake the tick."""
        return next(self._tokens)

    # -- the tick ---------------------------------------------------------------------------

    def on_tick(self) -> None:
        """Start a round for the reads that arrived since the last one (or forward them)."""
        while self.requests:
            self._local.append(self.requests.popleft())
        if not (self._local or self._remote):
            return
        sync = self._sync
        if not seam.is_leader(sync):
            self._rounds.clear()
            self._remote.clear()  # their followers ask again
            self._forward()
            return
        term = sync.raftCurrentTerm
        if term != self._term:
            self._term, self._acked, self._rounds = term, {}, collections.deque()
        commit = sync.raftCommitIndex
        if not self._committed_in_term(commit, term):
            return  # wait for this term's first entry (the no-op) to commit
        self._seq += 1
        self._rounds.append((self._seq, commit, self._local, self._remote))
        if len(self._rounds) > MAX_ROUNDS:
            self._rounds.popleft()
        self._local, self._remote = [], []
        transport = seam.transport(sync)
        for node in sync.otherNodes:
            transport.send(node, {"type": PING, "term": term, "seq": self._seq})
        self._settle()

    def _committed_in_term(self, commit: int, term: int) -> bool:
        journal = seam.journal(self._sync)
        if not len(journal):
            return False
        position = commit - journal[0][1]
        return 0 <= position < len(journal) and journal[position][2] == term

    def _forward(self) -> None:
        leader = seam.leader_node(self._sync)
        if leader is None or leader == self._sync.selfNode:
            return  # no leader known yet: keep them for a later tick
        transport = seam.transport(self._sync)
        for token in self._local:
            transport.send(leader, {"type": REQUEST, "token": token})
        self._local = []

    # -- peer messages ----------------------------------------------------------------------

    def on_message(self, node, message: dict) -> None:
        """Handle one of our message types (``message["type"] in TYPES``)."""
        kind = message.get("type")
        sync = self._sync
        if kind == PING:
            if (message.get("term") == sync.raftCurrentTerm and seam.role(sync) == seam.FOLLOWER
                    and seam.leader_node(sync) == node):
                seam.transport(sync).send(node, {"type": PONG, "term": message["term"],
                                                 "seq": message.get("seq", 0)})
        elif kind == PONG:
            if seam.is_leader(sync) and message.get("term") == self._term == sync.raftCurrentTerm:
                seq = message.get("seq", 0)
                if seq > self._acked.get(node, 0):
                    self._acked[node] = seq
                    self._settle()
        elif kind == REQUEST:
            if seam.is_leader(sync) and len(self._remote) < MAX_REMOTE_WAITERS:
                self._remote.append((node, message.get("token")))
        elif kind == ANSWER:
            token, index = message.get("token"), message.get("index")
            if isinstance(token, int) and isinstance(index, int):
                self._deliver(token, index)  # the event loop ignores tokens it gave up on

    def _settle(self) -> None:
        """Answer every round that a majority has confirmed."""
        sync = self._sync
        needed = (len(sync.otherNodes) + 1) // 2  # answers besides the leader's own
        transport = seam.transport(sync)
        while self._rounds:
            seq, commit, local, remote = self._rounds[0]
            if sum(1 for acked in self._acked.values() if acked >= seq) < needed:
                return
            self._rounds.popleft()
            for token in local:
                self._deliver(token, commit)
            if remote:
                self._before_remote_answers()
            for node, token in remote:
                transport.send(node, {"type": ANSWER, "token": token, "index": commit})
