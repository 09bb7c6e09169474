"""Membership at runtime: add or remove one member at a time, and remember who the members are.

Theory of operation.
* pysyncobj (``dynamicMembershipChange=True``) writes a change as a MEMBERSHIP log entry that
  takes effect on each node when the node appends it (Raft's single-server change). Any majority
  of the old members and any majority of the new ones share a node when the two sets differ by one
  member, so two leaders can never be elected in one term by the two configurations; that is
  why a leader runs **one change at a time** and refuses a second while the first is pending.
* A change is asked on any node and runs on the leader: a follower sends it over the sealed peer
  connection (``br_member_req``), the leader answers ``br_member_done``, by the path leadership
  transfers take too (``forwarding.py``). Everything that touches pysyncobj runs in the tick
  thread.
* pysyncobj has no learner role: a new member counts towards the majority from the moment the
  leader appends its addition. So an addition runs in two phases. First the new node is a
  *learner*: the leader replicates to it (snapshot, then log) as pysyncobj replicates to a
  read-only node, without counting it anywhere (``seam.add_learner``). Only once the learner has
  acknowledged the log to within CATCH_UP_ENTRIES of the commit index does the leader append the
  addition; then it waits for the new member to acknowledge that entry. A learner that does not
  catch up within the request's timeout is dropped, and the members are unchanged.
* A leader that loses its role answers ``no_leader`` only while nothing is in its log (a learner
  catching up); once the change is proposed the next leader may have its entry or not, and
  commit it or not, so the answer is ``timeout``, saying how to check (``_lost_role``).
* The leader also (a) refuses, unless forced, an addition whose new majority the members it hears
  from plus the new node could not form, and a removal whose smaller majority the remaining
  members it hears from could not form; (b) refuses any other change while one is pending.
* The leader tells its followers what is pending (``br_member_pending``, twice a second, and once
  more with the outcome). A follower elected while an addition was pending takes it over with the
  time it had left, so the addition completes or is abandoned on its timeout, and ``member list``
  on any node shows it. docs/explanation/membership.md gives the whole argument.
* This node's own standing (joining, member, removed) is ``standing.py``'s. A member that asks
  for its own removal is answered over the connection the leader keeps open a moment after
  cutting it off, once the removal committed; how it tells that answer from an earlier
  version's, and what it answers otherwise, is ``own_removal.py``'s.
* The members are persisted in ``members.json`` in the data directory (``members_file.py``),
  written (atomically, after the journal is synced) whenever this node's view of the membership
  changes. At start it
  overrides ``--peer``, which only seeds a brand-new cluster, and it overrides the member list of
  the snapshot the node loads at start (pysyncobj issue #133: a stale snapshot would otherwise
  give the node an old view until the log is replayed).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable

from pysyncobj.config import FAIL_REASON

from . import forwarding, own_removal, seam, standing, transfer
from .forwarding import Forwarder, route_messages
from .members_file import (MEMBERS_NAME, MembershipError, load_members, save_members,
                           start_peers, was_removed)

__all__ = ["MEMBERS_NAME", "MembershipError", "load_members", "save_members", "start_peers",
           "was_removed", "Changed", "Members", "change_membership"]

log = logging.getLogger("beanraft.membership")

REQUEST, DONE, PENDING = "br_member_req", "br_member_done", "br_member_pending"
OWN_TYPES = frozenset((PENDING, standing.REMOVED_MESSAGE))  # not the forwarder's
DEFAULT_TIMEOUT_S = 30.0
HEARD_WITHIN_S = 2.0  # a follower counts as reachable when it answered the leader this recently
ADD, REMOVE = "add", "remove"
CHECK = "check"  # the checks of a removal of the leader, before it hands its leadership over

# Why a change did not happen (MembershipError.code); docs/reference/http.md lists them.
NO_LEADER = forwarding.NO_LEADER
BUSY = forwarding.BUSY
ALREADY_MEMBER = "already_member"
NOT_MEMBER = "not_member"
NO_MAJORITY = "no_majority"
NO_SECRET = "no_secret"
DENIED = "denied"
TIMEOUT = forwarding.TIMEOUT
TRANSFER_FAILED = "transfer_failed"
NOT_RUNNING = "not_running"
REACH_TIMEOUT_S = 3.0
CATCH_UP_ENTRIES = 64  # a learner this close to the commit index is added
PENDING_EVERY_S = 0.5  # how often the leader tells its followers what is pending
PENDING_FRESH_S = 2.0  # a follower shows what the leader said for this long
TAKE_OVER_WITHIN_S = 15.0  # a new leader takes over an addition it heard of this recently
LEARNING, ADDING, REMOVING = "catching up as a learner", "adding", "removing"


@dataclass(frozen=True)
class Changed:
    action: str
    address: str
    members: tuple[str, ...]
    elapsed_s: float
    committed: bool = False  # the leader answers after the change committed (own_removal.py)


def majority(size: int) -> int:
    return size // 2 + 1


# -- the event loop's entry point ------------------------------------------------------------


async def change_membership(raft, action: str, address: str, force: bool = False,
                            timeout_s: float = DEFAULT_TIMEOUT_S) -> Changed:
    """Add or remove ``address`` (a Raft HOST:PORT); ask on any node.

    Removing the leader first hands the leadership to another member (``transfer.py``).
    """
    if action == ADD and not force:
        await _check_listening(address)
    if action == REMOVE and raft.status.leader == address:
        # Refused now if it would be refused after the handover (busy, no majority left).
        await raft.members.request(CHECK, address, force, timeout_s)
        try:
            moved = await transfer.transfer_leadership(raft, None, min(timeout_s, 10.0))
        except transfer.TransferError as exc:
            raise MembershipError(TRANSFER_FAILED, f"{address} leads the cluster and the "
                                  f"leadership could not be handed over first: {exc}") from None
        log.info("leadership moved from %s to %s before its removal", address, moved.leader)
        # The node we ask learns the new leader in a heartbeat or two.
        deadline = time.monotonic() + timeout_s
        while raft.status.leader in (None, address) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    return await raft.members.request(action, address, force, timeout_s)


async def _check_listening(address: str) -> None:
    """Refuse to add a node whose Raft port does not answer: with it counted and silent, a
    cluster of one or two would lose its majority."""
    host, _, port = address.rpartition(":")
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                 REACH_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        raise MembershipError(NOT_RUNNING, f"{address} does not answer ({exc or 'timeout'}): start "
                              "it first with 'beanraft serve --join' (or force it)") from None
    writer.close()


# -- the tick thread's side ------------------------------------------------------------------


@dataclass
class _Run:
    """The change in progress on the leader."""

    action: str
    address: str
    started: float
    until: float
    reply: Callable[[object], None] | None
    phase: str = REMOVING
    committed: bool = False
    log_index: int = 0  # of the addition: the new member must acknowledge this much


class Members:
    """Membership changes and the members file of one node (see the module docstring)."""

    def __init__(self, sync, loop: asyncio.AbstractEventLoop, directory: str | None,
                 joining: bool, shared_secret: bool, on_change: Callable[[int], None],
                 hold_elections: Callable[[bool], None] = lambda hold: None):
        self._sync = sync
        self._loop = loop
        self._directory = directory
        self._joining = joining  # not a member yet: the members file waits for our addition
        state = standing.JOINING if joining else (
            standing.REMOVED if was_removed(directory) else standing.MEMBER)
        self.standing = standing.Standing(sync, state, hold_elections)
        self._told_at = 0.0  # when the leader last told its followers what is pending
        self._shown: dict | None = None  # the leader's pending change as of then
        self._heard: tuple[dict, float, str] | None = None  # the leader's word, when, who
        self.last: dict | None = None  # the outcome of the latest change this node knows of
        self.known_elsewhere: collections.deque = collections.deque(maxlen=4)  # member lists
        self._shared_secret = shared_secret
        self._on_change = on_change  # called with the new number of members (and joined=True)
        self._forward = Forwarder(sync, loop, request_type=REQUEST, done_type=DONE,
                                  error=MembershipError, begin=self._begin, encode=_encode,
                                  parse=_parse, to_wire=_to_wire, from_wire=_from_wire,
                                  grace_s=1.0, send=self._send)
        self._lingering: seam.Lingering | None = None  # removed members' last connections
        self._run: _Run | None = None
        self._saved: frozenset[str] | None = None
        me = {str(sync.selfNode)} if joining else set()
        self.members: tuple[str, ...] = tuple(sorted(self._current() - me))

    def install(self) -> None:
        forward = self._forward

        def on_message(node, message):
            if message.get("type") in OWN_TYPES:
                self._on_own(node, message)
            else:
                forward.on_message(node, message, time.monotonic())

        route_messages(self._sync, forward.types | OWN_TYPES, on_message)
        self._lingering = seam.watch_membership(
            self._sync, self.standing.before_change, self._after_change)
        self._sync.addOnTickCallback(self.on_tick)

    def _after_change(self, kind: str, address: str, reverse: bool, changed: bool) -> None:
        """pysyncobj appended (or rolled back) a change on a follower: the members file follows
        at once. Left to the next tick, it could lag behind the acknowledgement of the entry,
        and a node killed in between would restart with the list from before the change while
        its log and the leader count it with the new one (two lists, two majorities)."""
        self.standing.after_change(kind, address, reverse, changed)
        if seam.is_leader(self._sync):
            # The leader's hook runs before its entry is in the journal: the next tick writes
            # the file, once the journal holding the entry is synced (``_persist``).
            return
        self._persist()

    def _current(self) -> set[str]:
        return {str(n) for n in self._sync.otherNodes} | {str(self._sync.selfNode)}

    # -- the event loop's side -------------------------------------------------------------

    async def request(self, action: str, address: str, force: bool, timeout_s: float) -> Changed:
        own = action == REMOVE and address == str(self._sync.selfNode)

        def ask():
            return self._forward.ask(
                (action, address, bool(force), float(timeout_s)), float(timeout_s),
                f"no answer from the leader within {timeout_s:g} s"
                + ("" if own else "; see 'beanraft member list'"))

        if own:
            return await own_removal.remove_self(ask, self.standing, address, timeout_s)
        return await ask()

    def _send(self, node, message: dict) -> bool:
        """Tick thread: an answer to ``node``, which may have been cut off as its removal was
        appended (it asked for its own removal) and still be reachable for a moment."""
        if seam.transport(self._sync).send(node, message):
            return True
        return self._lingering is not None and self._lingering.send(node, message)

    # -- the tick --------------------------------------------------------------------------

    def on_tick(self) -> None:
        now = time.monotonic()
        self._lingering.close_due(now)
        while self.known_elsewhere:
            self.standing.know(self.known_elsewhere.popleft())
        self.standing.on_tick()
        self._persist()
        self._forward.on_tick(now)
        if self._run is not None:
            self._advance(now)
        elif self._heard is not None and seam.is_leader(self._sync):
            self._take_over(now)
        if self._run is None:
            self._shown = None
        elif self._shown is None or now - self._told_at >= PENDING_EVERY_S:
            # Built here, read by HTTP: the progress comes from pysyncobj's tick-thread tables.
            self._shown = self._pending_doc(now)
            self._tell_followers(self._shown)
            self._told_at = now

    def _persist(self) -> None:
        current = frozenset(self._current())
        removed = self.standing.state == standing.REMOVED
        if removed:
            current = current - {str(self._sync.selfNode)}
        if current == self._saved:
            return
        if self._joining:
            # A learner hears from the leader too: only the entry that adds it makes it a member.
            if self.standing.state != standing.MEMBER:
                return
            self._joining = False
            log.info("this node is now a member of the cluster")
            self._on_change(len(current), True)
        changed = self._saved is not None
        self._saved = current
        self.members = tuple(sorted(current))
        if changed:
            log.info("members are now %s", ", ".join(self.members))
        self._on_change(len(current))
        if self._directory is None:
            return
        try:
            seam.journal(self._sync).sync()  # the entry that changed it is on disk first
            save_members(self._directory, current, removed=removed)
        except OSError as exc:
            self._saved = None  # try again next tick
            log.error("cannot write %s: %s", MEMBERS_NAME, exc)

    def _reachable(self, now: float) -> set[str]:
        """The members the leader heard from lately, itself included."""
        answered = seam.last_response_times(self._sync)
        heard = {str(node) for node, at in answered.items() if now - at <= HEARD_WITHIN_S}
        return (heard & self._current()) | {str(self._sync.selfNode)}

    def _begin(self, reply, args: tuple, now: float, requester: str | None) -> None:
        """On the leader: refuse at once what cannot work, else propose the change."""
        action, address, force, timeout_s = args
        members = self._current()
        me = str(self._sync.selfNode)
        run = self._run
        if run is not None:
            # Not even --force replaces a change whose entry is in the log but not committed:
            # two uncommitted changes could leave member lists whose majorities do not overlap
            # (pysyncobj does not check it: its own guard's index is never set).
            in_log = run.phase != LEARNING and not run.committed
            if not force or run.reply is not None or in_log:
                reply(MembershipError(BUSY, f"a membership change is in progress ({self._doing()});"
                                      + (" its entry is not committed yet, which --force cannot "
                                         "skip;" if force and in_log else "")
                                      + " wait for it to finish, then ask again"))
                return
            log.warning("membership: forced past the pending addition of %s", run.address)
            self._finish(MembershipError(BUSY, "a forced change replaced it"))
        reachable = self._reachable(now)
        if action == ADD:
            if address in members:
                reply(MembershipError(ALREADY_MEMBER, f"{address} is already a member"))
                return
            if not self._shared_secret:
                reply(MembershipError(NO_SECRET, "this node runs alone with a secret of its own: "
                                      "restart it with --raft and --cluster-secret-file to grow"))
                return
            need = majority(len(members) + 1)
            if not force and len(reachable) + 1 < need:
                reply(MembershipError(NO_MAJORITY, f"with {address} the cluster needs {need} of "
                                      f"{len(members) + 1} members, and the leader hears from "
                                      f"{len(reachable)}; bring members back first "
                                      "(or force it)"))
                return
            seam.add_learner(self._sync, address)
        else:
            if address not in members:
                reply(MembershipError(NOT_MEMBER, f"{address} is not a member (members: "
                                      f"{', '.join(sorted(members))})"))
                return
            if address == me and action != CHECK:
                reply(MembershipError(NO_LEADER, f"{address} leads the cluster: ask again, the "
                                      "leadership moves first"))
                return
            left = len(reachable - {address})
            need = majority(len(members) - 1)
            if not force and left < need:
                reply(MembershipError(NO_MAJORITY, f"without {address} the cluster needs {need} "
                                      f"of {len(members) - 1} members and the leader hears "
                                      f"from {left}: it could not commit (force it to remove "
                                      "anyway)"))
                return
            if action == CHECK:
                reply(Changed(action=action, address=address, members=tuple(sorted(members)),
                              elapsed_s=0.0))
                return
            # A member removing itself is answered once the removal committed too: the
            # connection that pysyncobj closes as it appends the removal lingers a moment for
            # it (``_send``). (An earlier version answered it first, before proposing.)
            self._sync.removeNodeFromCluster(address, self._on_committed)
        self._run = _Run(action=action, address=address, started=now, until=now + timeout_s,
                         reply=reply, phase=LEARNING if action == ADD else REMOVING)
        if action == ADD:
            log.info("membership: %s catches up as a learner before its addition is proposed",
                     address)
        else:
            log.info("membership: %s %s proposed", action, address)

    def _doing(self) -> str:
        run = self._run
        what = f"{'adding' if run.action == ADD else 'removing'} {run.address}"
        if run.phase == LEARNING:
            match, _answered = seam.learner_progress(self._sync, run.address)
            what += f", catching up: {match} of {self._sync.raftCommitIndex} entries"
        elif run.committed and run.action == ADD:
            match = self._match(run.address)
            what += f", catching up: {match} of {run.log_index} entries"
        return what

    def _match(self, address: str) -> int:
        """How much of the log ``address`` has acknowledged to this leader."""
        if address == str(self._sync.selfNode):
            # The new member won an election while its addition was pending, and took the
            # addition over: it has its own log, and nobody else's acknowledgement to wait for
            # but the majority's that commits the entry.
            return self._sync.raftCommitIndex
        raw = self._sync.getStatus()
        return int(raw.get("match_idx_server_" + address, 0) or 0)

    def _on_committed(self, _result, err) -> None:
        run = self._run
        if run is None:
            return
        if err == FAIL_REASON.REQUEST_DENIED and run.phase == ADDING \
                and run.address not in self._current() and seam.is_leader(self._sync):
            # Refused by pysyncobj until this leader's first entry or the previous change is
            # committed: the node learns on, and the addition is proposed again.
            seam.add_learner(self._sync, run.address)
            run.phase = LEARNING
            return
        if err != FAIL_REASON.SUCCESS:
            self._finish(MembershipError(DENIED, f"the leader could not commit the change "
                                         f"(pysyncobj reason {err}): it was just elected or "
                                         "another change is being committed; ask again"))
            return
        run.committed = True
        run.log_index = max(run.log_index, self._sync.raftCommitIndex)
        log.info("membership: %s %s committed at index %d", run.action, run.address,
                 run.log_index)
        if run.action == REMOVE:
            self._finish(None)

    def _advance(self, now: float) -> None:
        run = self._run
        if not seam.is_leader(self._sync):
            self._finish(self._lost_role(run))
            return
        if run.phase == LEARNING:
            self._learn(run, now)
            return
        if run.committed and run.action == ADD and self._match(run.address) >= run.log_index:
            log.info("membership: %s caught up (%d entries) in %.1f s", run.address,
                     run.log_index, now - run.started)
            self._finish(None)
            return
        if now > run.until and run.reply is not None:
            reply, run.reply = run.reply, None
            reply(MembershipError(TIMEOUT, f"not done within {run.until - run.started:.0f} s: "
                                  f"{self._doing()}; the change stays pending until then"))

    def _lost_role(self, run: _Run) -> MembershipError:
        """What the asker is answered when this leader lost its role during ``run``: ``no_leader``
        only while nothing is in the log (a learner catching up); once the change was proposed
        the next leader may have its entry or not, and commit it or not, so ``timeout``."""
        what = self._doing()
        if run.action == REMOVE:
            return MembershipError(TIMEOUT, f"the leader lost its role after proposing the change "
                                   f"({what}), which the next leader may or may not commit; see "
                                   "'beanraft member list' once there is a leader")
        if run.phase == LEARNING:
            return MembershipError(NO_LEADER, f"the leader lost its role during the change ({what};"
                                   " the members are unchanged and the next leader takes the "
                                   "addition over); see 'beanraft member list'")
        if run.committed:
            return MembershipError(TIMEOUT, f"the leader lost its role after the addition of "
                                   f"{run.address} committed, before the new member acknowledged "
                                   f"it ({what}): it is a member, and catches up from the next "
                                   "leader; see 'beanraft member list' once there is a leader")
        # Appended, or about to be (pysyncobj appends at its next tick, or hands the entry to a
        # leader it has heard of): the next leader may have it or not, and commit it or not.
        return MembershipError(TIMEOUT, f"the outcome is unknown: the leader lost its role after "
                               f"proposing the addition ({what}), which the next leader may or "
                               "may not commit, or may take over. Check on another member: once "
                               "'beanraft member list --http <its HTTP address>' shows a leader "
                               f"and no pending change, it names {run.address} if the addition "
                               "committed; if it does not, ask again")

    def _learn(self, run: _Run, now: float) -> None:
        """The learner phase of an addition: propose it once the learner has caught up."""
        sync = self._sync
        match, answered = seam.learner_progress(sync, run.address)
        commit = sync.raftCommitIndex
        if answered and match + CATCH_UP_ENTRIES >= commit:
            log.info("membership: learner %s caught up (%d of %d entries) in %.1f s: proposing "
                     "its addition", run.address, match, commit, now - run.started)
            seam.promote_learner(sync, run.address)
            run.phase = ADDING
            run.log_index = seam.journal(sync)[-1][1] + 1  # the index the addition will take
            sync.addNodeToCluster(run.address, self._on_committed)
        elif now > run.until:
            self._finish(MembershipError(TIMEOUT, f"{run.address} did not catch up within "
                                         f"{run.until - run.started:.0f} s ({match} of {commit} "
                                         "entries): the addition is abandoned and the members "
                                         "are unchanged"))

    def _take_over(self, now: float) -> None:
        """Newly elected: continue the addition the previous leader said was pending."""
        doc, heard_at, leader = self._heard
        self._heard = None
        left_s = float(doc.get("left_s") or 0.0) - (now - heard_at)
        address = doc.get("address")
        if doc.get("action") != ADD or not isinstance(address, str) \
                or now - heard_at > TAKE_OVER_WITHIN_S:
            return
        if left_s <= 0:
            self._record(ADD, address, f"abandoned: the leader {leader} lost its role and no time"
                         " was left", tell=True)
            return
        log.info("membership: taking over the addition of %s from the previous leader %s "
                 "(%.1f s left)", address, leader, left_s)
        if address in self._current():
            # Its entry survived the change of leader: wait for the new member to acknowledge it.
            self._run = _Run(action=ADD, address=address, started=now, until=now + left_s,
                             reply=None, phase=ADDING, committed=True,
                             log_index=seam.journal(self._sync)[-1][1])
        else:
            seam.add_learner(self._sync, address)
            self._run = _Run(action=ADD, address=address, started=now, until=now + left_s,
                             reply=None, phase=LEARNING)

    def _pending_doc(self, now: float) -> dict:
        run = self._run
        return {"action": run.action, "address": run.address, "phase": run.phase,
                "doing": self._doing(), "left_s": round(max(0.0, run.until - now), 3)}

    def _tell_followers(self, doc: dict) -> None:
        tcp = seam.transport(self._sync)
        for node in self._sync.otherNodes:
            tcp.send(node, {"type": PENDING, **doc})

    def _record(self, action: str, address: str, outcome: str, tell: bool) -> None:
        self.last = {"action": action, "address": address, "outcome": outcome}
        if tell and seam.is_leader(self._sync):
            self._tell_followers({"last": self.last})

    def _finish(self, error: MembershipError | None) -> None:
        run, self._run = self._run, None
        if run.action == ADD and run.address not in self._current() \
                and run.address != str(self._sync.selfNode):
            seam.drop_learner(self._sync, run.address)  # never added: no more entries for it
        self._record(run.action, run.address, "done" if error is None else
                     f"failed ({error.code}): {error}", tell=True)
        if error is not None:
            log.warning("membership: %s %s failed: %s", run.action, run.address, error)
            outcome = error
        else:
            outcome = Changed(action=run.action, address=run.address,
                              members=tuple(sorted(self._current())),
                              elapsed_s=round(time.monotonic() - run.started, 3), committed=True)
        if run.reply is not None:
            run.reply(outcome)

    @property
    def forwarder(self) -> Forwarder:
        """How a change asked here reaches the leader (its bound: ``max_waiting``)."""
        return self._forward

    def _on_own(self, node, message: dict) -> None:
        if message.get("type") == standing.REMOVED_MESSAGE:
            self.standing.on_message(node, message)
        else:
            self._on_pending(node, message)

    def _on_pending(self, node, message: dict) -> None:
        """A follower: what the leader says is pending (or how the latest change ended)."""
        if seam.leader_node(self._sync) != node or seam.is_leader(self._sync):
            return
        if isinstance(message.get("last"), dict):
            self.last, self._heard = message["last"], None
        else:
            self._heard = (message, time.monotonic(), str(node))

    def pending(self) -> dict | None:
        """The change in progress, for GET /admin/members: this node's own if it leads, else
        what the leader said lately."""
        shown, heard = self._shown, self._heard
        if shown is not None:
            return {**shown, "leader": True}
        if heard is not None and time.monotonic() - heard[1] <= PENDING_FRESH_S:
            doc = heard[0]
            return {"action": doc.get("action"), "address": doc.get("address"),
                    "phase": doc.get("phase"), "doing": doc.get("doing"), "leader": False}
        return None


# -- a request and its outcome on the wire (br_member_req, br_member_done) ------------------


def _encode(args: tuple) -> dict:
    action, address, force, timeout_s = args
    return {"action": action, "address": address, "force": force, "timeout_s": timeout_s}


def _parse(message: dict) -> tuple | None:
    action, address = message.get("action"), message.get("address")
    force, timeout_s = message.get("force"), message.get("timeout_s")
    if action not in (ADD, REMOVE, CHECK) or not isinstance(address, str) \
            or not isinstance(force, bool) or not isinstance(timeout_s, float):
        return None
    return action, address, force, timeout_s


def _to_wire(done: Changed) -> dict:
    return {"action": done.action, "address": done.address, "members": list(done.members),
            "elapsed_s": done.elapsed_s, "committed": done.committed}


def _from_wire(message: dict) -> Changed:
    return Changed(action=str(message.get("action")), address=str(message.get("address")),
                   members=tuple(message.get("members") or ()),
                   elapsed_s=float(message.get("elapsed_s", 0.0)),
                   committed=message.get("committed") is True)  # absent from earlier versions
