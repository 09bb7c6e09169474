"""The disk budget of a data directory: what a node keeps free so that a full volume never stops it.

Theory of operation. On a full volume a node must still answer the refused put, commit what
drains the queue (delete, reserve, release, bury, the timer ticks), write a snapshot so that the
journal's space comes back once jobs are deleted, and start again after a crash. Three rules
make room for each:

* **Room for a snapshot.** A snapshot is written beside the old one and replaces it only once it
  is complete, so writing it needs free space for a second copy of the state. New jobs are
  refused (OUT_OF_MEMORY) while the volume's free space is below an estimate of the next
  snapshot (``snapshot_estimate``) plus ``LOW_DISK_BYTES``. Jobs can therefore fill about half
  of a volume, never all of it.
* **Compaction when tight.** While new jobs are refused, the journal drops the records a
  snapshot already covers even when many records remain after them (normally it keeps them
  until a later compaction), and the node asks for a snapshot whenever
  the journal has grown by ``COMPACT_TIGHT_BYTES`` or the state has shrunk by as much since the
  last one, at most every ``COMPACT_TIGHT_S``; deleting jobs thus brings space back within
  seconds, without any outside action. The snapshot writer checks the free space against the
  real size first (``check_room``), so a snapshot that cannot fit is not started. While tight,
  the journal reserves only a little space at a time (``DurableJournal.tight``), so the commands
  that drain the queue do not eat the room a snapshot needs.
* **Room to start.** A reserve file (``RESERVE_NAME``, ``RESERVE_BYTES``) is kept in the data
  directory whenever the volume has room for it. At start-up with less than that much free, it is
  deleted first, so the journal's first entries fit; at run time it is deleted when a journal
  record would not fit otherwise. It is created again once the volume has room. Term and vote
  are written in place (``vote_file.py``) and need no new space at all.
"""

from __future__ import annotations

import errno
import logging
import os
import time

log = logging.getLogger("beanraft.disk")

RESERVE_NAME = "raft.reserve"
RESERVE_BYTES = 2 * 1024 * 1024  # released for start-up writes and for the last journal records
LOW_DISK_BYTES = 4 * 1024 * 1024  # kept free beyond the next snapshot: commands that drain the queue
COMPACT_TIGHT_BYTES = 256 * 1024  # while tight: journal growth or state shrinkage worth a snapshot
COMPACT_TIGHT_S = 1.0
CHECK_S = 0.25
ADMIT_CHECK_S = 0.05  # how old a free-space figure the admission of a new job may use
PENDING_FORGET_S = 2.0  # admitted jobs not applied after this long are taken as never coming
SNAPSHOT_MARGIN_BYTES = 256 * 1024  # left free after a snapshot: the journal's rewrite needs some
# A snapshot stores each job's fields besides its body, and each session; over-estimating only
# refuses jobs a little earlier.
JOB_OVERHEAD_BYTES = 96
SESSION_OVERHEAD_BYTES = 256
FIXED_OVERHEAD_BYTES = 64 * 1024


