"""Group commit: many clients' commands share one Raft entry, one round trip and one fsync.

Theory of operation. ``submit`` queues a command and returns a future for its reply. While fewer
than ``max_inflight`` batches are in flight, the queue is flushed on the next loop iteration, so a
lone command goes out at once (low latency) and commands that arrive while a batch is being
committed pile up into the next one (high throughput).

A session's commands must apply in the order it sent them (a put after its session's open, a
delete after the put), and a batch can be overtaken by one proposed after it: whenever the
earlier one is dropped before it reaches a leader's log (a forward lost with its peer
connection, a leader that steps down between the two) and is proposed again, and the state
machine does not refuse a seq that comes before one it applied. So **a session has commands in
one batch in flight at most**: a batch takes only the commands of sessions with nothing in
flight, and the others wait in the queue, in their order, for the next batch after their own
(``_take_batch``). Batches of different sessions may then commit in any order, which a client
cannot tell from commands that were concurrent anyway (none has its reply). The node's own
commands (TICK, REGISTER, RULES, DROP_NODE) carry session 0 and take their turns as one session.
A cluster's node keeps two batches in flight (``CLUSTER_INFLIGHT``): while one is being
replicated, the commands of the clients that were answered first go out in the next, instead of
waiting a whole commit for it (measured: docs/reference/performance.md). A lone node keeps one
(``keeps_proposals``): it is bound by its CPU, and a second batch gained nothing there.

A batch whose outcome is unknown (leader change, lost forward, our own per-try timeout) is
proposed again unchanged: every command carries its session's sequence number and the state
machine answers a repeated (session, seq) from its reply cache without re-executing it, so a
retry can never apply a command twice. When ``commit_timeout_s`` passes without a definite
outcome, or at once when this node's journal has failed (docs/reference/disk.md), the futures
fail with :class:`OutcomeUnknown`; the node then closes those clients' connections rather than
guess. A try lasts ``try_timeout_s`` plus one second per
``TRY_BYTES_PER_S`` of entry: proposing a big job again before the first copy could even reach
the followers would only send it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .codec import encode_entry_parts
from .raft import CommitError, RaftNode

log = logging.getLogger("beanraft.batcher")

TRY_BYTES_PER_S = 8 << 20  # the slowest replication rate at which a try is still waited out
READ_TRY_S = 0.5  # a read index not confirmed this soon is asked for again (lost, new leader)
APPLY_POLL_S = 0.02  # pysyncobj's no-ops are applied without telling us: look again this often
# What a command weighs against ``max_batch_bytes``: its last argument when that is bytes or a
# string (the body of a put, a put-key or an import), plus this much for the rest, which is small
# and bounded (ids, a tube name of at most 200 bytes, a key). Counted as commands are queued, so
# a batch is taken in O(1).
COMMAND_BYTES = 256
RETRY_FIRST_S = 0.01  # the pause after a batch's first failed try; it doubles after each
RETRY_MAX_S = 0.05  # the longest pause between two tries of a batch
# A lone node syncs a batch of at least this many commands while its loop goes on
# (lone_loop.py, background_sync.py); a smaller one is synced in the loop: a handful of clients
# one command at a time would only wait for the hand-over (~0.1 ms measured) with nothing to
# overlap it with.
OVERLAP_COMMANDS = 4
CLUSTER_INFLIGHT = 2  # batches a cluster's node keeps in flight (module doc)


class OutcomeUnknown(Exception):
    """The command may or may not have been committed."""


class GroupCommit:
    """Batches commands into Raft entries and resolves each command's future with its reply."""

    def __init__(self, raft: RaftNode, *, max_batch: int = 4096, max_batch_bytes: int = 1 << 20,
                 max_inflight: int = 1, try_timeout_s: float = 2.0, commit_timeout_s: float = 10.0):
        try_timeout_s = min(try_timeout_s, commit_timeout_s)
        self.raft = raft
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_inflight = max_inflight
        self.try_timeout_s = try_timeout_s
        self.commit_timeout_s = commit_timeout_s
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._pending_bytes = 0  # the weight of ``_pending`` (see COMMAND_BYTES)
        self._inflight = 0
        self._busy: set[int] = set()  # sessions with commands in a batch in flight
        self._scheduled = False
        self._loop = raft.loop
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0
        self.commands = 0
        self.on_latency = None  # optional callable(seconds) per committed batch (metrics)

    def submit(self, command: tuple) -> asyncio.Future:
        """Queue one state-machine command; the future resolves to its reply tuple."""
        fut = self._loop.create_future()
        self._pending.append((command, fut))
        self._pending_bytes += _weight(command)
        if not self._scheduled:
            self._schedule()
        return fut

    def _limit(self) -> int:
        """Batches that may be in flight now: one on a node whose proposals never get lost."""
        return 1 if self.raft.keeps_proposals else self.max_inflight

    def _schedule(self) -> None:
        if not self._scheduled and self._pending and self._inflight < self._limit():
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def flush_now(self) -> None:
        """Propose what is queued now instead of at the loop's next turn: for a caller that
        knows nothing else will be submitted in this turn (``ClientConnection``)."""
        if self._scheduled:
            self._flush()  # the handle call_soon queued finds nothing left, or what came since

    def _flush(self) -> None:
        self._scheduled = False
        limit = self._limit()
        while self._pending and self._inflight < limit:
            batch = self._take_batch()
            if not batch:
                return  # every session queued has a batch in flight: the next is theirs
            self._inflight += 1
            commands = [c for c, _f in batch]
            started = time.monotonic()
            # The first try is proposed now rather than in a task a turn of the loop later; a
            # lone node commits it within submit (lone_loop.py), and then no task is needed at all.
            try:
                first = self._try(commands)
            except Exception:  # raised again, and handled, by the task's own try
                first = None
            if first is None:
                self._start_commit(batch, commands, started, None)
            elif not first[0].done():
                self._await_first(batch, commands, started, first)
            elif self._committed(first[0], commands):
                self._settle(batch, first[0].result(), started)
                self._finish(batch)
            else:
                self._start_commit(batch, commands, started, None, failed=True)

    def _start_commit(self, batch: list[tuple[tuple, asyncio.Future]], commands: list[tuple],
                      started: float, first: tuple[asyncio.Future, float] | None,
                      failed: bool = False) -> None:
        task = self._loop.create_task(self._commit(batch, commands, started, first, failed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _await_first(self, batch: list[tuple[tuple, asyncio.Future]], commands: list[tuple],
                     started: float, first: tuple[asyncio.Future, float]) -> None:
        """Wait for the first try from its future's own callback, with a timer for its timeout.

        Most batches commit at the first try; a task that awaited ``wait_for`` cost them three
        more turns of the loop (the task's first step, ``wait_for``'s own waiter, the task's
        wake-up) before the replies could be written. A try that fails or times out goes on
        in ``_commit``, after the pause a failed try takes there.
        """
        committed, try_s = first

        def on_done(fut: asyncio.Future) -> None:
            timer.cancel()
            if self._committed(fut, commands):
                self._settle(batch, fut.result(), started)
                self._finish(batch)
            else:
                self._start_commit(batch, commands, started, None, failed=True)

        def on_timeout() -> None:
            committed.remove_done_callback(on_done)
            # As wait_for did: a late outcome of this try is dropped (bridge._drain skips a done
            # future), never left unretrieved for asyncio to report.
            committed.cancel()
            log.debug("batch not committed within its first try")
            self._start_commit(batch, commands, started, None, failed=True)

        committed.add_done_callback(on_done)
        timer = self._loop.call_later(try_s, on_timeout)

    @staticmethod
    def _committed(fut: asyncio.Future, commands: list[tuple]) -> bool:
        """Did this done try commit the batch (a reply for every command)?"""
        if fut.cancelled():
            return False
        exc = fut.exception()
        if exc is not None:
            log.debug("batch not committed yet: %r", exc)
            return False
        replies = fut.result()
        if len(replies) != len(commands):
            log.error("batch of %d got %d replies", len(commands), len(replies))
            return False
        return True

    def _take_batch(self) -> list[tuple[tuple, asyncio.Future]]:
        """The next batch: queued commands in order, up to ``max_batch`` and
        ``max_batch_bytes``, of sessions with no command in flight; they join ``_busy``."""
        pending, busy = self._pending, self._busy
        if (not busy and len(pending) <= self.max_batch
                and self._pending_bytes <= self.max_batch_bytes):
            self._pending, self._pending_bytes = [], 0  # the usual case: everything queued
            for command, _fut in pending:
                busy.add(command[1])
            return pending
        batch, kept, size = [], [], 0
        full = False
        for item in pending:
            if full or item[0][1] in busy:
                kept.append(item)  # its turn comes after the batch in flight that holds its session
                continue
            batch.append(item)
            size += _weight(item[0])
            if len(batch) >= self.max_batch or size >= self.max_batch_bytes:
                full = True
        for command, _fut in batch:
            busy.add(command[1])
        self._pending = kept
        self._pending_bytes -= size
        return batch

    def _try(self, commands: list[tuple]) -> tuple[asyncio.Future, float]:
        """Propose the batch once: its future and how long this try may take."""
        parts = encode_entry_parts(self.raft.cluster_now_ns(), commands)  # the leader re-stamps it
        try_s = self.try_timeout_s + sum(len(p) for p in parts) / TRY_BYTES_PER_S
        if self.raft.keeps_proposals:
            try_s = max(try_s, self.commit_timeout_s)  # only a failed journal or a slow disk
        return self.raft.submit(parts, overlap=len(commands) >= OVERLAP_COMMANDS), try_s

    def _settle(self, batch: list[tuple[tuple, asyncio.Future]], replies: list,
                started: float) -> None:
        """The batch committed: note how long it took and give each command its reply."""
        if self.on_latency is not None:
            self.on_latency(time.monotonic() - started)
        for (_c, fut), reply in zip(batch, replies):
            if not fut.done():
                fut.set_result(reply)

    def _finish(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        """The batch is out of flight, committed or not: count it and take the next one."""
        busy = self._busy
        for command, _fut in batch:
            busy.discard(command[1])
        self._inflight -= 1
        self.batches += 1
        self.commands += len(batch)
        self._schedule()

    async def _commit(self, batch: list[tuple[tuple, asyncio.Future]], commands: list[tuple],
                      started: float, first: tuple[asyncio.Future, float] | None,
                      failed: bool = False) -> None:
        try:
            replies = await self._propose(commands, started, first, failed)
        except OutcomeUnknown as exc:
            for _c, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
                    # A connection that closes abandons the futures of its queued commands:
                    # their OutcomeUnknown is expected, not an error for asyncio to log when
                    # they are collected. (Marked here, not by a done-callback per command,
                    # which would cost every command a callback on the loop.)
                    fut.exception()
        else:
            self._settle(batch, replies, started)
        finally:
            self._finish(batch)

    async def _propose(self, commands: list[tuple], started: float,
                       first: tuple[asyncio.Future, float] | None, failed: bool = False) -> list:
        """Propose the batch until it commits (``first``: the try ``_flush`` already made;
        ``failed``: a first try failed already, so pause before the next)."""
        deadline = started + self.commit_timeout_s
        delay = RETRY_FIRST_S
        while True:
            if failed:
                if self.raft.journal_failed():  # nothing can commit here until a restart
                    raise OutcomeUnknown("the journal failed")
                if time.monotonic() + delay >= deadline:
                    raise OutcomeUnknown("no commit within %.1f s" % self.commit_timeout_s)
                await asyncio.sleep(delay)
                # Capped low: after a leader change (a hand-over takes milliseconds) the batch
                # goes to the new leader within RETRY_MAX_S, and a refused try costs one small
                # message.
                delay = min(delay * 2, RETRY_MAX_S)
            failed = True
            try:
                committed, try_s = first if first is not None else self._try(commands)
                first = None
                # A lone node commits on the loop, within submit: no need to wait a turn.
                replies = committed.result() if committed.done() else \
                    await asyncio.wait_for(committed, try_s)
                if len(replies) == len(commands):
                    return replies
                log.error("batch of %d got %d replies", len(commands), len(replies))
            except (CommitError, asyncio.TimeoutError) as exc:
                log.debug("batch not committed yet: %r", exc)

    async def barrier(self) -> None:
        """Wait until everything committed before this call is applied here (linearizable read).

        Nothing is written to the log: the leader confirms a read index with one heartbeat
        round (``read_index.py``), and this node waits until it has applied that index. Raises
        :class:`OutcomeUnknown` (the connection is closed) after ``commit_timeout_s``, or at
        once when this node's journal has failed.
        """
        deadline = time.monotonic() + self.commit_timeout_s
        while True:
            if self.raft.journal_failed():  # this node is out of Raft until a restart: stale
                raise OutcomeUnknown("the journal failed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise OutcomeUnknown("no read index within %.1f s" % self.commit_timeout_s)
            try:
                index = await self.raft.read_index(min(READ_TRY_S, left))
                break
            except asyncio.TimeoutError:
                log.debug("read index not confirmed yet; asking again")
        while (seen := self.raft.applied_through()) < index:
            if time.monotonic() >= deadline:
                raise OutcomeUnknown("read index %d not applied within %.1f s"
                                     % (index, self.commit_timeout_s))
            await self.raft.applied_or(seen, APPLY_POLL_S)


def _weight(command: tuple) -> int:
    """What ``command`` weighs against ``max_batch_bytes`` (see COMMAND_BYTES)."""
    last = command[-1]
    return COMMAND_BYTES + (len(last) if isinstance(last, (bytes, str)) else 0)
