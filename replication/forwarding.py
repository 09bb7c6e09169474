"""Asked on any node, run on the leader: the path that membership changes and leadership
transfers share.

Theory of operation.
* The event loop asks (``ask``): the request goes into ``requests``, the tick thread is woken,
  and the loop waits for the answer a little longer than the request's own timeout (``grace_s``),
  so that the leader's answer normally arrives before the loop gives up on it.
* The tick thread takes the requests (``on_tick``): on the leader the owner begins the work at
  once; on a follower the request is sent to the leader over the sealed peer connection (message
  type ``request_type``) under a token, and the leader's answer (``done_type``) settles the
  waiting future. With no leader known the request is refused at once (``no_leader``).
* A request that reaches the leader is checked by the owner's ``parse`` (a message no version of
  ours sends is dropped), refused ``no_leader`` when this node is not the leader any more, and
  otherwise begun with a ``reply`` that sends the answer back to the node that asked (by the
  owner's ``send``, which may know a way to a node that is no longer a member).
* Answers cross from the tick thread to the loop only through ``call_soon_threadsafe``; a token
  whose future is done or whose deadline passed is forgotten, so ``_asked`` holds only requests
  still waited for, and a request the loop stopped waiting for is cancelled.
* At most ``max_waiting`` requests of one kind wait at a time (``requests`` and ``_asked`` hold no
  more); one more is refused at once as ``busy``. One change or transfer runs at a time anyway,
  so a crowd of waiting requests would only be refused one by one on the leader.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Callable

from . import seam

NO_LEADER = "no_leader"
TIMEOUT = "timeout"
ASKED_GRACE_S = 1.0  # how long past its timeout a forwarded request's token is kept
BUSY = "busy"
MAX_WAITING = 64  # requests of one kind waiting for their answer on this node


class Refused(Exception):
    """What was asked did not happen (or its outcome is not known yet); ``code`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def route_messages(sync, types: frozenset, on_message: Callable,
                   intercept: Callable[[object, dict], bool] | None = None) -> Callable:
    """Send the peer messages whose ``type`` is in ``types`` to ``on_message``, let ``intercept``
    take others it wants (it answers True), and everything else to the handler installed before;
    returns that handler."""
    handler = seam.message_handler(sync)

    def route(node, message):
        if isinstance(message, dict):
            if message.get("type") in types:
                on_message(node, message)
                return
            if intercept is not None and intercept(node, message):
                return
        handler(node, message)

    seam.transport(sync).setOnMessageReceivedCallback(route)
    return handler


class Forwarder:
    """One kind of leader-run request (see the module docstring).

    ``error`` is the owner's subclass of :class:`Refused`;
    ``begin(reply, args, now, requester)`` starts the work on the leader (``requester`` is the
    asking node's address, or None when asked here); ``encode``/``parse`` turn a request's
    arguments into message fields and back (``parse`` answers None for a malformed message);
    ``to_wire``/``from_wire`` do the same for a successful outcome; ``send(node, message)``
    carries an answer to the node that asked (by default the transport's ``send``).
    """

    def __init__(self, sync, loop: asyncio.AbstractEventLoop, *, request_type: str,
                 done_type: str, error: type, begin: Callable, encode: Callable[[tuple], dict],
                 parse: Callable[[dict], tuple | None], to_wire: Callable[[object], dict],
                 from_wire: Callable[[dict], object], grace_s: float,
                 send: Callable[[object, dict], bool] | None = None):
        self._sync = sync
        self._loop = loop
        self.request_type, self.done_type = request_type, done_type
        self.types = frozenset((request_type, done_type))
        self._error = error
        self._begin = begin
        self._encode, self._parse = encode, parse
        self._to_wire, self._from_wire = to_wire, from_wire
        self._grace_s = grace_s
        self._send = send or (lambda node, message: seam.transport(sync).send(node, message))
        self._tokens = itertools.count(1)
        self.requests: collections.deque = collections.deque()  # (args, timeout_s, future)
        self._asked: dict[int, tuple[asyncio.Future, float]] = {}  # token -> future, deadline
        self.max_waiting = MAX_WAITING
        self._waiting = 0  # asks not answered yet (the event loop's count)

    # -- the event loop's side -------------------------------------------------------------

    async def ask(self, args: tuple, timeout_s: float, timeout_message: str):
        """The outcome of ``args``, begun on the leader; raises the owner's error."""
        if self._waiting >= self.max_waiting:
            raise self._error(BUSY, f"{self._waiting} requests of this kind wait for the leader's "
                              "answer on this node already; ask again later")
        self._waiting += 1
        fut = self._loop.create_future()
        self.requests.append((args, timeout_s, fut))
        seam.pipe_notifier(self._sync).notify()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s + self._grace_s)
        except asyncio.TimeoutError:
            raise self._error(TIMEOUT, timeout_message) from None
        finally:
            self._waiting -= 1
            fut.cancel()  # the tick thread forgets its token; a late answer is dropped

    def answer(self, fut: asyncio.Future, outcome) -> None:
        """Tick thread: hand ``outcome`` (a result or the owner's error) to the loop."""
        def settle():
            if fut.done():
                return
            if isinstance(outcome, self._error):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed during shutdown
            pass

    # -- the tick thread's side ------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """Begin or forward what the loop asked, and forget answered or expired tokens."""
        while self.requests:
            args, timeout_s, fut = self.requests.popleft()
            self._start(args, timeout_s, fut, now)
        for token, (fut, until) in list(self._asked.items()):
            if fut.done() or now > until:
                del self._asked[token]

    def _start(self, args: tuple, timeout_s: float, fut: asyncio.Future, now: float) -> None:
        sync = self._sync
        if seam.is_leader(sync):
            self._begin(lambda outcome: self.answer(fut, outcome), args, now, None)
            return
        leader = seam.leader_node(sync)
        if leader is None:
            self.answer(fut, self._error(
                NO_LEADER, "no leader: the cluster is electing one or has no majority"))
            return
        token = next(self._tokens)
        self._asked[token] = (fut, now + timeout_s + ASKED_GRACE_S)
        seam.transport(sync).send(leader, {"type": self.request_type, "token": token,
                                           **self._encode(args)})

    def on_message(self, node, message: dict, now: float) -> None:
        """A request forwarded to this node, or the answer to one this node forwarded."""
        kind = message.get("type")
        if kind == self.request_type:
            self._on_request(node, message, now)
        elif kind == self.done_type:
            entry = self._asked.pop(message.get("token"), None)
            if entry is None:
                return
            if message.get("ok"):
                outcome = self._from_wire(message)
            else:
                outcome = self._error(str(message.get("code")), str(message.get("message")))
            self.answer(entry[0], outcome)

    def _on_request(self, node, message: dict, now: float) -> None:
        token = message.get("token")

        def reply(outcome) -> None:
            if isinstance(outcome, self._error):
                answer = {"ok": False, "code": outcome.code, "message": str(outcome)}
            else:
                answer = {"ok": True, **self._to_wire(outcome)}
            self._send(node, {"type": self.done_type, "token": token, **answer})

        args = self._parse(message)
        if args is None:
            return  # not a request any version of ours sends
        if not seam.is_leader(self._sync):
            reply(self._error(NO_LEADER, "the node asked was not the leader any more; ask again"))
            return
        self._begin(reply, args, now, str(node))
