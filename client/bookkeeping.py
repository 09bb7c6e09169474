"""Reply bookkeeping: what a reply changes besides the result of its op.

Theory of operation. ``Bookkeeping`` is the part of ``Core`` (a mixin: it reads and changes the
core's state, listed below) that keeps the client's own record in step with the replies:

* the jobs the client holds (``held``, a ``HeldJobs``): a RESERVED adds its job, a delete,
  release or bury (or their NOT_FOUND) removes it, a touch refreshes it (its NOT_FOUND removes
  it); after a failover it tells the jobs of the resumed session that the application knows from
  those whose RESERVED was lost (``Failover._resume``), and the async client reconnects while it
  is not empty, so that the session is resumed within the cluster's grace;
* the tubes the application chose (``used``, ``watched``), which a failover restores;
* the ops whose caller gave up after they were sent (``Core.cancel``): the reply is dropped and
  its effect stands, but a job such an op reserved is given back -- ``stats-job`` for its
  priority (which RESERVED does not carry), then ``release <id> <pri> 0`` -- so no worker
  waits out its TTR for it.

A reply that arrives whole but cannot be converted fails its op alone (``_finish_with``).

The bound on ``held``. A job whose TTR ran out on the server while the application neither
deleted nor released it (a worker that drops jobs) gets no reply that would tell the client, so
a long-running worker would remember it for ever. Nor can the client forget it when its TTR has
passed: RESERVED does not carry the TTR, and learning it would cost a ``stats-job`` per reserve.
So ``held`` is bounded by count: it remembers the ``MAX_HELD_JOBS`` jobs reserved or touched
last, and forgets the one reserved or touched longest ago when a new one comes. A failover also
trims it to the jobs the resumed session holds. A job forgotten while the application still
holds it costs, after a failover, one extra delivery: the resumed session lists it, the client
takes it for one whose RESERVED was lost and hands it to the next ``reserve`` (at least once, as
the delivery guarantee allows; the second delete of the job raises ``NotFoundError``). That
takes more than ``MAX_HELD_JOBS`` jobs held at once with the oldest never touched -- a worker
that does so can touch its jobs, which refreshes them here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any, Iterable, Iterator

from beanraft import protocol as p
from beanraft.protocol.client import release_bytes

from .errors import Error
from .ops import Op, parse_yaml_mapping

log = logging.getLogger("beanraft.client")

# 10,000 remembered jobs take about 1 MB; a worker holds far fewer at once (a worker that
# processes one job at a time holds one, a batch worker as many as a batch).
MAX_HELD_JOBS = 10_000


class HeldJobs:
    """The jobs the client knows it holds, the most recently reserved or touched last; at most
    ``max_jobs`` of them (module docstring)."""

    __slots__ = ("max_jobs", "_jobs")

    def __init__(self, max_jobs: int = MAX_HELD_JOBS) -> None:
        assert max_jobs >= 1
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[int, None] = OrderedDict()

    def add(self, job_id: int) -> None:
        """``job_id`` was reserved or touched now: remember it, forgetting the job reserved or
        touched longest ago if that makes one too many."""
        jobs = self._jobs
        if job_id in jobs:
            jobs.move_to_end(job_id)
            return
        jobs[job_id] = None
        if len(jobs) > self.max_jobs:
            jobs.popitem(last=False)

    def discard(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)

    def keep_only(self, job_ids: Iterable[int]) -> None:
        """Forget every job not in ``job_ids`` (what a resumed session holds)."""
        keep = set(job_ids)
        for job_id in [job for job in self._jobs if job not in keep]:
            del self._jobs[job_id]

    def clear(self) -> None:
        self._jobs.clear()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[int]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


class Bookkeeping:
    """The part of ``Core`` that tracks held jobs and tubes and gives back cancelled jobs."""

    # The core's state this part reads and changes (``Core.__init__`` sets it).
    held: HeldJobs
    used: str
    watched: list[str]
    sent: deque

    @staticmethod
    def _finish_with(op: Op, reply: Any) -> None:
        """Complete ``op`` with its reply converted; a conversion that fails (a body that does
        not decode with the client's encoding, a malformed YAML list) fails this op alone:
        the reply was read whole, so the connection and the other ops are unaffected."""
        try:
            result = op.convert(reply)
        except Exception as error:  # noqa: BLE001 - handed to the caller, who sees it raised
            op.finish(error=error)
        else:
            op.finish(result=result)

    def _on_cancelled_reply(self, op: Op, reply: Any, now: float) -> None:
        """The reply to an op whose caller gave up after it was sent: its effect stands and is
        tracked (a use, a delete), but a job it reserved goes back to the tube."""
        if isinstance(reply, p.Reserved):
            self._give_back(op, reply.job_id, now)
            return
        self._track(op, reply)
        op.finish(error=cancelled_error())

    def _give_back(self, op: Op, job_id: int, now: float) -> None:
        # release needs the job's priority, which RESERVED does not carry: read it first.
        # Nobody else can change the priority of a job reserved to us meanwhile.
        op.job_id = job_id
        self.held.discard(job_id)
        self._send(p.StatsJob(job_id), "give-back", op, now)

    def _on_give_back_reply(self, purpose: str, op: Op, reply: Any, now: float) -> None:
        if purpose == "give-back" and isinstance(reply, p.Ok):
            priority = _priority_of(reply)
            if priority is not None:
                self._send(release_bytes(op.job_id, priority, 0), "given-back", op, now)
                return
        if not isinstance(reply, (p.Released, p.NotFound)):  # NOT_FOUND: its TTR ran out
            log.warning("could not give back job %d, reserved for a cancelled call (%r): it "
                        "returns to its tube when its TTR runs out", op.job_id, reply)
        op.finish(error=cancelled_error())

    def _track(self, op: Op, reply: Any) -> None:
        """Keep the held jobs and the chosen tubes in step with a reply."""
        if isinstance(reply, p.Reserved):
            self.held.add(reply.job_id)
        elif op.kind in ("delete", "release", "bury"):
            if isinstance(reply, (p.Deleted, p.Released, p.Buried, p.NotFound)):
                self.held.discard(op.job_id)
        elif op.kind == "touch":
            # TOUCHED: the session holds the job (again, if it was forgotten); NOT_FOUND: it no
            # longer does (its TTR ran out), the one reply that tells a dropped job's fate.
            if isinstance(reply, p.Touched):
                self.held.add(op.job_id)
            elif isinstance(reply, p.NotFound):
                self.held.discard(op.job_id)
        elif op.kind == "use" and isinstance(reply, p.Using):
            self.used = reply.tube
        elif op.kind == "watch" and isinstance(reply, p.Watching):
            if op.request.tube not in self.watched:
                self.watched.append(op.request.tube)
        elif op.kind == "ignore" and isinstance(reply, p.Watching):
            if op.request.tube in self.watched:
                self.watched.remove(op.request.tube)


def cancelled_error() -> Error:
    """The outcome of an op whose caller gave up (nobody reads it: the caller was cancelled)."""
    return Error("the call was cancelled")


def _priority_of(stats_job: Any) -> int | None:
    """``pri`` from a stats-job reply, or None if the reply does not have it."""
    try:
        priority = parse_yaml_mapping(stats_job.data).get("pri")
    except Exception:  # noqa: BLE001 - a malformed reply: the job is not given back
        return None
    return priority if isinstance(priority, int) else None
