"""Pre-vote and the leader's lease around pysyncobj's elections (Raft dissertation §9.6, as etcd).

Theory of operation.
* pysyncobj 0.3.17 campaigns as soon as a follower's election deadline passes: it raises its
  term and asks for votes, and every node that sees the higher term steps down, the leader
  included. A member cut off from the others (a partition, a flapping link) raises its term once
  per election timeout while it is alone, and the first vote request it gets through after the
  cut heals deposes a healthy leader: every client waits for an election that nothing needed.
* Here a member asks before it campaigns. ``before_tick`` runs right before each tick, whose
  first act is pysyncobj's check of the election deadline. When the deadline has passed (or
  passes within ``GATE_MARGIN_S``) and the node holds no licence, it puts the deadline off by a
  fresh election timeout, forgets its leader (as a campaign would) and sends every other
  member ``br_prevote``: the term it would campaign for (its own plus one), its last log index
  and term, and the round's number. Asking changes no term and no vote on either side.
* A member grants a pre-vote when it would vote for such a candidate and has no leader to be
  loyal to: the asker is a member, the term asked for is above its own, the asker's log is at
  least as up to date as its own, and it is not in a leader's lease: it is not the leader, and
  it has not heard from a leader within the minimum election timeout (an append_entries, or a
  fragment of a big one) unless it is asking for itself. That is the cluster's timeout, not the
  one a node that holds its elections (told it is removed) has raised far out: such a node would
  otherwise refuse every pre-vote once its leader died, and a removal lost with that leader left
  the members that still count it without a leader. A lease says nothing against a log
  that ends in a term above the member's own: only a later leader than its own can have
  written it (a log restored from a backup ends in such a term, ``restore.py``), so such an
  asker is granted in spite of the lease.
* With grants from a majority of the members (its own included) a node holds a licence for the
  term it asked for, good for one maximum election timeout, and sets its deadline to now: the
  next tick campaigns as pysyncobj always did. A licence is spent once the term moves on.
  Hearing from a leader at the node's term or above ends its round and voids its licence.
* A leadership transfer (TimeoutNow from the node's own leader, ``transfer.py``) is a licence
  of its own: the leader chose this node, and the other members are in its lease.
* A member whose term is above its leader's (its vote requests were lost after a pre-vote, and
  the others elected a leader at a lower term) ignores that leader's append_entries and can be
  neither elected (the others are in the lease) nor led. It answers such an append_entries
  with ``br_term``; a leader that learns of a higher term steps down (Raft §5.1) and the next
  election runs above both terms. A member whose log ends in a term above that leader's does
  not: its log is the better one, the others grant it a pre-vote in spite of their lease, and
  its vote requests depose that leader and win (a restored node meeting empty ones); a step
  down first would only let the leader's shorter log race it to the next term.
* Every answer carries the answering member's own term (``current``). An asker refused by a
  member at a higher term takes that term (as a follower, with no vote): pre-vote changes no
  term otherwise, and two leaderless members whose terms are the other way round from their logs
  (the one with the longer log behind in term, after a lost campaign) would refuse each other
  for ever: the one for a term not above its own, the other for a shorter log. Raft and etcd's
  pre-vote take the higher term the same way; taking a term without a vote is always safe.
* A node that is alone (no other member) campaigns at once, as a learner never does.
* A node that is joining (``may_vote`` false: a new node, or a member back under its address
  with an empty data directory) neither grants a pre-vote nor answers a vote request: an empty
  log's vote could elect a leader that lacks entries the cluster committed. It votes once it is
  a member (``standing.py``). A node told it is removed keeps voting: it has its whole log, and
  the removal it was told of may be lost with its leader, whose successor may need that vote.
* pysyncobj ignores message types it does not know, so a BeanRaft without pre-vote never
  answers ``br_prevote``. A member that sent us messages during a whole round yet answered
  none, and never sent us a message of pre-vote, is such a node: from the next round on its
  grant is taken for given, and the real election decides, as before pre-vote. Otherwise, in a
  rolling upgrade, an upgraded member with the longest log and a member not yet upgraded would
  never elect a leader: the upgraded one waits for an answer that never comes, and the other
  one's vote requests lose against the longer log. A member cut off hears nothing, so this
  never lets it campaign.
* Safety does not rest on any of this: the election itself is pysyncobj's, unchanged. The lease
  only decides whom a member encourages to campaign; a clock that drifts or a frozen process
  makes a member refuse or grant a pre-vote at the wrong moment, which costs an election
  timeout, never a second leader in one term.
* Everything here runs in the Raft tick thread (``before_tick`` and ``on_message``).
"""

from __future__ import annotations

import logging
import random
from typing import Callable

from pysyncobj.monotonic import monotonic

from . import seam

log = logging.getLogger("beanraft.raft")

