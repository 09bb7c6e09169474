"""Read-only queries: peek, stats, lists, counts, the next timer (reference §4.11, §4.14, §6).

Queries never change observable state. They may drop dead heap entries on the way (the caller
holds the machine's lock), which leaves every answer exactly what a clean heap would give.
Seconds are shown only where the protocol shows them, truncated toward zero like C does.
"""

from __future__ import annotations

from collections.abc import Iterable

from .commands import GONE, NOT_FOUND, SECOND_NS
from .model import DELAYED, RESERVED, Job, Session, Tube
from .state import State


def _seconds(ns: int) -> int:
    """Nanoseconds to whole seconds, truncated toward zero."""
    return ns // SECOND_NS if ns >= 0 else -(-ns // SECOND_NS)


def _now(state: State, now_ns: object) -> int:
    return now_ns if isinstance(now_ns, int) else state.now_ns


# The sid of a connection whose session could not be opened (a lone node whose journal failed
# refuses every change, the OPEN included): it reads what a fresh session would, using and
# watching "default", which always exists.
UNOPENED = object()


def _session(state: State, sid: object) -> Session | None:
    return state.sessions.get(sid) if isinstance(sid, int) else None


def _used_tube(state: State, sid: object) -> Tube | None:
    if sid is UNOPENED:
        return state.tubes["default"]
    session = _session(state, sid)
    return None if session is None else session.used


def _found(job: Job | None) -> tuple:
    return NOT_FOUND if job is None else ("FOUND", job.id, job.body)


def peek(state: State, job_id: int) -> tuple:
    """``peek <id>``: any job, any state, any tube."""
    return _found(state.jobs.get(job_id) if isinstance(job_id, int) else None)


def _peek_used(state: State, sid: object, pick) -> tuple:
    tube = _used_tube(state, sid)
    return GONE if tube is None else _found(pick(tube))


def peek_ready(state: State, sid: int) -> tuple:
    """``peek-ready`` on the session's used tube: minimum (pri, id), pause ignored."""
    return _peek_used(state, sid, state.min_ready)


def peek_delayed(state: State, sid: int) -> tuple:
    """``peek-delayed`` on the session's used tube: minimum (deadline, id)."""
    return _peek_used(state, sid, state.min_delayed)


def peek_buried(state: State, sid: int) -> tuple:
    """``peek-buried`` on the session's used tube: the oldest burial."""
    return _peek_used(state, sid, state.oldest_buried)


def stats_job(state: State, job_id: int, now_ns: int) -> list[tuple[str, int | str]] | None:
    """``stats-job`` fields in 1.12 order, or None when there is no such job."""
    job = state.jobs.get(job_id) if isinstance(job_id, int) else None
    if job is None:
        return None
    now_ns = _now(state, now_ns)
    timed = job.state is RESERVED or job.state is DELAYED
    return [
        ("id", job.id),
        ("tube", job.tube.name),
        ("state", job.state),
        ("pri", job.pri),
        ("age", _seconds(now_ns - job.created_ns)),
        ("delay", _seconds(job.delay_ns)),
        ("ttr", _seconds(job.ttr_ns)),
        ("time-left", _seconds(job.deadline_ns - now_ns) if timed else 0),
        ("file", 0),
        ("reserves", job.reserves),
        ("timeouts", job.timeouts),
        ("releases", job.releases),
        ("buries", job.buries),
        ("kicks", job.kicks),
    ]


def _waiting_elsewhere(state: State, sids: Iterable[int]) -> list[Session]:
    """The open sessions among ``sids`` that the replicated state does not hold as waiting.

    A node knows of reserves that wait outside the log (a ``beanraft.client`` worker's, see
    node/connection.py) and passes their sessions in; each counts once, as a waiting reserve.
    """
    sessions = state.sessions
    found = []
    for sid in sids:
        session = sessions.get(sid)
        if session is not None and not session.wait_ticket:
            found.append(session)
    return found


