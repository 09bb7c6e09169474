"""A connection's reserves: the blocking wait, its outcome as an event, pipelined reserves.

Theory of operation (a mixin of ``ClientConnection``, connection.py: it uses the connection's
attributes).
* A blocking reserve registers the session as a waiter in the replicated state machine; the
  reply then arrives as an event (RESERVED, TIMED_OUT or DEADLINE_SOON) applied on this node.
  While waiting, further input is buffered but not processed, as in beanstalkd. A client that
  half-closes while it waits gets TIMED_OUT, then what it sent behind the reserve is run: once
  the cluster applies rules version 3 an END_WAIT ends the wait alone and the session goes on
  (before, the session's CLOSE ended the wait and the rest was dropped).
* An idle ``beanraft.client`` worker costs no log entry. Its reserve arrives as
  ``reserve-with-timeout`` slices of a second, which would each commit a RESERVE and a TICK.
  On a connection that asked for a session id (only ``beanraft.client`` does), such a reserve
  first waits here: after a read barrier (a read index, no log entry) it watches the applied
  state, and only once the session could be served (a ready job in a watched unpaused tube,
  or a job held, which may be DEADLINE_SOON) does it commit the RESERVE with the time left.
  A slice that sees nothing answers TIMED_OUT without touching the log; a client that
  half-closes during one is then answered the logged way, as a plain client. Plain clients always
  wait in the replicated state, so they are served in beanstalkd's order (oldest waiter
  first); a waiting ``beanraft.client`` joins that order only when it sees a job.
* Reserves that never wait are pipelined like any other command (connection.py, ``handle``);
  a blocking reserve is pipelined too after one that found a job (``reserve_hit``), as one that
  never waits. Their outcomes are answered in request order by ``_settle_reserve``: a blocking
  one that found nothing is *owed* and reserved again for real (``_reserve_owed``).
"""

from __future__ import annotations

import asyncio
import logging

from beanraft import protocol as p
from beanraft.jobs.commands import Op

from . import peer, translate

log = logging.getLogger("beanraft.connection")

UNLOGGED_POLL_S = 0.5  # a reserve waiting off the log checks for a hang-up this often


