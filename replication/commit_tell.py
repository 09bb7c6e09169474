"""When the leader tells its followers a new commit index.

Theory of operation. A follower needs the index at once when one of its clients waits for the
entry: a batch it forwarded, a session of its waiting for a job (an event), or a read of its
waiting for a read index. Then the leader sends it as it starts applying the entries itself
(``_tell_commit_first``), so that they apply at the same time (pysyncobj sends it after its own
apply). Otherwise, as for the leader's own puts one at a time, the index goes with the next round
of entries or heartbeat, and at the latest after ``COMMIT_TELL_WITHIN_S``: a dedicated round cost
two messages, and each follower a tick, per commit, on the cores the three nodes share.

glue's round filter (``_send_only_what_is_new``) asks ``_commit_news_due`` whether a round may go
out for a new commit index alone; a tick callback (``_tell_commit_when_due``) sends an index held
back once its time has come, and the tick's poll never sleeps past that time (``raft._poll_wait``).
Everything here runs on the tick thread.
"""

from __future__ import annotations

from pysyncobj.monotonic import monotonic  # pysyncobj's clock: every tick-thread deadline is on it

from . import seam

COMMIT_TELL_WITHIN_S = 0.002  # a commit index no follower waits for goes out this late at most


class CommitTelling:
    """The leader's telling of commit indexes (a mixin of RaftNode: it uses the node's attributes:
    ``_commit_sent``, ``_commit_tell_at``, ``_tell_now``, ``_forwarded_upto``)."""

    def _tell_commit_first(self) -> None:
        """Before the leader applies newly committed entries: tell them now if a follower's
        client waits for them."""
        if self._commit_untold() and self._commit_urgent():
            self._tell_commit_now()

    def _commit_untold(self) -> bool:
        """Is this the leader of a cluster whose commit index moved since its latest round?"""
        return not self._single and seam.is_leader(self._sync) \
            and self._sync.raftCommitIndex > self._commit_sent

    def _commit_urgent(self) -> bool:
        """Does a follower need the new commit index at once? A batch it forwarded was appended
        since the last index told, or some session waits for a job (its event may be owed on a
        follower). Reads are told apart (``_tell_commit_for_reads``)."""
        return self._forwarded_upto > self._commit_sent or bool(self.machine.waiting)

    def _tell_commit_now(self) -> None:
        self._tell_now = True
        try:
            seam.send_append_entries(self._sync)
        finally:
            self._tell_now = False

    def _tell_commit_for_reads(self) -> None:
        """Before the leader answers followers' read indexes: they wait until they have applied
        that index, so they must know it is committed."""
        if self._commit_untold():
            self._tell_commit_now()

    def _commit_news_due(self, now: float) -> bool:
        """glue's round filter: may a round go out for a new commit index alone?"""
        if self._tell_now:
            return True
        if self._commit_tell_at is None:
            self._commit_tell_at = now + COMMIT_TELL_WITHIN_S
            return False
        return now >= self._commit_tell_at

    def _tell_commit_when_due(self) -> None:
        """A tick callback: a commit index held back is told once COMMIT_TELL_WITHIN_S passed."""
        at = self._commit_tell_at
        if at is None or monotonic() < at:
            return
        if seam.is_leader(self._sync) and self._sync.raftCommitIndex > self._commit_sent:
            seam.send_append_entries(self._sync)  # the filter clears the deadline
        else:
            self._commit_tell_at = None
