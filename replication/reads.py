"""What the node reads of the replicated state and of Raft, from any thread."""

from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

from pysyncobj.monotonic import monotonic

from beanraft.jobs.machine import Machine

from . import seam
from .status import RaftStatus

T = TypeVar("T")


class StateReads:
    """Reads of a RaftNode (a mixin: it uses the node's attributes)."""

    # -- reads (any thread) ----------------------------------------------------------------
    # The node reads replicated state only through these. Each holds the state lock, which the
    # tick thread needs to apply entries: keep what runs under it short.

    def read(self, query: Callable[[Machine], T]) -> T:
        """``query(machine)`` under the state lock, for the read-only queries of ``jobs``."""
        with self.lock:
            return query(self.machine)

    def job_counts(self) -> dict[str, int]:
        """Jobs per state (ready, reserved, delayed, buried); O(1)."""
        with self.lock:
            return self.machine.job_counts()

    def node_epoch(self, node: str) -> int | None:
        """The live epoch the cluster recorded for ``node``, or None."""
        with self.lock:
            return self.machine.node_epoch.get(node)

    def next_deadline_ns(self) -> int | None:
        """When the state machine's earliest timer fires, or None."""
        with self.lock:
            return self.machine.next_deadline_ns()

    def state_digest(self) -> tuple[int, str, dict[str, int]]:
        """(applied index, sha256 hex digest of the whole state, job counts) of one moment.

        Replicas have equal digests at an equal index. Blocking and O(state): the state is
        encoded under the lock (about 0.15 s for 60,000 jobs) and hashed after it; call it from
        a worker thread, never from the event loop or the tick thread.
        """
        with self.lock:
            index = self.applied_index
            counts = self.machine.job_counts()
            state = self.machine.snapshot()
        return index, hashlib.sha256(state).hexdigest(), counts

    # -- status ----------------------------------------------------------------------------

    @property
    def status(self) -> RaftStatus:
        """The latest status copy (refreshed by the tick thread every 100 ms)."""
        return self._status

    def status_age_s(self) -> float:
        """Seconds since the tick thread last refreshed the status (long: it is stalled)."""
        return monotonic() - self._status_at

    def cluster_now_ns(self) -> int:
        """The cluster's time now (what the state machine will be told next), in ns."""
        return max(self.clock.now_ns(), self.machine.now_ns)

    def is_leader(self) -> bool:
        """This node leads (never once its journal failed: it takes no part in Raft then)."""
        return self._journal.failed is None and seam.is_leader(self._sync)

    def journal_failed(self) -> bool:
        """The journal cannot be written any more: nothing new can be acknowledged."""
        return self._journal.failed is not None

    def admit_job(self, size: int) -> bool:
        """May a new ``size``-byte job be accepted, given the room left on the data volume?"""
        return not self._journal.low_space and self._disk.admit(self.machine, size)

    def journal_low_space(self) -> bool:
        """The data volume is nearly full (new jobs are refused): see ``disk.py``."""
        return self._journal.low_space or self._disk.tight
