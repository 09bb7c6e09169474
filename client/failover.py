"""Failover: which node to try next, the handshake on a new connection, and the replay of what
the lost connection left unanswered.

Theory of operation. A *failover episode* (``Episode``) starts when a connection is lost (or
with the first connection) and ends when a node completes the handshake (or, with no handshake
to send, answers the first command). Addresses are tried in rounds: each round is every address
in random order, those that failed least in this episode first (a frozen node accepts
connections and costs a whole timeout at every try). Between rounds the client waits 50 ms,
doubling up to 1 s, each pause multiplied by a random factor in 0.5-1.5 so that many clients do
not come back in step. The budget (``failover_timeout``) is enforced by the core, which knows
the time.

``Failover`` is the part of ``Core`` that plans what to send on a new connection and how to send
each op after a failover (a mixin: it reads and changes the core's state, listed below). The
handshake is sent pipelined: ``auth <principal> <token>`` when the client was given ``auth=``
(on every connection, so a failover re-authenticates with the next node), then ``session-id``
(first connection) or ``session-resume <id>`` (afterwards; never to a server that answered
UNKNOWN_COMMAND to it: plain beanstalkd), then ``use`` and ``watch``/``ignore`` to restore the
tubes the application chose. Any unexpected reply fails the connection like a lost one. A node
that answers part of the handshake and then fails (AUTH_REQUIRED, ``auth`` answered by a node
without a leader) does not end the episode, so retrying it cannot run past ``failover_timeout``.

After a successful handshake each lost op is sent by its replay rule (``ops.py``), using the
job list of the resumed session; jobs that list holds which the client did not know of (their
RESERVED reply was lost) are handed to the next ``reserve``, fetched with ``peek``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from typing import Any

from beanraft import protocol as p
from beanraft.protocol.client import ClientConnection, reserve_bytes

from . import wire
from .addresses import Address, describe
from .bookkeeping import HeldJobs, cancelled_error
from .errors import UnavailableError
from .ops import DEFAULT_TUBE, Op

log = logging.getLogger("beanraft.client")

BACKOFF_FIRST_S = 0.05  # the pause after the first round of addresses
BACKOFF_MAX_S = 1.0  # the longest pause between rounds

# The purposes (see core._Sent) of the requests of the handshake.
HANDSHAKE_PURPOSES = frozenset({"auth", "session-id", "resume", "restore"})


class Episode:
    """When the failover began, what was tried, and the order of the current round."""

    def __init__(self, now: float):
        self.started = now
        self.tried: dict[str, tuple[int, str]] = {}  # address -> (attempts, last reason)
        self.round: list[Address] = []
        self.rounds = 0

    def next_attempt(self, addresses: list[Address], rng: random.Random) -> tuple[Address, float]:
        """The next address and the pause before trying it."""
        delay = 0.0
        if not self.round:
            if self.rounds:
                backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.rounds - 1))
                delay = backoff * rng.uniform(0.5, 1.5)
            self.rounds += 1
            order = addresses[:]
            rng.shuffle(order)
            order.sort(key=self.failures)  # stable: random among equals
            self.round = order
        return self.round.pop(0), delay

    def failures(self, address: Address) -> int:
        return self.tried.get(describe(address), (0, ""))[0]

    def note(self, address: Address, reason: str) -> None:
        count, _ = self.tried.get(describe(address), (0, ""))
        self.tried[describe(address)] = (count + 1, reason)

    def summary(self) -> str:
        if not self.tried:
            return "nothing could be tried"
        return "; ".join(f"{addr}: {reason} ({count}x)"
                         for addr, (count, reason) in self.tried.items())


class Failover:
    """The part of ``Core`` that sends the handshake, reads its replies and replays lost ops."""

    # The core's state this part reads and changes (``Core.__init__`` sets it).
    auth: tuple[str, str] | None
    extensions: bool | None
    session_id: str | None
    used: str
    watched: list[str]
    held: HeldJobs
    orphans: deque[int]
    pending: deque[Op]
    lost: set[Op]
    sent: deque
    address: Address | None
    conn: ClientConnection | None
    reserve_slice_s: int
    _resumed: set[int] | None
    _said_plain: bool
    _lost_from: str

    def _send_handshake(self, now: float) -> None:
        """Queue the handshake of a new connection (none at all: READY at once)."""
        if self.auth is not None:
            self._send(p.Auth(*self.auth), "auth", None, now)
        if self.extensions is not False:
            if self.session_id is None:
                self._send(wire.session_id(), "session-id", None, now)
            else:
                self._send(wire.session_resume(self.session_id), "resume", None, now)
        if self.used != DEFAULT_TUBE:
            self._send(p.Use(self.used), "restore", None, now)
        for tube in self.watched:
            if tube != DEFAULT_TUBE:
                self._send(p.Watch(tube), "restore", None, now)
        if DEFAULT_TUBE not in self.watched:
            self._send(p.Ignore(DEFAULT_TUBE), "restore", None, now)

    def _send_op(self, op: Op, now: float) -> None:
        """Send ``op``: as it is, or, when it was lost or can be served from the resumed
        session, by its replay rule (``ops.py``). Every op is sent through here."""
        lost = bool(self.lost) and op in self.lost
        if lost:
            self.lost.discard(op)
            if self._replay_settled(op):
                return
            if op.replay == "once":
                op.finish(error=UnavailableError(
                    f"the connection to {self._lost_from} was lost after {op.request.name} "
                    "was sent: the outcome is unknown (it is not sent again)"))
                return
        if op.replay == "reserve-job" and self._holds_unknown(op.job_id):
            # Its RESERVED was lost, on this failover or an earlier one: the resumed session
            # holds the job, which reserve-job would answer NOT_FOUND. Fetch it like an orphan.
            if op.job_id in self.orphans:  # (_resume left it out; never hand it out twice)
                self.orphans.remove(op.job_id)
            self._send(p.Peek(op.job_id), "orphan", op, now)
            return
        if op.replay == "reserve" and self.orphans:
            self._send(p.Peek(self.orphans.popleft()), "orphan", op, now)
            return
        if op.replay == "put":
            if self.extensions:
                request = wire.put_key(op.key, op.request)
            elif lost:
                op.finish(error=UnavailableError(
                    f"the connection to {self._lost_from} was lost after put was sent, and "
                    f"{describe(self.address)} has no idempotent put: the outcome is unknown"))
                return
            else:
                request = op.request
            self._send(request, "op", op, now)
        elif op.replay == "reserve":
            request, block_s = self._reserve_request(op, now, lost)
            self._send(request, "op", op, now, block_s)
        else:
            self._send(op.request, "op", op, now)

    def _replay_settled(self, op: Op) -> bool:
        """Apply the replay rule of a lost op from the resumed session's job list.

        Returns True when the op is complete without being sent again. The rule is read, never
        changed: an op may be lost on any number of connections in a row, and each failover
        must apply the rule it was built with (``ops.py``)."""
        if self._resumed is None:
            return False
        if op.replay == "job" and op.job_id not in self._resumed:
            # The session no longer holds the job: our first send committed (or its TTR ran
            # out meanwhile, in which case it runs again elsewhere: at-least-once).
            self.held.discard(op.job_id)
            op.finish(result=None)
            return True
        return False

    def _holds_unknown(self, job_id: int) -> bool:
        """The session just resumed holds ``job_id``, the application does not know it, and
        no other reserve_job fetches it already (of two, one gets it, as on the wire)."""
        if self._resumed is None or job_id not in self._resumed or job_id in self.held:
            return False
        return not any(purpose == "orphan" and other.job_id == job_id
                       for purpose, other, _ in self.sent)

    def _reserve_request(self, op: Op, now: float, lost: bool) -> tuple[bytes, float]:
        """A plain reserve on plain beanstalkd; slices of at most reserve_slice_s otherwise.
        Returns the request's bytes and how long the server may keep us waiting for it."""
        if not lost and not self.extensions:
            return op.request, math.inf if op.timeout_s is None else float(op.timeout_s)
        if op.deadline is None:
            remaining = math.inf
        else:
            remaining = max(0, math.ceil(op.deadline - now - 1e-9))
        if self.extensions:
            seconds = int(min(remaining, self.reserve_slice_s))
        elif math.isinf(remaining):
            return reserve_bytes(None), math.inf
        else:
            seconds = int(remaining)
        return reserve_bytes(seconds), float(seconds)

    def _on_orphan_reply(self, op: Op, reply: Any, now: float) -> None:
        if op.cancelled:
            if isinstance(reply, p.Found):
                self._give_back(op, reply.job_id, now)
            else:
                op.finish(error=cancelled_error())
        elif isinstance(reply, p.Found):
            self.held.add(reply.job_id)
            self._finish_with(op, reply)
        elif op.kind == "reserve_job":  # gone meanwhile: let the server say so
            self._send(op.request, "op", op, now)
        else:  # the job is gone meanwhile: reserve as usual
            self._send_op(op, now)

    def _on_handshake_reply(self, purpose: str, reply: Any, now: float) -> None:
        if isinstance(reply, p.AuthRequired):
            # Another node may not require it: fail over as usual, within failover_timeout.
            self.connection_lost("the node requires authentication (AUTH_REQUIRED): give the "
                                 "client auth=(principal, token)", now)
        elif purpose == "auth":
            if not isinstance(reply, p.Authenticated):
                # Another node may take it (its auth file may be newer): fail over as usual.
                self.connection_lost(f"authentication as {self.auth[0]} refused "
                                     f"({p.encode(reply).strip().decode()})", now)
        elif purpose == "session-id":
            if isinstance(reply, p.UnknownCommand):
                self._plain_server()
            elif wire.is_session(reply):
                self.extensions, self.session_id = True, wire.session_of(reply)
            else:
                self.connection_lost(f"unexpected reply to session-id: {reply!r}", now)
        elif purpose == "resume":
            if wire.is_resumed(reply):
                self._resume(wire.resumed_jobs(reply), now)
            elif isinstance(reply, p.NotFound):
                log.warning("session %s expired before it could be resumed on %s: the jobs it "
                            "held are released", self.session_id, describe(self.address))
                self.session_id, self._resumed = None, None
                self.held.clear()
                self.orphans.clear()
                self._send(wire.session_id(), "session-id", None, now)
            elif isinstance(reply, p.UnknownCommand):
                self._plain_server()
            else:
                self.connection_lost(f"unexpected reply to session-resume: {reply!r}", now)
        elif not isinstance(reply, (p.Using, p.Watching)):
            self.connection_lost(f"could not restore tubes: {reply!r}", now)

    def _plain_server(self) -> None:
        self.extensions, self.session_id = False, None
        if not self._said_plain:
            self._said_plain = True
            log.info("%s is plain beanstalkd (no session-id): failover features are off "
                     "(no session resume, no idempotent put)", describe(self.address))

    def _resume(self, jobs: list[int], now: float) -> None:
        self._resumed = set(jobs)
        self.held.keep_only(self._resumed)
        # A job a queued reserve_job names is fetched by that op (_send_op), not by a reserve.
        waiting_for = {op.job_id for op in self.pending if op.kind == "reserve_job"}
        known = set(self.held) | set(self.orphans) | waiting_for
        self.orphans.extend(job for job in jobs if job not in known)
        log.info("resumed session %s on %s (%d jobs held)", self.session_id,
                 describe(self.address), len(jobs))
