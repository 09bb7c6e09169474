"""The state-machine side of the admin extensions: purge a tube, move jobs, list a tube's jobs.

Theory of operation
-------------------
``PURGE_TUBE(tube, state)`` deletes, in one command, every job of ``tube`` in ``state`` (ready,
delayed, buried, or all three). Reserved jobs are never purged: a worker holds them and will
delete, release or bury them itself. Jobs are deleted in id order, each exactly as ``delete``
would (the tube's ``cmd-delete`` counts each one), and the tube is destroyed with its last job
if nothing else refers to it. The reply is ``("PURGED", count)``; a tube that does not exist is
NOT_FOUND.

``MOVE_JOB(id, tube)`` puts an unreserved job into another tube in the state it had: a ready
job is ready there (with its priority), a delayed one keeps its deadline, a buried one goes to
the tail of the target's buried list. The job keeps its id, priority, TTR, body, age and
counters; neither tube's ``total-jobs`` changes. The target tube is created if needed, the
source destroyed if nothing refers to it any more. Moving a job to its own tube changes nothing
and answers ``("MOVED", 0)``. A job that does not exist or is reserved is NOT_FOUND.

``MOVE_BURIED(from, to)`` moves every buried job of ``from``, oldest burial first, to the tail
of ``to``'s buried list: ``("MOVED", count)``; NOT_FOUND when ``from`` does not exist.

``list_jobs`` is a read-only query: one page of a tube's jobs in a state, in id order.
"""

from __future__ import annotations

from collections.abc import Callable

from .commands import NOT_FOUND, SECOND_NS, Op
from .model import BURIED, DELAYED, READY, RESERVED, Job, Session, Tube
from .state import State

# What each state word covers: "all" purges every unreserved job, and lists reserved ones too.
_PURGED = {"ready": (READY,), "delayed": (DELAYED,), "buried": (BURIED,),
           "all": (READY, DELAYED, BURIED)}
_LISTED = {**_PURGED, "reserved": (RESERVED,), "all": (READY, DELAYED, BURIED, RESERVED)}


def _live_ids(state: State, heap: list) -> list[int]:
    """Ids of the live entries of a tube's ready or delayed heap (dead ones are skipped)."""
    jobs = state.jobs
    return [job_id for _, job_id, gen in heap
            if job_id in jobs and jobs[job_id].gen == gen]


def tube_job_ids(state: State, tube: Tube, wanted: tuple[str, ...]) -> list[int]:
    """The ids of ``tube``'s jobs in the job states ``wanted``, in id order."""
    ids: list[int] = []
    if READY in wanted:
        ids += _live_ids(state, tube.ready) + _live_ids(state, tube.fresh)
    if DELAYED in wanted:
        ids += _live_ids(state, tube.delayed)
    if BURIED in wanted:
        ids += list(tube.buried)
    if RESERVED in wanted and tube.reserved_ct:
        # Reserved jobs are indexed by session, not by tube: look at every reservation.
        ids += [job_id for session in state.sessions.values() for job_id in session.reserved
                if state.jobs[job_id].tube is tube]
    return sorted(ids)


def purge_tube(state: State, session: Session, name: str, wanted: str) -> tuple:
    """PURGE_TUBE: delete every job of tube ``name`` in ``wanted`` (never reserved ones)."""
    tube = state.tubes.get(name)
    if tube is None:
        return NOT_FOUND
    ids = tube_job_ids(state, tube, _PURGED[wanted])
    for job_id in ids:
        state.delete(state.jobs[job_id])
    return ("PURGED", len(ids))


def move_job(state: State, session: Session, job_id: int, name: str) -> tuple:
    """MOVE_JOB: an unreserved job into tube ``name``, keeping its state."""
    job = state.jobs.get(job_id)
    if job is None or job.state is RESERVED:
        return NOT_FOUND
    if job.tube.name == name:
        return ("MOVED", 0)
    state.move(job, state.ref_tube(name))
    return ("MOVED", 1)


def move_buried(state: State, session: Session, source: str, target: str) -> tuple:
    """MOVE_BURIED: every buried job of ``source``, oldest first, to ``target``'s buried tail."""
    tube = state.tubes.get(source)
    if tube is None:
        return NOT_FOUND
    if source == target or not tube.buried:
        return ("MOVED", 0)
    ids = list(tube.buried)
    destination = state.ref_tube(target)
    for job_id in ids:
        state.move(state.jobs[job_id], destination)
    return ("MOVED", len(ids))


def _record(job: Job, now_ns: int) -> list[tuple[str, int | str]]:
    return [("id", job.id), ("state", job.state), ("pri", job.pri),
            ("age", max(0, now_ns - job.created_ns) // SECOND_NS), ("size", len(job.body))]


def list_jobs(state: State, name: str, wanted: str, offset: int, limit: int,
              now_ns: int) -> list[list[tuple[str, int | str]]] | None:
    """One page of tube ``name``'s jobs in ``wanted``, in id order: ``limit`` records from the
    ``offset``-th, each ``[(id), (state), (pri), (age in s), (size in bytes)]``; None when the
    tube does not exist."""
    tube = state.tubes.get(name) if isinstance(name, str) else None
    if tube is None:
        return None
    if not isinstance(wanted, str) or wanted not in _LISTED or type(offset) is not int \
            or type(limit) is not int or offset < 0 or limit < 0 or type(now_ns) is not int:
        return []
    ids = tube_job_ids(state, tube, _LISTED[wanted])[offset:offset + limit]
    return [_record(state.jobs[job_id], now_ns) for job_id in ids]


HANDLERS: dict[Op, Callable[..., tuple]] = {
    Op.PURGE_TUBE: purge_tube,
    Op.MOVE_JOB: move_job,
    Op.MOVE_BURIED: move_buried,
}
