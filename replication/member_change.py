"""The membership change in progress: run by the leader, shown by every node.

Theory of operation.
* ``membership.py`` asks, forwards and answers; the leader's ``Changes.begin`` takes a change
  from there, and everything below runs in the tick thread.
* pysyncobj has no learner role: a new member counts towards the majority from the moment the
  leader appends its addition. So an addition runs in two phases. First the new node is a
  *learner*: the leader replicates to it (snapshot, then log) as pysyncobj replicates to a
  read-only node, without counting it anywhere (``seam.add_learner``). Only once the learner has
  acknowledged the log to within CATCH_UP_ENTRIES of the commit index does the leader append the
  addition; then it waits for the new member to acknowledge that entry, at most until the
  request's deadline (once committed the node is a member either way: ``_end_behind``). A
  learner that does not catch up within the request's timeout is dropped, and the members are
  unchanged.
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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from pysyncobj.config import FAIL_REASON

from . import forwarding, seam
from .members_file import MembershipError

log = logging.getLogger("beanraft.membership")

PENDING = "br_member_pending"
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


def members_now(sync) -> set[str]:
    """The members as pysyncobj counts them on this node, this node included."""
    return {str(n) for n in sync.otherNodes} | {str(sync.selfNode)}


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


class Changes:
    """The change this node runs as the leader, or hears of from its leader (tick thread; HTTP
    reads ``last`` and ``pending()``)."""

    def __init__(self, sync, shared_secret: bool):
        self._sync = sync
        self._shared_secret = shared_secret
        self._run: _Run | None = None
        self._told_at = 0.0  # when the leader last told its followers what is pending
        self._shown: dict | None = None  # the leader's pending change as of then
        self._heard: tuple[dict, float, str] | None = None  # the leader's word, when, who
        self.last: dict | None = None  # the outcome of the latest change this node knows of
        # Why a caught-up learner may not become a member yet, or None (raft.py sets it: a node
        # that has not said it applies the cluster's rules version, rules.py).
        self.refuses: Callable[[str], str | None] = lambda address: None

    def on_tick(self, now: float) -> None:
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

    # -- beginning a change ----------------------------------------------------------------

    def begin(self, reply, args: tuple, now: float, requester: str | None) -> None:
        """On the leader: refuse at once what cannot work, else propose the change."""
        action, address, force, timeout_s = args
        members = members_now(self._sync)
        if self._run is not None and not self._replace(reply, force):
            return
        reachable = self._reachable(now)
        check = self._refuse_addition if action == ADD else self._refuse_removal
        refusal = check(action, address, force, members, reachable)
        if refusal is not None:
            reply(refusal)
            return
        if action == ADD:
            seam.add_learner(self._sync, address)
        elif action == CHECK:
            reply(Changed(action=action, address=address, members=tuple(sorted(members)),
                          elapsed_s=0.0))
            return
        else:
            # A member removing itself is answered once the removal committed too: the
            # connection that pysyncobj closes as it appends the removal lingers a moment for
            # it (``Members._send``). (An earlier version answered it first, before proposing.)
            self._sync.removeNodeFromCluster(address, self._on_committed)
        self._run = _Run(action=action, address=address, started=now, until=now + timeout_s,
                         reply=reply, phase=LEARNING if action == ADD else REMOVING)
        if action == ADD:
            log.info("membership: %s catches up as a learner before its addition is proposed",
                     address)
        else:
            log.info("membership: %s %s proposed", action, address)

    def _replace(self, reply, force: bool) -> bool:
        """A change is pending: refuse the one asked (``busy``), unless it is forced past a
        pending addition that nobody waits for and whose entry is not in the log; True if the
        one asked may go on."""
        run = self._run
        # Not even --force replaces a change whose entry is in the log but not committed:
        # two uncommitted changes could leave member lists whose majorities do not overlap
        # (pysyncobj does not check it: its own guard's index is never set).
        in_log = run.phase != LEARNING and not run.committed
        if not force or run.reply is not None or in_log:
            reply(MembershipError(BUSY, f"a membership change is in progress ({self._doing()});"
                                  + (" its entry is not committed yet, which --force cannot "
                                     "skip;" if force and in_log else "")
                                  + " wait for it to finish, then ask again"))
            return False
        log.warning("membership: forced past the pending addition of %s", run.address)
        self._finish(MembershipError(BUSY, "a forced change replaced it"))
        return True

    def _refuse_addition(self, _action: str, address: str, force: bool, members: set[str],
                         reachable: set[str]) -> MembershipError | None:
        if address in members:
            return MembershipError(ALREADY_MEMBER, f"{address} is already a member")
        if not self._shared_secret:
            return MembershipError(NO_SECRET, "this node runs alone with a secret of its own: "
                                   "restart it with --raft and --cluster-secret-file to grow")
        need = majority(len(members) + 1)
        if not force and len(reachable) + 1 < need:
            return MembershipError(NO_MAJORITY, f"with {address} the cluster needs {need} of "
                                   f"{len(members) + 1} members, and the leader hears from "
                                   f"{len(reachable)}; bring members back first (or force it)")
        return None

    def _refuse_removal(self, action: str, address: str, force: bool, members: set[str],
                        reachable: set[str]) -> MembershipError | None:
        """The refusals of a removal, and of CHECK (a removal of the leader, checked first)."""
        if address not in members:
            return MembershipError(NOT_MEMBER, f"{address} is not a member (members: "
                                   f"{', '.join(sorted(members))})")
        if address == str(self._sync.selfNode) and action != CHECK:
            return MembershipError(NO_LEADER, f"{address} leads the cluster: ask again, the "
                                   "leadership moves first")
        left = len(reachable - {address})
        need = majority(len(members) - 1)
        if not force and left < need:
            return MembershipError(NO_MAJORITY, f"without {address} the cluster needs {need} of "
                                   f"{len(members) - 1} members and the leader hears from "
                                   f"{left}: it could not commit (force it to remove anyway)")
        return None

    def _reachable(self, now: float) -> set[str]:
        """The members the leader heard from lately, itself included."""
        answered = seam.last_response_times(self._sync)
        heard = {str(node) for node, at in answered.items() if now - at <= HEARD_WITHIN_S}
        return (heard & members_now(self._sync)) | {str(self._sync.selfNode)}

    # -- the change in progress ------------------------------------------------------------

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
                and run.address not in members_now(self._sync) and seam.is_leader(self._sync):
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
        if now > run.until and run.committed and run.action == ADD:
            self._end_behind(run)
            return
        if now > run.until and run.reply is not None:
            reply, run.reply = run.reply, None
            reply(MembershipError(TIMEOUT, f"not done within {run.until - run.started:.0f} s: "
                                  f"{self._doing()}; its entry is proposed, not committed "
                                  "yet, and the change stays pending until it commits"))

    def _end_behind(self, run: _Run) -> None:
        """A committed addition whose new member has not acknowledged it by the deadline ends
        there. The node is a member whatever it does (it catches up from the leader whenever
        it answers), and the next change need not wait for a node that may never come."""
        self._run = None
        behind = (f"{run.address} is a member (its addition committed) but had acknowledged "
                  f"{self._match(run.address)} of {run.log_index} entries when the "
                  f"{run.until - run.started:.1f} s ran out; it catches up from the leader when "
                  "it answers")
        log.warning("membership: add %s: %s", run.address, behind)
        self._record(ADD, run.address, f"done, behind: {behind}", tell=True)
        if run.reply is not None:
            run.reply(MembershipError(TIMEOUT, f"not done in time: {behind}"))

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
        refused = self.refuses(run.address) if answered else None
        if answered and match + CATCH_UP_ENTRIES >= commit and refused is None:
            log.info("membership: learner %s caught up (%d of %d entries) in %.1f s: proposing "
                     "its addition", run.address, match, commit, now - run.started)
            seam.promote_learner(sync, run.address)
            run.phase = ADDING
            run.log_index = seam.journal(sync)[-1][1] + 1  # the index the addition will take
            sync.addNodeToCluster(run.address, self._on_committed)
        elif now > run.until:
            why = refused or (f"it did not catch up within {run.until - run.started:.0f} s "
                              f"({match} of {commit} entries)")
            self._finish(MembershipError(TIMEOUT, f"{run.address} was not added: {why}; the "
                                         "addition is abandoned and the members are unchanged"))

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
        if address in members_now(self._sync):
            # Its entry survived the change of leader: wait for the new member to acknowledge it.
            self._run = _Run(action=ADD, address=address, started=now, until=now + left_s,
                             reply=None, phase=ADDING, committed=True,
                             log_index=seam.journal(self._sync)[-1][1])
        else:
            seam.add_learner(self._sync, address)
            self._run = _Run(action=ADD, address=address, started=now, until=now + left_s,
                             reply=None, phase=LEARNING)

    def _finish(self, error: MembershipError | None) -> None:
        run, self._run = self._run, None
        if run.action == ADD and run.address not in members_now(self._sync) \
                and run.address != str(self._sync.selfNode):
            seam.drop_learner(self._sync, run.address)  # never added: no more entries for it
        self._record(run.action, run.address, "done" if error is None else
                     f"failed ({error.code}): {error}", tell=True)
        if error is not None:
            log.warning("membership: %s %s failed: %s", run.action, run.address, error)
            outcome = error
        else:
            outcome = Changed(action=run.action, address=run.address,
                              members=tuple(sorted(members_now(self._sync))),
                              elapsed_s=round(time.monotonic() - run.started, 3), committed=True)
        if run.reply is not None:
            run.reply(outcome)

    # -- what the followers are told, and show ---------------------------------------------

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

    def on_pending(self, node, message: dict) -> None:
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
