"""The sans-I/O core of both clients: command queue, reply matching, failover and replay.

Theory of operation. The core owns no socket and reads no clock: the shells (``blocking.py``,
``aio.py``) pass ``now`` (monotonic seconds) in, write what ``data_to_send()`` returns, feed
what they read to ``receive_data()``, call ``tick()`` when ``next_deadline()`` passes and
report a broken connection with ``connection_lost()``.

A connection is in one of three states::

    DOWN --connected()--> HANDSHAKE --last handshake reply--> READY
      ^                      |                                  |
      +---- connection_lost(): EOF, refused, reset, no reply ---+

HANDSHAKE sends, pipelined: ``auth <principal> <token>`` when the client was given ``auth=``
(on every connection, so a failover re-authenticates with the next node), then ``session-id`` (first connection) or ``session-resume <id>``
(afterwards; never to a server that answered UNKNOWN_COMMAND to it: plain beanstalkd), then
``use`` and ``watch``/``ignore`` to restore the tubes the application chose. Any unexpected
reply fails the connection like a lost one. In READY, application commands are sent as they
are submitted (pipelined) and replies are matched to them in order (FIFO).

When a connection is lost, the commands sent on it but not answered go back to the front of
the queue, marked ``lost``, and a *failover episode* starts (``failover.py``): ``next_attempt()``
hands out addresses round after round until a node completes the handshake (or, with no
handshake to send, answers the first command) or ``failover_timeout`` is spent -- then every
queued command fails with ``UnavailableError`` naming what was tried. A node that answers part
of the handshake and then fails (AUTH_REQUIRED, ``auth`` answered by a node without a leader)
does not end the episode, so retrying it cannot run past ``failover_timeout``.
After a successful handshake each lost command is replayed by its rule (``ops.py``), using the
job list of the resumed session; jobs that list holds which the client did not know of (their
RESERVED reply was lost) are handed to the next ``reserve``, fetched with ``peek``.

A node is also declared lost when it does not answer: when nothing arrived for ``timeout_s``
(plus the time the head command may legitimately block) while a reply is awaited. On a server
with the extensions, a reserve is therefore sent as ``reserve-with-timeout`` slices of at most
``reserve_slice_s`` seconds, re-issued until the caller's own timeout: a frozen node is noticed
within a slice plus ``timeout_s`` even while the application waits for a job.

A caller may give up on a command (``cancel``, from the async client): one not yet sent
leaves the queue; one sent is awaited and its reply dropped, and a job it reserved is given back
(``stats-job`` for its priority, then ``release``), so no worker waits out its TTR for it.

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
from beanraft.protocol.client import (NEED_DATA, ClientConnection, ProtocolError, release_bytes,
                                     reserve_bytes)

from . import wire
from .addresses import Address, describe
from .errors import Error, UnavailableError
from .failover import Episode
from .ops import DEFAULT_TUBE, Op, error_for, parse_yaml_mapping

log = logging.getLogger("beanraft.client")

DOWN, HANDSHAKE, READY = "down", "handshake", "ready"

HANDSHAKE_PURPOSES = frozenset({"auth", "session-id", "resume", "restore"})


# A request on the wire whose reply is awaited, as a tuple (purpose, op, block_s):
#   purpose  "op", "orphan" (peek of a held job for op), "auth", "session-id", "resume",
#            "restore", "give-back" / "given-back" (stats-job / release of a job reserved by a
#            cancelled op)
#   op       the Op it serves, or None (handshake)
#   block_s  how long the server may legitimately keep us waiting for the reply
_Sent = tuple[str, "Op | None", float]


class Core:
    """Queue, matching and failover state for one logical client."""

    def __init__(self, addresses: list[Address], *, timeout_s: float, failover_timeout_s: float,
                 rng: random.Random, reserve_slice_s: int = 1,
                 auth: tuple[str, str] | None = None):
        assert addresses, "at least one address"
        self.addresses = list(addresses)
        self.timeout_s = timeout_s
        self.failover_timeout_s = failover_timeout_s
        self.rng = rng
        self.reserve_slice_s = reserve_slice_s
        self.auth = auth
        self.extensions: bool | None = None  # None until a server answered session-id
        self.session_id: str | None = None
        self.used = DEFAULT_TUBE
        self.watched = [DEFAULT_TUBE]
        self.held: set[int] = set()  # jobs we know we hold (RESERVED seen, not yet given up)
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
        self._last_progress = 0.0
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
        self._last_progress = now
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
                op.finish(error=_cancelled())  # orphan of the resumed session, see _resume)
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
            op.finish(error=_cancelled())
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
        return self._last_progress + self.timeout_s + block_s

    def tick(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self.connection_lost(f"no reply within {self.timeout_s:g} s", now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the server: match each complete reply to what it answers."""
        if self.state == DOWN or self.conn is None:
            return
        self._last_progress = now
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
            if purpose == "op" and self.episode is None:
                self._on_op_reply(op, reply, now)  # the common case of _on_reply, one call less
            else:
                self._on_reply(purpose, op, block_s, reply, now)

    # ------------------------------------------------------------------ sending

    def _send(self, request: Any, purpose: str, op: Op | None, now: float,
              block_s: float = 0.0) -> None:
        """Queue a request (a protocol request, or its bytes) and await its reply."""
        if not self.sent:
            self._last_progress = now
        self.sent.append((purpose, op, block_s))
        self._out.append(request if type(request) is bytes else self.conn.send(request))

    def _flush(self, now: float) -> None:
        while self.pending and self.state == READY:
            op = self.pending.popleft()
            if not op.done:
                self._send_op(op, now)

    def _send_op(self, op: Op, now: float) -> None:
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

    def _on_orphan_reply(self, op: Op, reply: Any, now: float) -> None:
        if op.cancelled:
            if isinstance(reply, p.Found):
                self._give_back(op, reply.job_id, now)
            else:
                op.finish(error=_cancelled())
        elif isinstance(reply, p.Found):
            self.held.add(reply.job_id)
            self._finish_with(op, reply)
        elif op.kind == "reserve_job":  # gone meanwhile: let the server say so
            self._send(op.request, "op", op, now)
        else:  # the job is gone meanwhile: reserve as usual
            self._send_op(op, now)

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

    @staticmethod
    def _finish_with(op: Op, reply: Any) -> None:
        """Complete ``op`` with its reply converted; a conversion that fails (a body that does
        not decode with the client's encoding, a malformed YAML list) fails this op alone:
        the reply was read whole, so the connection and the other ops are unaffected."""
        try:
            result = op.convert(reply)
        except Exception as error:  # noqa: BLE001 - handed to the caller, who sees it raised
            op.finish(error=error)
        else:
            op.finish(result=result)

    def _on_cancelled_reply(self, op: Op, reply: Any, now: float) -> None:
        """The reply to an op whose caller gave up after it was sent: its effect stands and is
        tracked (a use, a delete), but a job it reserved goes back to the tube."""
        if isinstance(reply, p.Reserved):
            self._give_back(op, reply.job_id, now)
            return
        self._track(op, reply)
        op.finish(error=_cancelled())

    def _give_back(self, op: Op, job_id: int, now: float) -> None:
        # release needs the job's priority, which RESERVED does not carry: read it first.
        # Nobody else can change the priority of a job reserved to us meanwhile.
        op.job_id = job_id
        self.held.discard(job_id)
        self._send(p.StatsJob(job_id), "give-back", op, now)

    def _on_give_back_reply(self, purpose: str, op: Op, reply: Any, now: float) -> None:
        if purpose == "give-back" and isinstance(reply, p.Ok):
            priority = _priority_of(reply)
            if priority is not None:
                self._send(release_bytes(op.job_id, priority, 0), "given-back", op, now)
                return
        if not isinstance(reply, (p.Released, p.NotFound)):  # NOT_FOUND: its TTR ran out
            log.warning("could not give back job %d, reserved for a cancelled call (%r): it "
                        "returns to its tube when its TTR runs out", op.job_id, reply)
        op.finish(error=_cancelled())

    def _track(self, op: Op, reply: Any) -> None:
        """Keep the held jobs and the chosen tubes in step with a reply."""
        if isinstance(reply, p.Reserved):
            self.held.add(reply.job_id)
        elif op.kind in ("delete", "release", "bury"):
            if isinstance(reply, (p.Deleted, p.Released, p.Buried, p.NotFound)):
                self.held.discard(op.job_id)
        elif op.kind == "use" and isinstance(reply, p.Using):
            self.used = reply.tube
        elif op.kind == "watch" and isinstance(reply, p.Watching):
            if op.request.tube not in self.watched:
                self.watched.append(op.request.tube)
        elif op.kind == "ignore" and isinstance(reply, p.Watching):
            if op.request.tube in self.watched:
                self.watched.remove(op.request.tube)

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
        self.held &= self._resumed
        # A job a queued reserve_job names is fetched by that op (_send_op), not by a reserve.
        waiting_for = {op.job_id for op in self.pending if op.kind == "reserve_job"}
        known = self.held | set(self.orphans) | waiting_for
        self.orphans.extend(job for job in jobs if job not in known)
        log.info("resumed session %s on %s (%d jobs held)", self.session_id,
                 describe(self.address), len(jobs))

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


def _cancelled() -> Error:
    """The outcome of an op whose caller gave up (nobody reads it: the caller was cancelled)."""
    return Error("the call was cancelled")


def _priority_of(stats_job: Any) -> int | None:
    """``pri`` from a stats-job reply, or None if the reply does not have it."""
    try:
        priority = parse_yaml_mapping(stats_job.data).get("pri")
    except Exception:  # noqa: BLE001 - a malformed reply: the job is not given back
        return None
    return priority if isinstance(priority, int) else None
