"""A lone node's Raft ticks on its event loop, and the fsync of its batches beside the loop.

Theory of operation. With no peer, nothing but our own loop gives pysyncobj work: a tick thread
would only add a hand-off each way per batch (propose, then the result back) and a second thread
contending for the GIL. So a lone node ticks on the loop: every tick_s from a timer, and at once
when pysyncobj's pipe is notified (an entry appended, a read index asked, from any thread).

* A batch proposed (``bridge.submit``) is appended and committed from within the proposal
  (``_commit_inline``). A batch of a few commands is fsynced there too and applied before the
  proposer even awaits; the tick that follows waits for the loop's next turn, after the replies
  are written. A bigger one (``overlap``) is fsynced by the sync helper process
  (``background_sync.py``) while the loop reads and parses the next requests, and committed and
  applied when the helper answers (``_on_background_synced``): only what that fsync covered.
* A tick first waits for the sync under way and commits it (``_settle_background_sync``): a tick
  may rewrite or close the journal's file.
* Every batch proposed here ends committed or failed with the journal, never dropped
  (``keeps_proposals``): group commit waits for a slow disk instead of proposing it again.
* The first time the transport knows another node (a learner or a member added, which a tick on
  the loop applies) the ticks move to the tick thread for good (``_leave_loop``): from then on
  peers' sockets, their timing and elections must not wait for the loop.
"""

from __future__ import annotations

import logging
import os

from . import seam

log = logging.getLogger("beanraft.raft")

LOOP_TICKS_PER_TURN = 8  # a lone node's ticks in one turn of the loop while an entry is pending


class LoneLoop:
    """The lone node's ticking on the loop (a mixin of RaftNode: it uses the node's attributes)."""

    def _on_loop_timer(self) -> None:
        self._loop_timer = None
        if self._stopping or not self._on_loop:
            return
        self._loop_tick()
        if self._on_loop and not self._stopping:
            self._loop_timer = self.loop.call_later(self.config.timing.tick_s, self._on_loop_timer)

    def _on_wake(self) -> None:
        """The loop saw pysyncobj's pipe readable, or a batch was just proposed: tick now."""
        if self._stopping or not self._on_loop or self._in_tick:
            return
        try:
            while os.read(self._wake_fd, 1024):
                pass
        except BlockingIOError:
            pass
        self._loop_tick()

    def _commit_inline(self, overlap: bool = False) -> None:
        """bridge.submit on a lone node, right after it proposed: append what is queued, make
        it durable as the journal's policy says, then commit and apply it. Under the default
        policy the fdatasync runs in a helper process (``background_sync.py``) while the loop
        reads and parses the next requests, and the batch is committed when the loop hears it
        returned (``_on_background_synced``); otherwise all of it happens before the proposer
        awaits, and the rest of a tick (its timers, the callbacks, a poll of the raft port)
        follows at the loop's next turn, after the replies are written; so does everything if
        this node is not a lone leader after all."""
        self._in_tick = True
        background = self._background.busy  # the sync under way is followed by one for this
        try:
            seam.append_queued(self._sync)
            if overlap and not background and self._journal.sync_wanted():
                background = self._start_background_sync()
            if not background:
                self._journal.sync_for_ack()
                seam.commit_alone(self._sync)
        except Exception:  # the tick that follows meets it again, and logs it
            log.debug("inline commit failed", exc_info=True)
        finally:
            self._in_tick = False
        if self._outbox:
            self._drain()
        if not background:
            self._queue_tick()

    @property
    def keeps_proposals(self) -> bool:
        """Does every batch proposed here end committed or failed, never dropped? True for a
        lone node ticking on its loop: its log is its own and no leader can lose it. Group
        commit then waits for the outcome (a slow disk's fsync) instead of proposing again."""
        return self._on_loop

    def _queue_tick(self) -> None:
        if not self._tick_queued:
            self._tick_queued = True
            self.loop.call_soon(self._queued_tick)

    def _start_background_sync(self) -> bool:
        """Hand the fdatasync of what is written to the helper; False if it cannot take it."""
        fd, writes = self._journal.begin_sync()
        return self._background.start(fd, writes, self._journal[-1][1])

    def _on_background_synced(self) -> None:
        """The loop hears that the journal's fdatasync returned: commit what it made durable."""
        if self._in_tick or not self._background.done():
            return  # a tick took the outcome already (or is about to)
        self._in_tick = True
        try:
            self._finish_background_sync(go_on=self._on_loop and not self._stopping)
        finally:
            self._in_tick = False
        if self._outbox:
            self._drain()

    def _finish_background_sync(self, go_on: bool) -> None:
        """Commit and apply what the returned sync made durable; with ``go_on``, start the
        sync of what was appended since (a tick, which syncs on its own, passes False)."""
        writes, upto, error, lost = self._background.finish()
        try:
            if lost:
                self._journal.sync()  # the helper died: what it synced, if anything, is unknown
            else:
                self._journal.end_sync(writes, error)
            seam.commit_alone(self._sync, upto)
            if go_on and self._journal.sync_wanted() and self._start_background_sync():
                return
        except Exception:  # the journal failed (told through on_failed), or the commit did
            log.debug("commit after a background sync failed", exc_info=True)
        if go_on and self._single_node_busy():
            self._queue_tick()  # something is appended and not committed: a tick sees to it

    def _settle_background_sync(self) -> None:
        """Wait for a sync under way and commit what it made durable (before a tick, which
        may rewrite or close the journal's file, and at stop)."""
        if self._background.busy:
            self._background.wait()
            self._finish_background_sync(go_on=False)

    def _queued_tick(self) -> None:
        self._tick_queued = False
        if self._on_loop and not self._stopping and not self._in_tick:
            self._loop_tick()

    def _loop_tick(self) -> None:
        self._in_tick = True
        try:
            self._settle_background_sync()
            for _ in range(LOOP_TICKS_PER_TURN):
                if not self._tick(0.0) or not self._single_node_busy():
                    break
        finally:
            self._in_tick = False
        if self._outbox:
            self._drain()
        if seam.knows_other_nodes(self._sync):
            self._leave_loop()
            log.info("talking to another node: Raft ticks move to their own thread")
            if self._single:
                self._wake_on_append()
            if not self._stopping:
                self._thread.start()

    def _leave_loop(self) -> None:
        """Stop ticking on the loop (idempotent; from the loop's thread)."""
        if not self._on_loop:
            return
        self._on_loop = False
        self._settle_background_sync()
        self._background.close()
        if self._loop_timer is not None:
            self._loop_timer.cancel()
            self._loop_timer = None
        if self._wake_fd >= 0 and not self.loop.is_closed():
            self.loop.remove_reader(self._wake_fd)
        self._wake_fd = -1

    def _single_node_busy(self) -> bool:
        raft_log = self._journal
        commit = self._sync.raftCommitIndex
        return raft_log[-1][1] > commit or commit > self._sync.raftLastApplied
