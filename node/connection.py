"""One client connection: bytes in, requests out, replies back, in order.

Theory of operation. The asyncio protocol only moves bytes: ``data_received`` feeds the sans-I/O
parser and wakes the connection's task, which takes requests one at a time.
* Mutating requests that cannot block (put, delete, release, …) are submitted to group commit at
  once and their futures queued (at most ``MAX_PIPELINE``), so a client that pipelines gets its
  commands into shared Raft entries. Before anything else (a read, a reserve, an error reply,
  quit) and whenever the parser needs more bytes, the queued futures are awaited in order and
  their replies written.
* Reserves (``node/reserving.py``): a blocking one waits in the replicated state machine and
  its outcome arrives as an event; an idle ``beanraft.client`` worker waits off the log.
* Memory stays bounded. Input: reading pauses while the parser holds more than
  ``READ_PAUSE_BYTES`` (or a put body it still waits for). Output: before each request and after
  each reply, if the replies the client has not taken exceed the outbox's high-water mark
  (node/outbox.py), the connection stops: it neither reads nor handles anything until the client
  has taken all but the low-water mark. A client that never reads its replies stops being read.
* One connection cannot hold the event loop: after ``MAX_BURST`` requests, or once the replies
  produced since it last yielded reach ``BURST_BYTES``, the task yields, so the other clients,
  Raft's replies and the outbox's write run in between.
* A client that has gone is not served. Before each request the connection asks the kernel
  about the client's socket (node/peer.py: once per loop iteration, and again after each write). Gone (the transport was lost, or the socket shows a
  hang-up or error, as after the client's reset): its unexecuted input is dropped, and only the
  commands already submitted (at most ``MAX_PIPELINE``) still run. Done sending (its FIN
  arrived, possibly behind unread commands): a closed client and a half-closed one look alike
  until we write, since a closed one answers our next reply with a reset; so the queued replies
  are written before the next command runs, and at most one command runs after a close is seen.
  A half-closed client has its commands executed, one at a time, as beanstalkd does. Either way
  the session's CLOSE then releases its reservations.
* The session is opened in the replicated state when the client connects (it uses and watches
  "default" from then on, cluster-wide); closing it releases its reserved jobs. With an auth
  file, only once the client has authenticated: until then it writes nothing to the log.
* A stopping node (SIGTERM) hangs up on its clients after answering what it had read
  (``leave``). That is not the client's close: a session with an id is left open for its client
  to resume elsewhere; the others are closed as if their clients had quit.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from beanraft import protocol as p
from beanraft.jobs.commands import Op
from beanraft.replication.batcher import OutcomeUnknown

from . import peer, translate
from .flag import Flag
from .guard import Guard
from .outbox import Outbox
from .queries import EXTENSIONS, answer_read
from .reserving import Reserving

log = logging.getLogger("beanraft.connection")

READ_PAUSE_BYTES = 256 * 1024
MAX_PIPELINE = 64  # the state machine caches the last 64 replies per session
MAX_BURST = 32  # requests handled before the connection yields the event loop
BURST_BYTES = 256 * 1024  # ... or replies produced before it yields


class ClientConnection(Reserving, asyncio.Protocol):
    """The asyncio side of one client: owns its parser, its session id and its reply order."""

    def __init__(self, node):
        self.node = node
        self.parser = p.ServerConnection(max_job_size=node.config.max_job_size)
        self.sid = node.new_sid()
        self.seq = 0
        self.opened: asyncio.Future | None = None  # the session's OPEN (``open_session``)
        self.unopened = False  # its OPEN was refused (a lone node's failed journal): see _ensure_open
        self.inflight: collections.deque = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.outbox: Outbox | None = None
        self.peer: peer.PeerProbe | None = None
        self.wakeup = Flag()
        self.unread = False  # input arrived that the task has not parsed yet (Node.unread)
        self.eof = False
        self.input_full = False  # the parser holds READ_PAUSE_BYTES: reading paused
        self.output_full = False  # the client has not taken our replies: reading paused
        self.reading_paused = False
        self.burst = 0  # requests handled since the task last yielded
        self.mailbox: tuple | None = None
        self.mail = Flag()
        self.producer = False
        self.worker = False
        self.waiting = False
        self.leaving = False  # the node is stopping: see ``leave``
        self.finishing = False  # the request loop has ended: input from now on is dropped
        self.extended = False  # sent an extension command: its stats show their counters too
        self.resumable = False  # asked for a session id: a beanraft.client (see _reserve)
        self.task: asyncio.Task | None = None
        self.owed: collections.deque = collections.deque()  # reserves to wait in (flush)
        self.speculating = False  # a blocking reserve is in flight as one that never waits
        self.reserve_hit = True  # the last reserve found a job: pipeline the next blocking one
        self.guard: Guard | None = None  # with --auth-file: authentication and permissions

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = peer.PeerProbe(transport)
        self.outbox = Outbox(transport, on_write=self.peer.forget)
        self.node.connection_opened(self)
        if self.node.auth is not None and self.node.auth.required:
            self.guard = Guard(self, self.node.auth)
        if self.guard is None or self.guard.principal is not None:
            self.open_session()  # else once it authenticates (Guard): strangers write no log
        self.task = asyncio.get_running_loop().create_task(self.run())

    def open_session(self) -> None:
        """Propose the session's OPEN (once). The session then exists cluster-wide: a fresh
        connection uses and watches "default", which stats-tube reports (current-using /
        current-watching)."""
        if self.opened is None:
            self.opened = self.node.commit.submit((Op.OPEN, self.sid, self._next_seq()))

    def data_received(self, data: bytes) -> None:
        if self.leaving or self.finishing:
            return  # read and dropped: unread bytes at close would make the kernel send a reset
        self.parser.receive_data(data)
        if self.parser.buffered_bytes > READ_PAUSE_BYTES and not self.input_full:
            self.input_full = True
            self._set_reading()
        if not self.unread:
            self.unread = True
            self.node.unread += 1
        self.wakeup.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.wakeup.set()
        self.mail.set()
        # Keep the write side open: a half-closed waiter still gets TIMED_OUT. asyncio's TLS
        # transport cannot half-close (it warns and closes), so over TLS the connection ends.
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc) -> None:
        self.eof = True
        if self.guard is not None:
            self.guard.abandon()
        self.outbox.resume()
        self.wakeup.set()
        self.mail.set()

    def pause_writing(self) -> None:
        self.outbox.pause()

    def resume_writing(self) -> None:
        self.outbox.resume()

    def _set_reading(self) -> None:
        """Read while neither the parser's input nor the client's unsent output is full."""
        pause = self.input_full or self.output_full
        if pause == self.reading_paused or self.transport.is_closing():
            return
        self.reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- the request loop ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while await self._serve_one():
                pass
        except OutcomeUnknown as exc:
            log.warning("connection %x closed: outcome of a command unknown (%s)", self.sid, exc)
        except ConnectionError:
            pass
        except Exception:
            log.exception("connection %x failed", self.sid)
        finally:
            await self._finish()

    async def _serve_one(self) -> bool:
        req = self.parser.next_request()
        if req is p.NEED_DATA:
            self._parsed_all()
            if self.inflight:
                if not self.node.unread:
                    # No connection has input left to parse this turn of the loop: nothing
                    # more can join the batch queued now, so it is proposed at once instead of
                    # at the next turn (a lone node commits it in there: the replies below are
                    # then written without waiting for another turn either).
                    self.node.commit.flush_now()
                await self.flush()
                return True  # bytes may have arrived while we waited: parse again first
            if self.eof or self.transport.is_closing():
                return False
            if self.input_full:
                self.input_full = False
                self._set_reading()
            self.wakeup.clear()
            self.burst = 0
            await self.wakeup.wait()
            return True
        if not await self._may_handle():
            self.transport.abort()  # the client is gone: its input not yet run is dropped
            return False
        self.burst += 1
        return await self.handle(req)

    def _parsed_all(self) -> None:
        """Every byte received so far is parsed: this connection no longer counts as one with
        input to parse (``Node.unread``)."""
        if self.unread:
            self.unread = False
            self.node.unread -= 1

    async def _may_handle(self) -> bool:
        """Keep the bounds before a request is handled; False if the client is gone."""
        if len(self.inflight) >= MAX_PIPELINE:
            await self.flush()  # every path that pipelines (reserve 0, burnt ids) counts
        if self.outbox.over_high_water():
            await self.wait_output_taken()
        elif self.burst >= MAX_BURST or self.outbox.queued >= BURST_BYTES:
            await self.yield_loop()
        state = self.peer.state()
        if state is peer.DONE_SENDING and self.inflight:
            # Closed, or only half-closed? A closed client answers our next reply with a reset,
            # so reply before running more: at most one command runs after a close is seen.
            await self.flush()
            state = self.peer.state()
        return state is not peer.GONE

    async def wait_output_taken(self) -> None:
        """The client has not taken our replies: stop reading and handling until it has."""
        self.outbox.send_now()
        self.burst = 0
        if self.outbox.drained.is_set():
            await asyncio.sleep(0)  # the kernel took it all; still, let the others run
            return
        self.output_full = True
        self._set_reading()
        try:
            await self.outbox.drained.wait()
        finally:
            self.output_full = False
            self._set_reading()

    async def yield_loop(self) -> None:
        """Let the other connections (and our own write) have the event loop."""
        self.outbox.send_now()
        self.burst = 0
        await asyncio.sleep(0)

    async def handle(self, req) -> bool:
        """Act on one request; return False when the connection must close."""
        node = self.node
        if self.guard is not None:
            refusal = await self.guard.screen(req)
            if refusal is not None:
                await self.flush()
                self._write(refusal)
                return True
        elif isinstance(req, p.Auth) or (isinstance(req, p.Rejected) and req.auth):
            # Without --auth-file, exactly as beanstalkd: the command does not exist.
            await self.flush()
            self._write(p.UnknownCommand())
            return True
        if isinstance(req, p.Rejected):
            return await self._rejected(req)
        node.count_command(req)
        if isinstance(req, EXTENSIONS):
            self.extended = True
        if isinstance(req, p.Quit):
            return False
        if isinstance(req, (p.Put, p.PutKey, p.ImportJob)):
            self.producer = True
            if node.draining:
                self._pipeline((Op.BURN_ID,), p.Draining())
                return True
        if node.refuses(req):
            await self.flush()
            self._write(p.OutOfMemory())
            return True
        if isinstance(req, (p.Reserve, p.ReserveWithTimeout)):
            self.worker = True
            timeout_ns = translate.reserve_timeout_ns(req)
            if timeout_ns == 0 or self.reserve_hit:
                # Pipelined as a reserve that never waits; a miss of a blocking one is
                # reserved again for real, in order, by ``flush`` (see _settle_reserve).
                self.speculating = self.speculating or timeout_ns != 0
                self.inflight.append((self._submit((Op.RESERVE, 0)), _RESERVE, req))
                return True
            await self.flush()
            return await self._reserve(req)
        if self.speculating:
            await self.flush()  # nothing runs before a blocking reserve in flight has its job
        if isinstance(req, translate.PIPELINED):
            self._pipeline(None, None, req)
            return True
        await self.flush()
        await self._ensure_open()
        await node.read_barrier()
        self._write(answer_read(node, self, req))
        return True

    # -- mutations -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _submit(self, op_and_args: tuple | None, req=None) -> asyncio.Future:
        seq = self._next_seq()
        if req is not None:
            command = translate.to_command(req, self.sid, seq, self.node.dedup)
        else:
            command = (op_and_args[0], self.sid, seq, *op_and_args[1:])
        return self.node.commit.submit(command)

    def _pipeline(self, op_and_args: tuple | None, fixed_reply, req=None) -> None:
        """Submit now; the reply is written in order by ``flush``."""
        self.inflight.append((self._submit(op_and_args, req), fixed_reply, None))

    async def flush(self, bounded: bool = True) -> None:
        """Write the replies of every queued command, in order (``bounded``: within the output
        bound, waiting for the client to take them)."""
        if not self.inflight and not self.owed:
            return
        while self.inflight:
            fut, fixed, reserve = self.inflight[0]
            result = await fut
            self.inflight.popleft()
            if fixed is _RESERVE:
                if result[0] == "RESERVED" and not await self._still_ours():
                    raise ConnectionError("session resumed elsewhere")
                self._settle_reserve(reserve, result)
            else:
                if self.owed:
                    await self._reserve_owed(bounded)
                if result[0] == "RESERVED":
                    self.worker = True  # reserve-job makes a worker only when it reserves (1.12)
                    if not await self._still_ours():
                        raise ConnectionError("session resumed elsewhere")
                elif result[0] == "SESSION" or result[0] == "RESUMED":
                    self.resumable = True
                if fixed is not None:
                    self._write(fixed)
                else:
                    self.outbox.write(translate.to_wire(result))
            if result[0] == "GONE":
                raise ConnectionError("session dropped by the cluster")
            if bounded and self.outbox.over_high_water():
                await self.wait_output_taken()  # pipelined reserves of big jobs, for one
        if self.owed:
            await self._reserve_owed(bounded)
        self.speculating = False
        # Send now: if the client has gone, its reset is in the kernel before we parse again.
        self.outbox.send_now()

    async def _ensure_open(self) -> None:
        if self.unopened:
            return
        try:
            await self.opened
        except OutcomeUnknown:
            if self.node.config.clustered or not self.node.raft.journal_failed():
                raise
            # A lone node whose journal failed refuses every change, this session's OPEN too,
            # and stays up for reads, as beanstalkd does without its binlog: its client reads
            # what a fresh session would (it uses and watches "default").
            self.unopened = True

    async def _rejected(self, req: p.Rejected) -> bool:
        self.node.count_name(req.counted)
        if req.producer:
            self.producer = True
        if req.burns_id:
            self._pipeline((Op.BURN_ID,), req.reply)
        else:
            await self.flush()
            self._write(req.reply)
        return True

    def abort(self) -> None:
        """The cluster ended this session (its node was declared dead): hang up on the client."""
        self.eof = True
        self.wakeup.set()
        self.mail.set()
        if self.transport is not None:
            self.transport.close()

    def leave(self) -> None:
        """The node is stopping: answer what was already read, then hang up.

        What arrives from now on is dropped. The hang-up is not the client's close: a session that has an id
        (``session-id``) stays open in the cluster, holding its jobs, so that its client can
        resume it on another node within the grace; any other session is closed (its jobs
        released) as when its client quits.
        """
        self.leaving = True
        self.eof = True
        self.wakeup.set()
        self.mail.set()

    # -- output and shutdown ---------------------------------------------------------------

    def _write(self, reply) -> None:
        """Queue a reply; every reply queued in one loop iteration leaves in one send."""
        self.outbox.write(p.encode(reply))

    async def _finish(self) -> None:
        # The connection stops counting in stats at once, as in beanstalkd; its session's end
        # (releasing its jobs) is committed right after.
        self.finishing = True  # what arrives while the CLOSE commits is never parsed either
        self._parsed_all()  # what it did not parse never will be
        self.node.connection_closed(self)
        try:
            if self.leaving and self._resumable():
                await asyncio.shield(self.flush(bounded=False))
            else:
                await asyncio.shield(self._close_session())
        except Exception:
            log.debug("closing session %x", self.sid, exc_info=True)
        finally:
            self.outbox.send_now()
            if self.transport is not None:
                self.transport.close()
            self.node.session_closed(self)

    def _resumable(self) -> bool:
        """The session has an id a client can resume it with."""
        def has_token(machine) -> bool:
            session = machine.sessions.get(self.sid)
            return session is not None and session.token is not None

        return self.node.raft.read(has_token)

    async def _close_session(self) -> None:
        try:
            # Not bounded: a client that stopped reading must not hold up the CLOSE that releases
            # its jobs. At most MAX_PIPELINE replies are left.
            await self.flush(bounded=False)
        except Exception:
            self.inflight.clear()
            self.owed.clear()
        if self.node.raft.journal_failed() and not self.node.config.clustered:
            return  # nothing commits here again; its restart (REGISTER) closes the sessions
        if self.opened is None:
            return  # it never authenticated: it has no session to close
        unauthenticated = self.guard is not None and self.guard.principal is None
        if self.parser.in_put_body and not unauthenticated:
            # beanstalkd consumed an id when the header was accepted
            self._submit((Op.BURN_ID,))
        close = (Op.CLOSE, self.sid, self._next_seq())
        try:
            result = await self.node.commit.submit(close)
        except OutcomeUnknown:
            self.node.lingering.keep(close)  # proposed again until it commits (node/closes.py)
            raise
        if result[0] == "TIMED_OUT" and self.mailbox is None:
            self._write(p.TimedOut())


_RESERVE = object()  # marks a pipelined reserve in ``inflight``
