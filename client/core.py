"""The sans-I/O core of both clients: command queue, reply matching, failover and replay.

Theory of operation. The core owns no socket and reads no clock: the shells (``blocking.py``,
``aio.py``) pass ``now`` (monotonic seconds) in, write what ``data_to_send()`` returns, feed
what they read to ``receive_data()``, call ``tick()`` when ``next_deadline()`` passes and
report a broken connection with ``connection_lost()``.

A connection is in one of three states::

    DOWN --connected()--> HANDSHAKE --last handshake reply--> READY
      ^                      |                                  |
      +---- connection_lost(): EOF, refused, reset, no reply ---+

HANDSHAKE sends, pipelined, the commands that restore the client's session and tubes on the new
connection (``failover.py``). Any unexpected reply fails the connection like a lost one. In
READY, application commands are sent as they are submitted (pipelined) and replies are matched
to them in order (FIFO).

When a connection is lost, the commands sent on it but not answered go back to the front of
the queue, marked ``lost``, and a *failover episode* starts (``failover.py``): ``next_attempt()``
hands out addresses round after round until a node completes the handshake (or, with no
handshake to send, answers the first command) or ``failover_timeout`` is spent -- then every
queued command fails with ``UnavailableError`` naming what was tried. After a successful
handshake each lost command is replayed by its rule (``ops.py``, ``Failover._send_op``).

The core is one class in three files, split where the concerns part: this one moves requests
and replies and owns the state; ``failover.py`` (``Failover``) plans what a new connection is
sent; ``bookkeeping.py`` (``Bookkeeping``) keeps held jobs and tubes in step with the replies
and gives back the jobs of cancelled calls.

A node is also declared lost when it does not answer: when nothing arrived for ``timeout_s``
(plus the time the head command may legitimately block) while a reply is awaited, or when the
reply is not complete in that time plus a second for every ``min_reply_rate`` bytes of it that
arrived (``deadline.py``: a node that trickles its reply is no better than a silent one). On a
server with the extensions, a reserve is therefore sent as ``reserve-with-timeout`` slices of at
most ``reserve_slice_s`` seconds, re-issued until the caller's own timeout: a frozen node is
noticed within a slice plus ``timeout_s`` even while the application waits for a job.

A caller may give up on a command (``cancel``, from the async client): one not yet sent
leaves the queue; one sent is awaited and its reply dropped, and a job it reserved is given back
(``bookkeeping.py``), so no worker waits out its TTR for it.

Bounds: the queue holds what the application submitted (the blocking client one command, the
async client up to its ``max_in_flight``); the parser bounds a reply (``protocol.client``).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from typing import Any

from beanraft import protocol as p
from beanraft.protocol.client import NEED_DATA, ClientConnection, ProtocolError

from .addresses import Address, describe
from .bookkeeping import Bookkeeping, HeldJobs, cancelled_error
from .deadline import MIN_REPLY_RATE_BYTES_PER_S, ReplyClock
from .errors import UnavailableError
from .failover import HANDSHAKE_PURPOSES, Episode, Failover
from .ops import DEFAULT_TUBE, Op, error_for

log = logging.getLogger("beanraft.client")

DOWN, HANDSHAKE, READY = "down", "handshake", "ready"


# A request on the wire whose reply is awaited, as a tuple (purpose, op, block_s):
#   purpose  "op", "orphan" (peek of a held job for op), "auth", "session-id", "resume",
#            "restore", "give-back" / "given-back" (stats-job / release of a job reserved by a
#            cancelled op)
#   op       the Op it serves, or None (handshake)
#   block_s  how long the server may legitimately keep us waiting for the reply
_Sent = tuple[str, "Op | None", float]


class Core(Failover, Bookkeeping):
    """Queue, matching and failover state for one logical client."""

    def __init__(self, addresses: list[Address], *, timeout_s: float, failover_timeout_s: float,
                 rng: random.Random, reserve_slice_s: int = 1,
                 auth: tuple[str, str] | None = None,
                 min_reply_rate: float = MIN_REPLY_RATE_BYTES_PER_S):
        assert addresses, "at least one address"
        assert min_reply_rate > 0
        self.addresses = list(addresses)
        self.timeout_s = timeout_s
        self.failover_timeout_s = failover_timeout_s
        self.rng = rng
        self.reserve_slice_s = reserve_slice_s
        self.min_reply_rate = min_reply_rate  # bytes/s a long reply must keep up (deadline.py)
        self.auth = auth
        self.extensions: bool | None = None  # None until a server answered session-id
        self.session_id: str | None = None
        self.used = DEFAULT_TUBE
        self.watched = [DEFAULT_TUBE]
        self.held = HeldJobs()  # jobs we know we hold (RESERVED seen, not yet given up)
        self.orphans: deque[int] = deque()  # held by our session, unknown to the application
        self.pending: deque[Op] = deque()  # submitted, not sent on the current connection
        self.lost: set[Op] = set()  # ops sent on a lost connection, replay rules apply
        self.sent: deque[_Sent] = deque()
        self.state = DOWN
        self.address: Address | None = None
        self.conn: ClientConnection | None = None
        self.episode: Episode | None = None
        self.last_error: UnavailableError | None = None
        self.failovers = 0
        self._resumed: set[int] | None = None
        self._out: list[bytes] = []
        self._clock = ReplyClock()  # when the reply awaited now is overdue
        self._said_plain = False
        self._lost_from = ""

    # ------------------------------------------------------------------ connection events

    def start(self, now: float) -> None:
        """Begin connecting (the first connection is a failover episode without a failure)."""
        if self.episode is None:
            self.episode = Episode(now)

    def next_attempt(self, now: float) -> tuple[Address, float] | None:
        """The next address to connect to and how long to wait first, or None when the
        episode is over budget (every queued op then failed with ``UnavailableError``)."""
        assert self.episode is not None and self.state == DOWN
        address, delay = self.episode.next_attempt(self.addresses, self.rng)
        if now + delay - self.episode.started > self.failover_timeout_s:
            self._give_up(now)
            return None
        return address, delay

    def remaining_budget(self, now: float) -> float:
        """Seconds left of ``failover_timeout`` in the current episode."""
        assert self.episode is not None
        return max(0.0, self.episode.started + self.failover_timeout_s - now)

    def attempt_failed(self, address: Address, reason: str) -> None:
        assert self.episode is not None
        self.episode.note(address, reason)

    def connected(self, address: Address, now: float) -> None:
        """A TCP connection to ``address`` is up: send the handshake."""
        assert self.state == DOWN
        self.state, self.address = HANDSHAKE, address
        self.conn = ClientConnection()
        self._send_handshake(now)
        if not self.sent:
            self._ready(now)

    def connection_lost(self, reason: str, now: float) -> None:
        """The connection broke (EOF, reset, refused, no reply, garbage): fail over."""
        if self.state == DOWN:
            return
        address = self.address
        if self.state == READY:
            log.warning("lost %s (%s): failing over", describe(address), reason)
        back = [op for _, op, _ in self.sent if op is not None and not op.done]
        for op in back:
            if op.cancelled:  # nobody waits for it: not replayed (a job it reserved is an
                op.finish(error=cancelled_error())  # orphan of the resumed session, see _resume)
        back = [op for op in back if not op.done]
        self.lost.update(back)
        self.pending.extendleft(reversed(back))
        self.sent.clear()
        self._out.clear()
        self.state, self.conn, self.address = DOWN, None, None
        self._resumed = None
        self._lost_from = f"{describe(address)} ({reason})"
        if self.episode is None:
            self.episode = Episode(now)
        self.episode.note(address, reason)

    # ------------------------------------------------------------------ application side

    def submit(self, op: Op, now: float) -> None:
        """Queue an op; it is sent at once when the connection is READY."""
        if self.state == READY and not self.pending:
            self._send_op(op, now)  # what _flush would do, without the queue
            return
        self.pending.append(op)
        if self.state == READY:
            self._flush(now)

    def cancel(self, op: Op) -> None:
        """The caller gave up on ``op`` (the async client's task was cancelled).

        Not yet sent on the current connection, it leaves the queue and is never sent. Sent,
        it cannot be unsent: it stays in flight until its reply, which is dropped, except
        that a job it reserved is given back (``_give_back``) rather than hidden from every
        worker for its TTR. Either way ``op`` counts as queued until it is done."""
        if op.done:
            return
        if op in self.pending:
            self.pending.remove(op)
            self.lost.discard(op)
            op.finish(error=cancelled_error())
        else:
            op.cancelled = True

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing awaited."""
        return not self.pending and not self.sent

    def next_deadline(self) -> float | None:
        """When ``tick`` must run to notice a node that stopped answering (None: never)."""
        if self.state == DOWN or not self.sent:
            return None
        block_s = self.sent[0][2]
        if block_s == math.inf:
            return None
        return self._clock.deadline(self.timeout_s, block_s, self.min_reply_rate)

    def tick(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self.connection_lost(self._clock.why(self.timeout_s, self.min_reply_rate, now), now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the server: match each complete reply to what it answers."""
        if self.state == DOWN or self.conn is None:
            return
        self._clock.heard_bytes(len(data), now)
        self.conn.receive_data(data)
        next_reply, sent = self.conn.next_reply, self.sent
        while self.state != DOWN:
            try:
                reply = next_reply()
            except ProtocolError as error:
                self.connection_lost(f"protocol error: {error}", now)
                return
            if reply is NEED_DATA:
                return
            if not sent:
                self.connection_lost(f"unsolicited reply {reply!r}", now)
                return
            purpose, op, block_s = sent.popleft()
            # The next reply is due from now, not from when it was sent: the server answers in
            # order, and a long reply before it (a large job body) must not eat its time.
            self._clock.start(now, self.conn.buffered_bytes)
            if purpose == "op" and self.episode is None:
                self._on_op_reply(op, reply, now)  # the common case of _on_reply, one call less
            else:
                self._on_reply(purpose, op, block_s, reply, now)

    # ------------------------------------------------------------------ sending

    def _send(self, request: Any, purpose: str, op: Op | None, now: float,
              block_s: float = 0.0) -> None:
        """Queue a request (a protocol request, or its bytes) and await its reply."""
        if not self.sent:
            self._clock.start(now)
        self.sent.append((purpose, op, block_s))
        self._out.append(request if type(request) is bytes else self.conn.send(request))

    def _flush(self, now: float) -> None:
        while self.pending and self.state == READY:
            op = self.pending.popleft()
            if not op.done:
                self._send_op(op, now)

    # ------------------------------------------------------------------ replies

    def _on_reply(self, purpose: str, op: Op | None, block_s: float, reply: Any,
                  now: float) -> None:
        if purpose in HANDSHAKE_PURPOSES:
            # A handshake reply does not end the failover episode by itself: a node may answer
            # ``auth`` (or AUTH_REQUIRED) locally and then fail the rest, and each retry must
            # spend the same failover_timeout. The episode ends when the handshake completes.
            self._on_handshake_reply(purpose, reply, now)
            if self.state == HANDSHAKE and not self.sent:
                if self.episode is not None:
                    self._end_episode(now)
                self._ready(now)
            return
        if self.episode is not None:
            self._end_episode(now)  # READY without a handshake: the first reply ends it
        if purpose == "op":
            self._on_op_reply(op, reply, now)
        elif purpose == "orphan":
            self._on_orphan_reply(op, reply, now)
        else:
            self._on_give_back_reply(purpose, op, reply, now)

    def _on_op_reply(self, op: Op, reply: Any, now: float) -> None:
        if op.cancelled:
            self._on_cancelled_reply(op, reply, now)
            return
        if (op.replay == "reserve" and isinstance(reply, p.TimedOut) and self.extensions
                and (op.deadline is None or now < op.deadline)):
            self._send_op(op, now)  # one slice ended; the caller's timeout has not
            return
        self._track(op, reply)
        if isinstance(reply, op.expect):
            self._finish_with(op, reply)
        else:
            op.finish(error=error_for(reply, op.kind))

    def _end_episode(self, now: float) -> None:
        if self.episode.tried:
            self.failovers += 1
            log.info("%s answers after %.2f s of failover", describe(self.address),
                     now - self.episode.started)
        self.episode = None

    def _ready(self, now: float) -> None:
        # The episode does not end here: with nothing to restore, READY comes with the TCP
        # connection, and a frozen node accepts those; then the first reply ends it.
        self.state = READY
        self._flush(now)
        self._resumed = None
        self.lost.clear()

    def _give_up(self, now: float) -> None:
        episode = self.episode
        error = UnavailableError(
            f"no BeanRaft/beanstalkd node could serve within {self.failover_timeout_s:g} s; "
            f"tried {episode.summary()}")
        self.last_error = error
        self.episode = None
        self.lost.clear()
        while self.pending:
            self.pending.popleft().finish(error=error)