def stats_tube(state: State, name: str, now_ns: int,
               unlogged_waiters: Iterable[int] = ()) -> list[tuple[str, int | str]] | None:
    """``stats-tube`` fields in 1.12 order, or None when the tube does not exist.

    ``unlogged_waiters``: sessions waiting in a reserve off the log; each one that watches the
    tube counts in ``current-waiting``, as beanstalkd counts a waiting reserve."""
    tube: Tube | None = state.tubes.get(name) if isinstance(name, str) else None
    if tube is None:
        return None
    waiting = len(tube.waiters) + sum(
        1 for session in _waiting_elsewhere(state, unlogged_waiters) if tube in session.watch)
    now_ns = _now(state, now_ns)
    paused = tube.pause_ns > 0
    return [
        ("name", tube.name),
        ("current-jobs-urgent", tube.urgent_ct),
        ("current-jobs-ready", tube.ready_ct),
        ("current-jobs-reserved", tube.reserved_ct),
        ("current-jobs-delayed", tube.delayed_ct),
        ("current-jobs-buried", tube.buried_ct),
        ("total-jobs", tube.total_jobs),
        ("current-using", tube.using_ct),
        ("current-watching", tube.watching_ct),
        ("current-waiting", waiting),
        ("cmd-delete", tube.cmd_delete),
        ("cmd-pause-tube", tube.cmd_pause),
        ("pause", _seconds(tube.pause_ns)),
        ("pause-time-left", _seconds(tube.unpause_at_ns - now_ns) if paused else 0),
    ]


def stats_global(state: State, unlogged_waiters: Iterable[int] = ()) -> dict[str, int]:
    """The replicated part of ``stats``, in 1.12 key order (the node adds the rest).

    ``current-waiting`` counts the sessions waiting in the replicated state and those of
    ``unlogged_waiters`` (reserves waiting off the log) that are not.

    Connection counts (current-connections, -producers, -workers) are the node's own: a node
    opens a session only at a connection's first change, so sessions undercount connections.
    """
    return {
        "current-jobs-urgent": state.urgent_ct,
        "current-jobs-ready": state.ready_ct,
        "current-jobs-reserved": state.reserved_ct,
        "current-jobs-delayed": state.delayed_ct,
        "current-jobs-buried": state.buried_ct,
        "job-timeouts": state.job_timeouts,
        "total-jobs": state.total_jobs,
        "current-tubes": len(state.tubes),
        "current-waiting": len(state.waiting) + len(_waiting_elsewhere(state, unlogged_waiters)),
    }


def list_tubes(state: State) -> list[str]:
    """Tube names in ``list-tubes`` order (creation order, swap-remove on destruction)."""
    return [tube.name for tube in state.tube_list]


def list_tube_used(state: State, sid: int) -> str | None:
    """The session's used tube, or None when the session is not open."""
    tube = _used_tube(state, sid)
    return None if tube is None else tube.name


def list_tubes_watched(state: State, sid: int) -> list[str] | None:
    """The session's watch list in order, or None when the session is not open."""
    if sid is UNOPENED:
        return ["default"]
    session = _session(state, sid)
    return None if session is None else [tube.name for tube in session.watch]


def job_owner(state: State, sid: int, job_id: int) -> tuple[str, bool] | None:
    """The tube of job ``job_id`` and whether session ``sid`` holds its reservation, or None
    when there is no such job (the node's permission checks ask this)."""
    job = state.jobs.get(job_id)
    if job is None:
        return None
    return job.tube.name, job.holder is not None and job.holder.sid == sid


def job_counts(state: State) -> dict[str, int]:
    """How many jobs are in each state."""
    return {"ready": state.ready_ct, "reserved": state.reserved_ct,
            "delayed": state.delayed_ct, "buried": state.buried_ct}


def next_deadline_ns(state: State) -> int | None:
    """When the earliest pending timer fires (delay, TTR, pause end, waiter wake), or None.

    The leader proposes a TICK stamped at (or after) this time.
    """
    entry = state.next_timer()
    return None if entry is None else entry[0]


def is_waiting(state: State, sid: int) -> bool:
    """True while the session waits in reserve for its outcome event."""
    session = _session(state, sid)
    return session is not None and session.wait_ticket != 0


def reserve_would_wait(state: State, sid: int) -> bool:
    """True when a reserve of session ``sid`` could only wait: the session is open, holds no
    job (so no DEADLINE_SOON is due) and no unpaused tube it watches has a ready job."""
    session = _session(state, sid)
    if session is None or session.reserved or sid in state.detached:
        return False
    return not any(tube.ready_ct and not tube.pause_ns for tube in session.watch)
