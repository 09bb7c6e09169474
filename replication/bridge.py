"""The bridge from the Raft thread to the asyncio loop: results, replicated events, read indexes,
listeners.

Results and events cross into the loop through one deque and at most one ``call_soon_threadsafe``
per burst (a plain ``call_soon`` while a lone node ticks on the loop itself, ``lone_loop.py``);
nothing here may raise into pysyncobj.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Callable

from pysyncobj.config import FAIL_REASON

from . import seam
from .entries import call_command

log = logging.getLogger("beanraft.raft")


class CommitError(Exception):
    """pysyncobj gave up on a batch (``reason``: its FAIL_REASON); it may still commit later,
    so the caller proposes it again (the entries are idempotent) until a deadline."""

    def __init__(self, reason: int, message: str | None = None):
        super().__init__(message or f"commit failed: reason {reason}")
        self.reason = reason


class JournalFailed(CommitError):
    """This node's journal failed (``journal.py``): what it proposed can never be acknowledged
    here, and may or may not have reached other nodes."""

    def __init__(self):
        super().__init__(FAIL_REASON.REQUEST_DENIED, "the journal failed")


class LoopBridge:
    """Submission and delivery to the loop (a mixin of RaftNode: it uses the node's attributes)."""

    def submit(self, entry: bytes | tuple[bytes, ...], overlap: bool = False) -> asyncio.Future:
        """Propose one encoded batch (bytes, or its parts in order); the future gets the list of
        replies or a CommitError. The command is built in one copy (``entries.call_command``).
        ``overlap``: on a lone node, the batch is worth the loop's going on while the disk syncs
        it (``background_sync.py``): many commands, so more are likely on their way."""
        fut = self.loop.create_future()
        if self._journal.failed is not None:
            fut.set_exception(JournalFailed())
            return fut
        self._unresolved.add(fut)
        fut.add_done_callback(self._unresolved.discard)  # however it ends: result, timeout
        parts = (entry,) if isinstance(entry, (bytes, bytearray, memoryview)) else tuple(entry)
        command = call_command(self._apply_id, parts)

        def on_result(res, err) -> None:
            self._on_result(fut, res, err)

        # Through the transfer gate: a leader handing over holds new commands (transfer.py).
        if self._on_loop and not self._in_tick and not self._stopping:
            # A lone node commits it now, on this loop (lone_loop.py), and the future is usually done
            # when this returns (the commit drains the outbox): one turn of the loop per batch
            # fewer, and no hand-off at all. The commit follows from here, so pysyncobj's
            # wake-up through its pipe is hushed meanwhile.
            self._hushed = True
            try:
                self.transfers.propose(command, on_result)
            finally:
                self._hushed = False
            self._commit_inline(overlap)
        else:
            self.transfers.propose(command, on_result)
            if self._on_loop:
                self._on_wake()
        return fut

    def _on_result(self, fut, res, err) -> None:
        try:
            self._post(("result", fut, res, err))
        except Exception:
            log.exception("result callback failed")

    def _post(self, item) -> None:
        self._outbox.append(item)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                if self._on_loop and threading.get_ident() == self._loop_thread:
                    self.loop.call_soon(self._drain)
                else:
                    self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _drain(self) -> None:
        self._drain_scheduled = False
        notify = False
        while self._outbox:
            item = self._outbox.popleft()
            if item[0] == "result":
                _, fut, res, err = item
                if fut.done():
                    continue
                if err == FAIL_REASON.SUCCESS and res is not None:
                    fut.set_result(res)
                else:
                    fut.set_exception(CommitError(err))
            elif item[0] == "events":
                self._on_events(item[1])
            elif item[0] == "journal failed":
                self._journal_failed_here()
            elif item[0] == "read":
                fut = self._read_waiters.pop(item[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(item[2])
            else:
                notify = True
        if notify:
            waiters, self._apply_waiters = self._apply_waiters, set()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            for listener in list(self._listeners):
                listener()

    def _journal_failed_here(self) -> None:
        """The journal failed (told once, on the loop). Nothing this node proposed will be
        acknowledged here any more: every batch still waiting ends now, not at its try's
        timeout. The node no longer takes part in Raft, and the tick thread no longer
        refreshes the status: it stops naming a role or a leader it does not hold (pysyncobj
        would go on calling a failed leader the leader). Then the node is told."""
        unresolved, self._unresolved = self._unresolved, set()
        for fut in unresolved:
            if not fut.done():
                fut.set_exception(JournalFailed())
        self._status = dataclasses.replace(self._status, role="follower", leader=None,
                                           leader_commit_index=None)
        if self._last_leader is not None:
            self._last_leader = None
            self.leader_changes += 1
            log.info("leader is now unknown: this node's journal failed")
        try:
            self.on_journal_failed()
        except Exception:
            log.exception("journal failure callback failed")

    async def read_index(self, timeout_s: float) -> int:
        """An index that holds every entry committed before this call (``read_index.py``).

        Raises ``asyncio.TimeoutError`` after ``timeout_s``; the caller may ask again.
        """
        token = self._reads.new_token()
        fut = self._read_waiters[token] = self.loop.create_future()
        self._reads.requests.append(token)
        seam.pipe_notifier(self._sync).notify()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._read_waiters.pop(token, None)

    def applied_through(self) -> int:
        """The index of the last entry this node applied (pysyncobj's own no-ops included)."""
        return max(self.applied_index, self._sync.raftLastApplied)

    async def applied_or(self, seen: int, timeout_s: float) -> None:
        """Return once entries were applied or the role changed, or after ``timeout_s``.

        ``seen`` is ``applied_through()`` as the caller read it before it looked at the state:
        if more was applied since, this returns at once. The tick thread tells a follower's
        loop of an apply at once only while a waiter is registered (``raft._notify_applied``),
        so the waiter is registered first and the index read again after.
        """
        fut = self.loop.create_future()
        self._apply_waiters.add(fut)
        try:
            if self.applied_through() > seen:
                return
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            # Not left behind when it timed out: an idle worker's waits would pile up in the set
            # until something is applied (one every half second per waiting reserve).
            self._apply_waiters.discard(fut)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop after entries were applied or the role changed."""
        self._listeners.append(callback)