def free_bytes(directory: str) -> int:
    """Bytes an unprivileged writer may still allocate on ``directory``'s file system."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def snapshot_estimate(machine) -> int:
    """An upper estimate, in bytes, of a snapshot of ``machine`` taken now (O(1))."""
    return (machine.body_bytes + JOB_OVERHEAD_BYTES * len(machine.jobs)
            + SESSION_OVERHEAD_BYTES * len(machine.sessions) + FIXED_OVERHEAD_BYTES)


def job_cost(size: int) -> int:
    """The disk a new ``size``-byte job takes: its journal record and its share of a snapshot."""
    return jobs_cost(1, size)


def jobs_cost(count: int, size: int) -> int:
    """The disk ``count`` new jobs of ``size`` bytes in all take (``job_cost`` of each)."""
    return 2 * (size + count * JOB_OVERHEAD_BYTES)


def release_reserve_for_start(directory: str) -> None:
    """Before the journal opens: delete the reserve file if the volume has less room than it."""
    path = os.path.join(directory, RESERVE_NAME)
    if os.path.exists(path) and free_bytes(directory) < RESERVE_BYTES:
        os.unlink(path)
        log.warning("data volume full at start-up: released the %d-byte disk reserve %s",
                    RESERVE_BYTES, path)


class DiskBudget:
    """Decides, from the tick thread, whether new jobs are refused and when to compact."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self.reserve_path = os.path.join(directory, RESERVE_NAME) if directory else None
        self.tight = False  # new jobs are refused: the next snapshot would not fit with them
        self.free = 0
        self.estimate = 0
        self._checked_at = 0.0
        self._compacted_at = 0.0
        self._rewritten_at = 0.0
        self._snapshot_estimate = 0  # the estimate when the last snapshot was asked for
        self._journal_floor = 0  # the journal's smallest size since then
        self._machine = None
        self._admit_free = 0  # free space as last read for admissions (event loop only)
        self._admit_read_at = 0.0
        # Costs of the jobs admitted here (event loop) and of every job applied (tick thread):
        # their difference is what the free space and the estimate do not show yet.
        self._admitted_cost = 0
        self._applied_cost = 0
        self._applied_at = 0.0

    def admit(self, machine, size: int) -> bool:
        """May a new job of ``size`` bytes be accepted? Called by the event loop for each one.

        Counts the job twice (its journal record and its share of the next snapshot), and also
        the jobs admitted but not applied yet, which the free space does not show yet.
        """
        if self.directory is None:
            return True
        if self.tight:
            return False
        now = time.monotonic()
        applied = self._applied_cost
        if self._admitted_cost < applied or now - self._applied_at > PENDING_FORGET_S:
            self._admitted_cost = applied  # other nodes' jobs, or ours that never committed
        if now - self._admit_read_at >= ADMIT_CHECK_S:
            try:
                self._admit_free = free_bytes(self.directory)
            except OSError:
                return True  # no figure: the journal's own reserve still stops a real overflow
            self._admit_read_at = now
        cost = job_cost(size)
        headroom = self._admit_free - snapshot_estimate(machine) - LOW_DISK_BYTES
        if headroom - (self._admitted_cost - applied) < cost:
            return False
        self._admitted_cost += cost
        return True

    def applied(self, cost: int) -> None:
        """Jobs of total ``cost`` (``jobs_cost``) were applied: the tick thread, after each entry."""
        if cost:
            self._applied_cost += cost
            self._applied_at = time.monotonic()

    def release_reserve(self) -> bool:
        """Delete the reserve file to make room for a journal record; True if it existed."""
        if self.reserve_path is None:
            return False
        try:
            os.unlink(self.reserve_path)
        except FileNotFoundError:
            return False
        log.warning("data volume full: released the %d-byte disk reserve", RESERVE_BYTES)
        return True

    def check(self, machine, journal_bytes: int) -> bool:
        """Refresh ``tight`` (every CHECK_S); return True when a snapshot should be written now."""
        if self.directory is None:
            return False
        now = time.monotonic()
        if now - self._checked_at < CHECK_S:
            return False
        self._checked_at = now
        try:
            self.free = free_bytes(self.directory)
        except OSError:
            return False
        self.estimate = snapshot_estimate(machine)
        tight = self.free < self.estimate + LOW_DISK_BYTES
        if tight != self.tight:
            if tight:
                log.error("data volume nearly full (%d bytes free, the next snapshot needs about "
                          "%d): refusing new jobs", self.free, self.estimate)
            else:
                log.info("data volume has room again (%d bytes free): accepting new jobs", self.free)
            self.tight = tight
            self._snapshot_estimate = self.estimate  # shrinking from here means jobs were deleted
        if not tight:
            self._journal_floor = 0
            self._keep_reserve()
            return False
        self._journal_floor = min(self._journal_floor, journal_bytes)
        return self._compaction_due(now, journal_bytes)

    def _compaction_due(self, now: float, journal_bytes: int) -> bool:
        if now - self._compacted_at < COMPACT_TIGHT_S or self.free < self.estimate:
            return False
        grown = journal_bytes - self._journal_floor >= COMPACT_TIGHT_BYTES
        shrunk = self._snapshot_estimate - self.estimate >= COMPACT_TIGHT_BYTES
        if not (grown or shrunk):
            return False
        self._compacted_at = now
        self._snapshot_estimate = self.estimate
        self._journal_floor = journal_bytes  # falls once the snapshot has replaced the journal
        return True

    def room_to_rewrite(self, stale_bytes: int, kept_bytes: int) -> bool:
        """While tight: is a journal prefix of ``stale_bytes`` worth dropping, and can the
        ``kept_bytes`` after it be copied into a new file? (Checked against the last free figure.)"""
        now = time.monotonic()
        if (stale_bytes < COMPACT_TIGHT_BYTES or self.free < kept_bytes + SNAPSHOT_MARGIN_BYTES
                or now - self._rewritten_at < COMPACT_TIGHT_S):
            return False
        self._rewritten_at = now
        return True

    def check_room(self, size: int) -> None:
        """Raise ENOSPC (before anything is written) if a ``size``-byte snapshot cannot fit."""
        if self.directory is None:
            return
        free = free_bytes(self.directory)
        if free < size + SNAPSHOT_MARGIN_BYTES:
            raise OSError(errno.ENOSPC, f"no room for a {size}-byte snapshot ({free} bytes free)")

    def _keep_reserve(self) -> None:
        if self.reserve_path is None or os.path.exists(self.reserve_path):
            return
        if self.free < self.estimate + LOW_DISK_BYTES + RESERVE_BYTES:
            return
        fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            fd = -1
            os.unlink(self.reserve_path)
            log.warning("cannot create the disk reserve %s: %s", self.reserve_path, exc)
        finally:
            if fd >= 0:
                os.close(fd)

