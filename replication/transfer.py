"""Leadership transfer: hand the leader role to an up-to-date follower (Raft's TimeoutNow).

Theory of operation.
* pysyncobj 0.3.17's public ``transferLeadership(node, callback)`` sends TimeoutNow to a
  follower whose match index equals the leader's last log index, and refuses any other. Under
  load the leader's log grows on every tick, so a follower is hardly ever exactly caught up.
  So the leader first **holds** new commands: its own proposals (``propose``) and the commands
  its followers forward to it (``apply_command`` peer messages). Once the target has
  acknowledged the whole log, the leader sends TimeoutNow; the target starts an election at
  once and wins it (no log is longer than its own), and the old leader steps down when the
  target's vote request reaches it.
* The target can still lose: a member added moments ago may not be connected to the others
  yet, so its vote requests reach the old leader alone, and a later election puts the old
  leader back. Once this node leads again at a term above the one it asked at, the transfer
  goes on: it picks a caught-up follower again, one that has not lost an election in this
  transfer first (when no target was named), until its deadline.
* What is held is bounded in count: at most ``MAX_HELD_PROPOSALS`` of its own proposals and
  ``MAX_HELD_FORWARDS`` forwarded commands. Past a bound a command is refused at once with
  pysyncobj's own answer to a full queue (``QUEUE_FULL``): its group commit proposes it again a
  few ms later (after the transfer, to the new leader), as after any refused try.
* When a new leader is known, or the attempt failed, the held commands are let go: a node that
  is a follower now forwards its own to the new leader, and answers the forwarded ones
  NOT_LEADER, so their nodes propose them again to the new leader. Every command is idempotent
  (batcher.py), so a command proposed twice is applied once.
* A transfer asked on a follower is sent to the leader over the sealed peer connection
  (``br_xfer_req``), which answers ``br_xfer_done`` (``forwarding.py``, shared with membership
  changes). A leader runs one transfer at a time.
* Everything that touches pysyncobj runs in the tick thread (``on_tick``, ``on_message``).
  ``propose`` is called on the event loop; ``_gate`` makes "hold or propose" and "stop holding,
  then propose what was held" exclusive, so nothing is left behind.

``transfer_leadership(raft, to, timeout_s)`` is the one entry point for the rest of BeanRaft
(the HTTP endpoint, a leader's SIGTERM, the removal of a leader from the membership).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pysyncobj.config import FAIL_REASON

from . import seam
from . import forwarding
from .forwarding import Forwarder, route_messages

log = logging.getLogger("beanraft.transfer")

REQUEST, DONE = "br_xfer_req", "br_xfer_done"
DEFAULT_TIMEOUT_S = 5.0
CATCH_UP_SHARE = 0.5  # of the timeout, at most, for the target to acknowledge the whole log
MAX_HELD_FORWARDS = 100_000  # forwarded commands held during a transfer (pysyncobj's queue size)
# Own proposals held during a transfer. This node's group commit has at most two batches (each at
# most 1 MiB of commands) in flight and tries each again no sooner than every 2 s, so the longest
# transfer the endpoint allows (60 s) holds about 60 of them; the bound is twice that.
MAX_HELD_PROPOSALS = 128

# Why a transfer did not happen (TransferError.code); docs/reference/http.md lists them.
NO_LEADER = forwarding.NO_LEADER
UNKNOWN_TARGET = "unknown_target"
NOT_CAUGHT_UP = "not_caught_up"
BUSY = forwarding.BUSY
TIMEOUT = forwarding.TIMEOUT


class TransferError(forwarding.Refused):
    """The leadership did not move; ``code`` says why (one of the constants above)."""


@dataclass(frozen=True)
class Transferred:
    """The leadership moved (or was already where it was asked to be)."""

    previous: str
    leader: str
    elapsed_s: float


async def transfer_leadership(raft, to: str | None = None,
                              timeout_s: float = DEFAULT_TIMEOUT_S) -> Transferred:
    """Move the leadership of ``raft``'s cluster to ``to`` (a Raft address), or to the most
    caught-up connected follower when ``to`` is None; ask on any node.

    Returns once a new leader is known; raises :class:`TransferError` otherwise (no leader,
    unknown target, target not caught up, another transfer running, timeout).
    """
    return await raft.transfers.request(to, timeout_s)


@dataclass
class _Run:
    """One transfer in progress on the leader."""

    reply: Callable[[object], None]  # called in the tick thread with Transferred or TransferError
    to: str | None
    started: float
    catch_up_until: float
    until: float
    sent_to: str | None = None  # the target TimeoutNow went to
    sent_term: int = 0  # this node's term when it sent TimeoutNow
    lost: set = field(default_factory=set)  # targets that lost their election in this transfer


class Transfers:
    """The tick-thread side of leadership transfers of one node (see the module docstring)."""

    def __init__(self, sync, loop: asyncio.AbstractEventLoop):
        self._sync = sync
        # A little longer than the leader's own deadline, so its answer normally arrives.
        self._forward = Forwarder(sync, loop, request_type=REQUEST, done_type=DONE,
                                  error=TransferError, begin=self._begin, encode=_encode,
                                  parse=_parse, to_wire=_to_wire, from_wire=_from_wire,
                                  grace_s=0.5)
        self._run: _Run | None = None
        self._gate = threading.Lock()
        self._holding = False
        self._held: list[tuple[bytes, Callable]] = []  # our own proposals
        self._held_forwards: list[tuple[object, dict]] = []  # (follower, apply_command message)
        self.max_held_proposals = MAX_HELD_PROPOSALS
        self.max_held_forwards = MAX_HELD_FORWARDS
        self._refused = 0  # commands refused past a bound during the transfer that runs
        self._handler: Callable | None = None

    @property
    def forwarder(self) -> Forwarder:
        """How a transfer asked here reaches the leader (its bound: ``max_waiting``)."""
        return self._forward

    @property
    def holding(self) -> bool:
        """True while a transfer runs on this node and new commands are held."""
        return self._holding

    def install(self) -> None:
        """Route our messages here and hold forwarded commands while a transfer runs."""
        forward = self._forward
        self._handler = route_messages(
            self._sync, forward.types,
            lambda node, message: forward.on_message(node, message, time.monotonic()),
            intercept=self._hold_forward)
        self._sync.addOnTickCallback(self.on_tick)

    def _hold_forward(self, node, message: dict) -> bool:
        """Keep a command a follower forwards while a transfer runs, or refuse it past the bound
        (True: taken care of here)."""
        if message.get("type") != "apply_command" or not self._holding:
            return False
        if len(self._held_forwards) < self.max_held_forwards:
            self._held_forwards.append((node, message))
            return True
        with self._gate:
            self._note_refused("forwarded commands", self.max_held_forwards)
        if "request_id" in message:  # the follower waits for an answer: pysyncobj's "queue full"
            seam.transport(self._sync).send(node, {"type": "apply_command_response",
                                                   "request_id": message["request_id"],
                                                   "error": FAIL_REASON.QUEUE_FULL})
        return True

    def _note_refused(self, what: str, bound: int) -> None:
        """Count a command refused past a bound (under ``_gate``); the first one is logged."""
        self._refused += 1
        if self._refused == 1:
            log.warning("leadership transfer: %d %s held, the most it holds; refusing more "
                        "until the transfer ends (they are proposed again)", bound, what)

    # -- the event loop's side -----------------------------------------------------------

    def propose(self, command: bytes, callback: Callable) -> None:
        """Propose ``command`` now, or keep it until the transfer that runs ends."""
        with self._gate:
            if not self._holding:
                seam.propose(self._sync, command, callback)
                return
            if len(self._held) < self.max_held_proposals:
                self._held.append((command, callback))
                return
            self._note_refused("own proposals", self.max_held_proposals)
        callback(None, FAIL_REASON.QUEUE_FULL)  # as pysyncobj answers when its queue is full

    async def request(self, to: str | None, timeout_s: float) -> Transferred:
        return await self._forward.ask((to, timeout_s), timeout_s,
                                       f"no answer from the leader within {timeout_s:g} s")

    # -- the tick ------------------------------------------------------------------------

    def on_tick(self) -> None:
        now = time.monotonic()
        self._forward.on_tick(now)
        if self._run is not None:
            self._advance(now)

    def _begin(self, reply, args: tuple, now: float, _requester) -> None:
        """On the leader: refuse at once what cannot work, else start holding commands."""
        to, timeout_s = args
        me = str(self._sync.selfNode)
        if self._run is not None:
            reply(TransferError(BUSY, "a leadership transfer is already in progress"))
            return
        members = [str(n) for n in self._sync.otherNodes]
        if to is not None and to != me and to not in members:
            reply(TransferError(UNKNOWN_TARGET, f"{to} is not a member of the cluster "
                                f"(members: {', '.join(sorted(members + [me]))})"))
            return
        if to == me:
            reply(Transferred(previous=me, leader=me, elapsed_s=0.0))
            return
        if not members:
            reply(TransferError(NOT_CAUGHT_UP, "no other member to hand the leadership to"))
            return
        timeout_s = max(0.1, timeout_s)
        self._run = _Run(reply=reply, to=to, started=now,
                         catch_up_until=now + timeout_s * CATCH_UP_SHARE, until=now + timeout_s)
        with self._gate:
            self._holding = True
        # Checked from the next tick on: by then pysyncobj has appended what was queued before
        # the hold, so "caught up" means caught up with everything that will be in this log.
        log.info("leadership transfer to %s: holding new commands until it is caught up",
                 to or "the most caught-up follower")

    def _advance(self, now: float) -> None:
        run, sync = self._run, self._sync
        if run.sent_to is None:
            if not seam.is_leader(sync):
                self._finish(TransferError(NO_LEADER, "this node lost the leadership meanwhile"))
                return
            last, peers = self._progress()
            if not any(connected for connected, _match in peers.values()):
                # Nobody to hand over to (a whole cluster stopping): say so now, not at the deadline.
                self._finish(TransferError(NOT_CAUGHT_UP, "no other member is connected"))
                return
            target = self._caught_up(run.to, last, peers, run.lost)
            if target is not None:
                run.sent_to, run.sent_term = str(target), sync.raftCurrentTerm
                sync.transferLeadership(target, self._on_sent)
            elif now > run.catch_up_until:
                self._finish(TransferError(NOT_CAUGHT_UP, self._lag(run.to, now - run.started)))
            return
        leader = seam.leader_node(sync)
        if not seam.is_leader(sync) and leader is not None:
            self._finish(Transferred(previous=str(sync.selfNode), leader=str(leader),
                                     elapsed_s=round(now - run.started, 3)))
        elif seam.is_leader(sync) and sync.raftCurrentTerm > run.sent_term:
            log.info("leadership transfer: %s lost its election and this node leads again "
                     "(term %d); asking again", run.sent_to, sync.raftCurrentTerm)
            run.lost.add(run.sent_to)
            run.sent_to = None  # the next tick picks a caught-up follower again
        elif seam.is_leader(sync) and not self._progress()[1].get(run.sent_to, (False, 0))[0]:
            self._finish(TransferError(TIMEOUT, f"{run.sent_to} was asked to take over and "
                                       "went away before it did"))
        elif now > run.until:
            self._finish(TransferError(TIMEOUT, f"asked {run.sent_to} to take over, but no new "
                                       f"leader was elected within "
                                       f"{run.until - run.started:.1f} s"))

    def _on_sent(self, _result, err) -> None:
        if err != FAIL_REASON.SUCCESS and self._run is not None:
            # Checked just before, so only a race with a change of role lands here.
            self._finish(TransferError(NOT_CAUGHT_UP, f"pysyncobj refused the transfer (reason {err})"))

    def _progress(self) -> tuple[int, dict[str, tuple[bool, int]]]:
        """The leader's last log index and, per follower, (connected, match index)."""
        raw = self._sync.getStatus()
        last = seam.journal(self._sync)[-1][1]
        prefix = "partner_node_status_server_"
        peers = {key[len(prefix):]: (value == 2, raw.get("match_idx_server_" + key[len(prefix):], 0))
                 for key, value in raw.items() if key.startswith(prefix)}
        return last, peers

    def _caught_up(self, to: str | None, last: int, peers: dict, lost: set):
        """A connected follower that holds the whole log (``to``, if named), one that has not
        lost an election in this transfer first; None if there is none."""
        ready = sorted(address for address, (connected, match) in peers.items()
                       if connected and match >= last and (to is None or address == to))
        if not ready:
            return None
        pick = next((address for address in ready if address not in lost), ready[0])
        return next(n for n in self._sync.otherNodes if str(n) == pick)

    def _lag(self, to: str | None, waited_s: float) -> str:
        last, peers = self._progress()
        names = [to] if to is not None else sorted(peers)
        parts = []
        for address in names:
            connected, match = peers.get(address, (False, 0))
            parts.append(f"{address} has {match} of {last}" if connected
                         else f"{address} is not connected")
        return f"no follower caught up within {waited_s:.1f} s: {'; '.join(parts)}"

    def _finish(self, outcome) -> None:
        run, self._run = self._run, None
        with self._gate:
            self._holding = False
            held, self._held = self._held, []
            for command, callback in held:
                seam.propose(self._sync, command, callback)
            refused, self._refused = self._refused, 0
        forwards, self._held_forwards = self._held_forwards, []
        for node, message in forwards:
            self._handler(node, message)
        if isinstance(outcome, TransferError):
            log.warning("leadership transfer failed: %s (%d commands held, released; %d refused)",
                        outcome, len(held) + len(forwards), refused)
        else:
            log.info("leadership transferred to %s in %.3f s (%d commands held, released; %d "
                     "refused)", outcome.leader, outcome.elapsed_s, len(held) + len(forwards),
                     refused)
        run.reply(outcome)


# -- a request and its outcome on the wire (br_xfer_req, br_xfer_done) -----------------------


def _encode(args: tuple) -> dict:
    to, timeout_s = args
    return {"to": to, "timeout_s": float(timeout_s)}


def _parse(message: dict) -> tuple | None:
    to, timeout_s = message.get("to"), message.get("timeout_s")
    if not isinstance(timeout_s, float) or not (to is None or isinstance(to, str)):
        return None
    return to, timeout_s


def _to_wire(done: Transferred) -> dict:
    return {"previous": done.previous, "leader": done.leader, "elapsed_s": done.elapsed_s}


def _from_wire(message: dict) -> Transferred:
    return Transferred(previous=str(message.get("previous")), leader=str(message.get("leader")),
                       elapsed_s=float(message.get("elapsed_s", 0.0)))
