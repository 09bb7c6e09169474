"""Reply bookkeeping: what a reply changes besides the result of its op.

Theory of operation. ``Bookkeeping`` is the part of ``Core`` (a mixin: it reads and changes the
core's state, listed below) that keeps the client's own record in step with the replies:

* the jobs the client holds (``held``): a RESERVED adds its job, a delete, release or bury (or
  their NOT_FOUND) removes it; a failover restores the resumed session's jobs from it;
* the tubes the application chose (``used``, ``watched``), which a failover restores;
* the ops whose caller gave up after they were sent (``Core.cancel``): the reply is dropped and
  its effect stands, but a job such an op reserved is given back -- ``stats-job`` for its
  priority (which RESERVED does not carry), then ``release <id> <pri> 0`` -- so no worker
  waits out its TTR for it.

A reply that arrives whole but cannot be converted fails its op alone (``_finish_with``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from beanraft import protocol as p
from beanraft.protocol.client import release_bytes

from .errors import Error
from .ops import Op, parse_yaml_mapping

log = logging.getLogger("beanraft.client")


class Bookkeeping:
    """The part of ``Core`` that tracks held jobs and tubes and gives back cancelled jobs."""

    # The core's state this part reads and changes (``Core.__init__`` sets it).
    held: set[int]
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
