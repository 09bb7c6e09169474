"""This node's own standing in the cluster: joining, a member, or removed; and how it learns it.

Theory of operation.
* A node started with ``--join`` is *joining*: the leader replicates to it as a learner (see
  ``membership.py``) but it is not a member, so it never campaigns (its election timeout is held)
  and does not serve clients. It becomes a *member* when the entry that adds it reaches its log
  (pysyncobj calls the change for every membership entry it appends, replays or rolls back, and
  ``seam.watch_membership`` reports it here), or when a snapshot from the leader lists it; in
  both cases only once its log has caught up with the leader's commit index, with no entry
  since removing it. A node removed and joining again under the same address catches up
  through its own history: the leader's latest snapshot may predate the removal and list it,
  and older entries may add and remove it. A node that believed the first of these would
  campaign with ever higher terms, depose the leader or refuse its older term, and never catch
  up, so its addition could never complete. So the entries about this node decide in order, and it
  is held from campaigning until the last of them, caught up, says it is a member.
* pysyncobj's leader cuts a member off the moment it appends the member's removal, so the
  removed node never sees that entry. The leader therefore tells it first, in the same tick and
  on the same connection (``br_member_removed``), which it closes a moment later rather than at
  once so the message can leave under load: the node then holds its elections
  (it would only raise its term against a cluster that ignores it), says so in its log and in
  /status, and writes ``"removed": true`` to its members file, so that a restart keeps it quiet.
* The removal may still be lost: the leader that appended it dies and the next one never had the
  entry. That next leader replicates to the node in a newer term, which is how the node knows it
  is still a member; it then campaigns again. The next leader may need this node, though: with
  the leader gone, the node may hold the only log that has every committed entry (it
  acknowledged entries that the other member, frozen or cut off, never got), and the others
  cannot be elected without its vote, which a longer log refuses. So the hold is bounded: a node
  told it is removed that has heard from no leader for ``REJOIN_AFTER_ELECTIONS`` maximum
  election timeouts campaigns again, through pre-vote as every member does (one log line says
  so). Five timeouts leave the members that still count it room for an election or two, split
  votes included, whose leader would reach it first; after the notice no other leader can reach
  it (the one that removed it cut it off), so the time since the notice (or since a restart that
  read ``"removed"`` in the members file) is the time without a leader. If the removal did
  commit, the members no longer count the node: they drop its connections and refuse its
  pre-votes (``prevote.py`` grants only a member of its own configuration), so it never
  campaigns for real and never raises the cluster's term; it stays ``removed`` with no leader, and its
  log says nothing more. Once it leads, or a leader of a newer term than its notice replicates
  to it, it is a member again and its members file no longer says ``"removed"``. A removal
  forced while the node was cut off is never told: such a node keeps asking alone, which harms
  no one (the members drop its connections); its log says it hears from no leader.
"""

from __future__ import annotations

import logging
from typing import Callable

from pysyncobj.monotonic import monotonic

from . import seam

log = logging.getLogger("beanraft.membership")

JOINING, MEMBER, REMOVED = "joining", "member", "removed"
REMOVED_MESSAGE = "br_member_removed"
REJOIN_AFTER_ELECTIONS = 5  # told it is removed, a node campaigns again after this many (above)