ASK, ANSWER, TERM = "br_prevote", "br_prevote_ans", "br_term"
TYPES = frozenset((ASK, ANSWER, TERM))
GATE_MARGIN_S = 0.05  # a deadline this close is treated as passed: the tick follows in µs


class PreVote:
    """The pre-vote rounds of one pysyncobj node (see the module's theory of operation)."""

    def __init__(self, sync, now: Callable[[], float] = monotonic,
                 may_vote: Callable[[], bool] = lambda: True,
                 lease_s: Callable[[], float] | None = None):
        self._sync = sync
        self._now = now
        self._may_vote = may_vote  # False while this node is not a member with its log
        # The cluster's minimum election timeout, not pysyncobj's setting, which a node that
        # holds its elections has raised far out (see the module docstring).
        self._lease_s = lease_s or (lambda: sync.conf.raftMinTimeout)
        self._asking: int | None = None  # the term the open round asks for
        self._grants: set = set()  # the members that granted the open round
        self._licence: int | None = None  # the term this node may campaign for
        self._licence_until = 0.0
        self._transfer = False  # the licence came with a TimeoutNow from our leader
        self._heard_leader_at = float("-inf")
        self._heard: set | None = None  # members that sent us anything during the open round
        self._answered: set = set()  # members that answered the open round
        self._speaks: set = set()  # nodes that ever sent us a message of pre-vote
        self.rounds = 0  # rounds begun: the number of this node's latest round

    # -- wiring ---------------------------------------------------------------------------

    def install(self) -> None:
        """Route our messages here and watch the leader's messages (before pysyncobj sees them)."""
        handler = seam.message_handler(self._sync)

        def on_message(node, message):
            if not isinstance(message, dict):
                handler(node, message)
                return
            kind = message.get("type")
            if self._heard is not None:
                self._heard.add(node)
            if kind in TYPES:
                self._speaks.add(node)
                self.on_message(node, message)
                return
            if kind == "append_entries":
                if not self._from_leader(node, message):
                    return
            elif kind == "request_vote" and not self._may_vote():
                return  # joining (a learner, or a member back with an empty disk): no vote
            handler(node, message)
            if kind == "timeout_now":
                self._after_timeout_now()

        seam.transport(self._sync).setOnMessageReceivedCallback(on_message)

    def heard_from_leader(self) -> None:
        """Our leader proved alive by other means (a fragment of a big append_entries)."""
        self._heard_leader_at = self._now()

    # -- the gate -------------------------------------------------------------------------

    def before_tick(self) -> None:
        """Call right before each ``doTick``: a campaign pysyncobj would start now goes ahead only
        with a licence; without one, this node asks the others first."""
        sync = self._sync
        if seam.role(sync) == seam.LEADER or sync.selfNode is None:
            return
        now = self._now()
        if seam.election_deadline(sync) > now + GATE_MARGIN_S:
            return
        others = sync.otherNodes
        if not others:
            return  # alone: nobody to ask, and nobody to depose
        if self._licence == sync.raftCurrentTerm + 1 and now <= self._licence_until:
            return
        self._licence = None
        self._transfer = False
        self._begin_round(others, now)

    def _begin_round(self, others, now: float) -> None:
        sync = self._sync
        conf = sync.conf
        mute = self._mute(others)
        seam.set_election_deadline(
            sync, now + conf.raftMinTimeout + (conf.raftMaxTimeout - conf.raftMinTimeout) * random.random())
        seam.forget_leader(sync)  # as pysyncobj's campaign would: /status says "no leader"
        self.rounds += 1
        self._asking = sync.raftCurrentTerm + 1
        self._grants = mute
        self._heard, self._answered = set(), set()
        if self._granted_by_majority(now):
            return
        last_index, last_term = _last_entry(sync)
        message = {"type": ASK, "term": self._asking, "round": self.rounds,
                   "last_log_index": last_index, "last_log_term": last_term}
        transport = seam.transport(sync)
        for node in others:
            transport.send(node, dict(message))
        log.debug("pre-vote round %d for term %d", self.rounds, self._asking)

    # -- messages -------------------------------------------------------------------------

    def on_message(self, node, message: dict) -> None:
        """Handle one of our message types (``message["type"] in TYPES``)."""
        kind = message.get("type")
        if kind == ASK:
            granted = self._would_grant(node, message)
            seam.transport(self._sync).send(node, {
                "type": ANSWER, "term": message.get("term"), "round": message.get("round"),
                "granted": granted, "current": self._sync.raftCurrentTerm})
        elif kind == ANSWER:
            self._on_answer(node, message)
        elif kind == TERM:
            self._take_higher_term(node, message.get("term"), logging.WARNING, "stepping down")

    def _would_grant(self, node, message: dict) -> bool:
        sync = self._sync
        term, last_index, last_term = (message.get("term"), message.get("last_log_index"),
                                       message.get("last_log_term"))
        if not all(type(v) is int for v in (term, last_index, last_term)):
            return False
        if node not in sync.otherNodes or term <= sync.raftCurrentTerm or not self._may_vote():
            return False
        if self._in_lease() and last_term <= sync.raftCurrentTerm:
            return False
        own_index, own_term = _last_entry(sync)
        return (last_term, last_index) >= (own_term, own_index)

    def _in_lease(self) -> bool:
        """Whether this node still has a leader it heard from within the minimum election
        timeout (a leader is in its own lease)."""
        sync = self._sync
        if seam.role(sync) == seam.LEADER:
            return True
        if seam.leader_node(sync) is None:
            return False  # none known, or it asks for itself (a round forgets the leader)
        return self._now() - self._heard_leader_at < self._lease_s()

    def _mute(self, others) -> set:
        """The members that sent us messages during the round that just ran out but never
        answered it, nor any other pre-vote: nodes of a BeanRaft without pre-vote. Their vote is counted as granted, so
        that the real election decides it, as it did before pre-vote."""
        if self._heard is None:
            return set()
        mute = (self._heard - self._answered - self._speaks) & set(others)
        if mute:
            log.info("pre-vote: %s sent messages but answered none (no pre-vote there): counted "
                     "as granted", ", ".join(sorted(n.address for n in mute)))
        return mute

    def _on_answer(self, node, message: dict) -> None:
        sync = self._sync
        if node not in sync.otherNodes:
            return  # not a member (any more): its answer counts neither way
        # ``current`` is absent from a BeanRaft before this field.
        if not message.get("granted") and self._take_higher_term(
                node, message.get("current"), logging.INFO, "its pre-vote refused ours"):
            return
        if self._asking is None or message.get("round") != self.rounds \
                or message.get("term") != self._asking:
            return
        self._answered.add(node)
        if not message.get("granted"):
            return
        if self._asking != sync.raftCurrentTerm + 1:
            self._asking = None  # the term moved on while we asked: the round is void
            return
        self._grants.add(node)
        if self._granted_by_majority(self._now()):
            seam.pipe_notifier(sync).notify()  # campaign at the next tick, not a tick later

    def _granted_by_majority(self, now: float) -> bool:
        """With a majority of grants (ours included), take the licence and let the deadline
        pass now."""
        sync = self._sync
        if (len(self._grants) + 1) * 2 <= len(sync.otherNodes) + 1:
            return False
        self._licence = self._asking
        self._licence_until = now + sync.conf.raftMaxTimeout
        self._asking = None
        self._heard = None
        seam.set_election_deadline(sync, now)
        log.info("pre-vote for term %d granted by a majority: campaigning", self._licence)
        return True

    def _from_leader(self, node, message: dict) -> bool:
        """An append_entries: note a leader at our term or above; answer one from a lower term
        with ours. False when pysyncobj need not see it (it ignores lower terms)."""
        sync = self._sync
        term = message.get("term")
        if type(term) is not int:
            return True
        if term >= sync.raftCurrentTerm:
            self._heard_leader_at = self._now()
            self._asking = None
            self._heard = None
            if not self._transfer or term > sync.raftCurrentTerm:
                # A transfer's leader goes on sending heartbeats until the vote request reaches
                # it (pysyncobj ignores them while the transfer is pending); a higher term ends it.
                self._licence = None
                self._transfer = False
            return True
        if _last_entry(sync)[1] <= term:
            seam.transport(sync).send(node, {"type": TERM, "term": sync.raftCurrentTerm})
        return False

    def _take_higher_term(self, node, term, level: int, why: str) -> bool:
        """A member says it is at ``term``: if that is above ours, take it (a follower with no
        vote; a round open for a lower term is void with it). True if it was taken."""
        sync = self._sync
        if type(term) is not int or term <= sync.raftCurrentTerm or node not in sync.otherNodes:
            return False
        log.log(level, "member %s is at term %d, above ours (%d): %s, taking that term",
                 node.address, term, sync.raftCurrentTerm, why)
        seam.adopt_term(sync, term)
        self._asking = None
        return True

    def _after_timeout_now(self) -> None:
        """pysyncobj took a TimeoutNow from its leader (it set the deadline to 0): campaign."""
        sync = self._sync
        if seam.election_deadline(sync) == 0:
            self._licence = sync.raftCurrentTerm + 1
            self._licence_until = self._now() + sync.conf.raftMaxTimeout
            self._asking = None
            self._transfer = True


def _last_entry(sync) -> tuple[int, int]:
    """(index, term) of the last entry of this node's log."""
    journal = seam.journal(sync)
    if not len(journal):
        return 0, 0
    entry = journal[-1]
    return entry[1], entry[2]