class Reserving:
    """Reserve, wait, deliver (a mixin of ClientConnection: it uses the connection's attributes)."""

    # -- a reserve that may wait -----------------------------------------------------------

    async def _reserve(self, req) -> bool:
        self.worker = True
        # Only an event that arrives after this RESERVE is submitted can be its outcome. A
        # retried RESERVE may be answered from the reply cache, which finish_wait rewrote to the
        # outcome that was *also* delivered as an event: that event must not answer a later one.
        self.mailbox = None
        timeout_ns = translate.reserve_timeout_ns(req)
        if self.resumable and timeout_ns > 0:
            timeout_ns = await self._wait_off_the_log(timeout_ns)
            if timeout_ns is None:
                self.reserve_hit = False
                self._write(p.TimedOut())
                return True
            if self.eof and not self._half_closed():
                return False
            # A half-closed client's reserve goes on as a plain client's does (beanstalkd's
            # way): a job it could take now is RESERVED, else the wait ends with TIMED_OUT
            # and what it sent behind the reserve is run.
        fut = self._submit((Op.RESERVE, timeout_ns))
        result = await fut
        if result[0] != "WAITING":
            self.mailbox = None  # this reserve's own outcome, if it came as an event as well
            self.reserve_hit = result[0] == "RESERVED"
            if result[0] == "RESERVED" and not await self._still_ours():
                return False
            self.outbox.write(translate.to_wire(result))
            return result[0] != "GONE"
        self.waiting = True
        ended = False
        try:
            while self.mailbox is None:
                if self.eof and not ended:
                    if not self._half_closed_under_end_wait():
                        break
                    # 1.12 answers TIMED_OUT and runs what the client sent behind the reserve:
                    # end the wait alone; its outcome arrives as any other event (TIMED_OUT, or
                    # the job that reached it first), and the session goes on.
                    ended = True
                    if (await self._submit((Op.END_WAIT,)))[0] != "OK":
                        break
                    continue
                if ended and self.transport.is_closing():
                    break  # gone, or ended by the cluster or a stopping node, while it ended
                self.mail.clear()
                await self.mail.wait()
        finally:
            self.waiting = False
        if self.mailbox is None:  # the client hung up (or half-closed) while waiting
            return False
        reply, self.mailbox = self.mailbox, None
        self.reserve_hit = reply[0] == "RESERVED"
        if reply[0] == "RESERVED" and not await self._still_ours():
            return False
        self.outbox.write(translate.to_wire(reply))
        return True

    def _half_closed_under_end_wait(self) -> bool:
        """May a wait that saw the client's end of input end alone (END_WAIT), the session
        going on? Only for a client that half-closed (not gone, not ended by the cluster or a
        stopping node) once the cluster applies rules 3, which added END_WAIT: this node's
        state has applied the switch, so the cluster committed it before anything proposed now."""
        if not self._half_closed():
            return False
        return self.node.raft.read(lambda machine: machine.rules) >= 3

    def _half_closed(self) -> bool:
        """Has the client only stopped sending (not gone, not hung up on by the cluster or a
        stopping node)?"""
        return (not self.leaving and self.transport is not None
                and self.peer.state() is peer.DONE_SENDING)

    async def _still_ours(self) -> bool:
        """May a RESERVED for this session still be sent? Not if another connection resumed the
        session meanwhile: the job is the resumer's now (RESUMED lists it).

        A thawed or reconnected node may hold the outcome of a reserve it applied before the
        cluster committed a resume it has not applied yet. A read barrier (a read index, no log
        entry) makes this node apply everything committed so far; the session is then checked
        in the applied state. Only connections that asked for a session id can be resumed, so
        plain clients pay nothing."""
        if not self.resumable:
            return True
        await self.node.read_barrier()  # nothing to wait for on a single node
        sid = self.sid
        if self.node.raft.read(lambda machine: sid in machine.sessions):
            return True
        log.info("session %x was resumed elsewhere: its RESERVED is withheld", sid)
        self.abort()
        return False

    async def _wait_off_the_log(self, timeout_ns: int) -> int | None:
        """Wait until a reserve could be served (the nanoseconds left of ``timeout_ns``), the
        client hangs up (what is left), or the timeout passes (None), writing no log entry."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ns / 1e9
        raft, sid = self.node.raft, self.sid
        await self._ensure_open()
        await self.node.read_barrier()  # every job put before this reserve is applied here
        self.waiting = True
        self.node.waiting_off_the_log(sid, True)
        try:
            while not self.eof:
                left = deadline - loop.time()
                seen = raft.applied_through()  # before the state is read (see applied_or)
                if not raft.read(lambda machine: machine.reserve_would_wait(sid)):
                    return max(0, int(left * 1e9))
                if left <= 0:
                    return None
                await raft.applied_or(seen, min(left, UNLOGGED_POLL_S))
            return max(0, int((deadline - loop.time()) * 1e9))
        finally:
            self.waiting = False
            self.node.waiting_off_the_log(sid, False)

    def deliver(self, reply: tuple) -> None:
        """An event for this session applied by the state machine (its reserve's outcome)."""
        self.mailbox = reply
        self.mail.set()

    # -- pipelined reserves ------------------------------------------------------------------

    def _settle_reserve(self, req, result: tuple) -> None:
        """One pipelined reserve's outcome, as a reserve that never waits, in request order.

        The reserves a client pipelines are answered one after another, as beanstalkd takes
        them: a blocking one that found no job is *owed* (reserved again for real, waiting, by
        ``_reserve_owed``), and every later outcome then answers the oldest owed reserve, the
        one that would have had it; the later request becomes owed in its turn. The jobs all
        belong to the one session, so which of its reserves took which is not visible, except
        in that order, which this keeps. Nothing but reserves is submitted behind a blocking
        one (``handle`` flushes first), so no other command can run before an owed reserve.
        """
        if result[0] == "TIMED_OUT":
            self.reserve_hit = False
            if translate.reserve_timeout_ns(req) != 0 or self.owed:
                self.owed.append(req)
                return
        elif result[0] == "RESERVED":
            self.reserve_hit = True
        if self.owed:
            self.owed.popleft()
            self.owed.append(req)
        self.outbox.write(translate.to_wire(result))

    async def _reserve_owed(self, bounded: bool = True) -> None:
        """The blocking reserves that found no job when pipelined, one at a time, in order
        (none once the connection is closing: ``bounded`` False)."""
        if not bounded:
            self.owed.clear()
        while self.owed:
            req = self.owed.popleft()
            self.outbox.send_now()
            if not await self._reserve(req):
                self.owed.clear()
                raise ConnectionError("client gone while waiting in reserve")