class Standing:
    """Tick thread: this node's standing; ``state`` is read by /status from any thread."""

    def __init__(self, sync, state: str, hold_elections: Callable[[bool], None],
                 election_max_s: Callable[[], float] | None = None,
                 now: Callable[[], float] = monotonic):
        assert state in (JOINING, MEMBER, REMOVED)
        self._sync = sync
        self.state = state
        self._hold_elections = hold_elections  # True: never campaign; False: the usual timing
        self._removed_term = sync.raftCurrentTerm if state == REMOVED else 0
        # The cluster's maximum election timeout (None: a removed node holds its elections for
        # good), and since when a removed node has heard from no leader (the notice, or a start
        # that read "removed" in the members file: it starts held).
        self._election_max_s = election_max_s
        self._now = now
        self._removed_at = now()
        self._rejoined = False  # removed, it campaigns again: it heard from no leader for long
        self.told = 0  # notices of removal taken, for a request to remove this node to compare
        # Started with --join: this node catches up through the cluster's history, in which it
        # may have been a member before (a node started as a member replays its own log, and
        # must be able to campaign at once, so the rules below are a joiner's only).
        self._joiner = state == JOINING
        # Joining, this node's log (a snapshot or an entry) says it is a member: it becomes one
        # once caught up with the leader's commit index (``_settle``).
        self._listed = False
        self._me = str(sync.selfNode)
        # A joining node read the member list once; a member added since, which may lead by
        # the time this node is a learner, is accepted too (``know`` adds those it should call).
        seam.accept_unknown_nodes(sync, lambda: self.state == JOINING, self._known)

    def know(self, addresses) -> None:
        """Tick thread: the members as read again from the node named by --join."""
        if self.state != JOINING:
            return
        for address in addresses:
            if address != self._me and seam.know_node(self._sync, address):
                self._known(address)

    def _known(self, address: str) -> None:
        log.info("joining: %s is a member too (it was added after this node read the members)",
                 address)

    # -- the leader's side -----------------------------------------------------------------

    def before_change(self, kind: str, address: str, reverse: bool) -> bool:
        """The leader is about to append (and apply) a removal: tell the member it removes,
        while the connection that pysyncobj is about to close still exists (True: keep it
        open a moment for the message to leave)."""
        node = seam.node_named(address)
        if kind != "rem" or reverse or not seam.is_leader(self._sync) \
                or node not in self._sync.otherNodes:
            return False  # not a removal this leader appends now (applying it later, say)
        sent = seam.transport(self._sync).send(node, {
            "type": REMOVED_MESSAGE, "term": self._sync.raftCurrentTerm, "leader": self._me})
        log.info("membership: told %s it is removed%s", address,
                 "" if sent else " (it is not connected: it will not know)")
        return bool(sent)

    # -- this node's side ------------------------------------------------------------------

    def after_change(self, kind: str, address: str, reverse: bool, _changed: bool) -> None:
        if address != self._me:
            return
        added = (kind == "add") != reverse
        if added and self.state == JOINING:
            if not self._joiner:
                self._become(MEMBER, "the entry that adds this node reached its log")
                return
            self._listed = True
            self._settle("the entry that adds this node reached its log")
        elif not added and kind == "add" and self.state == MEMBER:
            # The entry that added us was rolled back: the next leader never had it.
            self._become(JOINING, "the entry that added this node was rolled back")
        elif not added and self._joiner and self.state in (JOINING, MEMBER):
            # A leader cuts a member off before it can see its own removal, so this is an older
            # entry that a joining node catches up through (or a node replays): later ones decide.
            if self._listed:
                log.info("joining: an entry in this node's log removes it; it waits for one "
                         "that adds it")
            self._listed = False
            if self.state == MEMBER:
                self._become(JOINING, "an entry in its log removes this node")

    def snapshot_lists(self, cluster) -> None:
        """A snapshot from the leader: if it lists this node, this node is a member once caught
        up with the leader's commit index, unless an entry since removes it."""
        if self.state == JOINING and self._me in cluster:
            self._listed = True
            self._settle("a snapshot from the leader lists this node")
            if self.state == JOINING:
                log.info("joining: a snapshot from the leader lists this node; it is a member "
                         "once caught up with the leader's commit index, unless an entry "
                         "since removes it")

    def _settle(self, why: str) -> None:
        """Joining and listed: a member if this node's log has the leader's commit index."""
        if not self._listed:
            return
        leader_commit = self._sync.getStatus().get("leader_commit_idx")
        if leader_commit is not None and self._sync.raftCommitIndex >= leader_commit:
            self._listed = False
            self._become(MEMBER, why + ", and its log has caught up with the leader's")

    def on_message(self, node, message: dict) -> None:
        if message.get("type") != REMOVED_MESSAGE or self.state == REMOVED:
            return
        if seam.leader_node(self._sync) != node:
            return  # only the leader we follow removes us
        self._removed_term = int(message.get("term") or 0)
        self._removed_at = self._now()
        self._rejoined = False
        self.told += 1
        self._become(REMOVED, f"the leader {node} removed it from the cluster (term "
                     f"{self._removed_term}); it stops campaigning. Stop it, and empty its data "
                     "directory before it joins again")

    def on_tick(self) -> None:
        if self.state == JOINING:
            self._settle("its log says it is a member")
        if self.state != REMOVED:
            return
        sync = self._sync
        leader = seam.leader_node(sync)
        if sync.raftCurrentTerm > self._removed_term and leader is not None:
            # Only a member hears from a leader of a newer term, or is elected: the removal was
            # lost.
            self._become(MEMBER, (f"it leads term {sync.raftCurrentTerm}" if leader ==
                                  sync.selfNode else f"the leader {leader} of term "
                                  f"{sync.raftCurrentTerm} replicates to it")
                         + ": the removal did not commit")
            return
        self._rejoin_when_due()

    def _rejoin_when_due(self) -> None:
        """Removed and held: campaign again once no leader was heard of for long (see the
        module docstring)."""
        if self._rejoined or self._election_max_s is None:
            return
        quiet_s = REJOIN_AFTER_ELECTIONS * self._election_max_s()
        if self._now() - self._removed_at < quiet_s:
            return
        self._rejoined = True
        self._hold_elections(False)
        log.warning("this node was told it is removed but has heard from no leader for %g s: it "
                    "campaigns again (through pre-vote), in case the removal was lost with its "
                    "leader; if the removal committed, the members ignore it and it stays "
                    "without a leader", quiet_s)

    def _become(self, state: str, why: str) -> None:
        before, self.state = self.state, state
        if state == REMOVED:
            log.warning("this node is no longer a member: %s", why)
        else:
            log.info("this node is %s: %s", "a member" if state == MEMBER else "joining again",
                     why)
        if state != before:
            # Only a member campaigns. Joining again after the entry that added this node was
            # rolled back, then added once more, must release the hold as the first join did.
            self._hold_elections(state != MEMBER)
