"""Is the client still there? Asks the kernel, which knows before asyncio does.

asyncio learns that a client went away only at its next read or write, and reads come in order:
a hang-up queued behind 2 MB of pipelined commands is seen after all of them, and not at all
while reading is paused for backpressure. poll(2) on the socket, without waiting, tells at once:
hang-up or error (the client reset the connection, or a UNIX socket's peer closed) means nothing
we write can reach it; RDHUP alone means it sent its last byte, which is either a half-close or
a close that it has not yet answered with a reset because we have not written since.

One answer serves every request handled in the same loop iteration, until we write: within an
iteration nothing but our own write can make the kernel learn more from the client (its reset
comes back inside the send on loopback), and a pipelined burst is handled in one iteration, so a
poll(2) per request only handed the GIL to the Raft thread once per request. The answer is
forgotten at the next iteration and after each write (``forget``). Iterations are counted once per
loop (``LoopTurns``), with one callback per iteration in which anyone asked, not one per answer.
"""

from __future__ import annotations

import asyncio
import select
import weakref

HERE, DONE_SENDING, GONE = "here", "done sending", "gone"

_GONE_FLAGS = select.POLLHUP | select.POLLERR | select.POLLNVAL


class LoopTurns:
    """The number of the event loop's current iteration, as far as the probes need it: it moves
    on in the iteration after one in which ``current`` was asked for."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.turn = 0
        self._armed = False

    def current(self) -> int:
        if not self._armed:
            self._armed = True
            self._loop.call_soon(self._next)
        return self.turn

    def _next(self) -> None:
        self._armed = False
        self.turn += 1


_turns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _turns_of(loop: asyncio.AbstractEventLoop) -> LoopTurns:
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = LoopTurns(loop)
    return turns


class PeerProbe:
    """One poll(2) registration for a connection's socket (kept for the connection's life)."""

    def __init__(self, transport):
        self.transport = transport
        self._poll: select.poll | None = None
        self._known: str | None = None  # the answer of iteration ``_asked``, until ``forget``
        self._asked = -1
        self._turns = _turns_of(asyncio.get_running_loop())
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLRDHUP)

    def state(self) -> str:
        """HERE, DONE_SENDING or GONE."""
        if self.transport.is_closing():
            return GONE  # never poll a descriptor the transport may have closed and reused
        if self._poll is None:
            return HERE
        turn = self._turns.current()
        if self._known is not None and self._asked == turn:
            return self._known
        events = self._poll.poll(0)
        flags = events[0][1] if events else 0
        if flags & _GONE_FLAGS:
            known = GONE
        else:
            known = DONE_SENDING if flags & select.POLLRDHUP else HERE
        self._known = known
        self._asked = turn
        return known

    def forget(self) -> None:
        """Ask the kernel again next time (a new loop iteration, or we wrote to the client)."""
        self._known = None
