"""Sessions waiting in reserve: registering them, serving them jobs, waking them up.

Theory of operation
-------------------
A session that found nothing to reserve and asked to wait gets a ticket from a machine-wide
counter and is entered, under that ticket, in the ``waiters`` of every tube it watches and in
``State.waiting``. Tickets only grow, so the first entry of any of those dicts is the oldest
waiter: the cluster serves waiters oldest first (a deliberate deviation from beanstalkd's
rotating ``ms_take``, which clients cannot observe across connections anyway).

Serving keeps one invariant between commands: no tube is unpaused, has a ready job and has a
waiter at the same time. Only three things can break it — a job becoming ready, a pause ending,
a new waiter — and the first two record the tube in ``State.candidates`` if it has a waiter (a
new waiter is served at once by the reserve itself, so a tube without one cannot match before
then). ``serve`` therefore looks only at candidate tubes: it repeatedly
takes the minimum (pri, id) ready job among candidates that are unpaused and have waiters and
gives it to that tube's oldest waiter. Job ids are unique, so the choice never depends on the
order of the candidates.

Each resolved wait becomes an event ``(sid, reply)`` in ``State.events`` and replaces the
``("WAITING",)`` in the session's reply cache, so a retried RESERVE learns the real outcome.
"""

from __future__ import annotations

from .commands import DEADLINE_SOON, SAFETY_MARGIN_NS, TIMED_OUT
from .model import Job, Session
from .state import State


def deadline_soon(state: State, session: Session) -> bool:
    """True when ``session``'s soonest reservation is inside its safety margin (§5)."""
    job = state.soonest_reserved(session)
    return job is not None and state.now_ns >= job.deadline_ns - SAFETY_MARGIN_NS


def watches_ready_job(session: Session) -> bool:
    """True when a watched tube has a ready job, paused or not (the DEADLINE_SOON guard)."""
    return any(tube.ready_ct for tube in session.watch)


def reservable_job(state: State, session: Session) -> Job | None:
    """The minimum (pri, id) ready job among the unpaused tubes ``session`` watches."""
    best = None
    for tube in session.watch:
        if tube.pause_ns:
            continue
        job = state.min_ready(tube)
        if job is not None and (best is None or (job.pri, job.id) < (best.pri, best.id)):
            best = job
    return best


def wake_time(state: State, session: Session, timeout_ns: int) -> int | None:
    """When a wait starting now must be reconsidered: margin of the soonest job or timeout."""
    times = []
    job = state.soonest_reserved(session)
    if job is not None:
        times.append(job.deadline_ns - SAFETY_MARGIN_NS)
    if timeout_ns >= 0:
        times.append(state.now_ns + timeout_ns)
    return min(times) if times else None


def start_wait(state: State, session: Session, timeout_ns: int, wake_ns: int | None) -> None:
    """Make ``session`` wait ``timeout_ns`` (-1 = forever); reconsider it at ``wake_ns``."""
    until_ns = None if timeout_ns < 0 else state.now_ns + timeout_ns
    enqueue(state, session, wake_ns, until_ns)


def enqueue(state: State, session: Session, wake_ns: int | None, until_ns: int | None) -> None:
    """Enter ``session`` as the newest waiter of every tube it watches and arm its wake-up."""
    ticket = state.next_ticket
    state.next_ticket += 1
    session.wait_ticket = ticket
    session.wait_wake_ns = wake_ns
    session.wait_until_ns = until_ns
    state.waiting[ticket] = session
    for tube in session.watch:
        tube.waiters[ticket] = session
    if wake_ns is not None:
        state.push_wake(wake_ns, ticket, session.sid)


def stop_wait(state: State, session: Session) -> None:
    """Take ``session`` out of every waiting queue (its wake timer dies with its ticket)."""
    ticket = session.wait_ticket
    for tube in session.watch:
        del tube.waiters[ticket]
    del state.waiting[ticket]
    session.wait_ticket = 0
    session.wait_wake_ns = session.wait_until_ns = None
    session.wait_seq = 0


def finish_wait(state: State, session: Session, reply: tuple) -> None:
    """Resolve ``session``'s wait with ``reply``: an event now, the cached reply from now on."""
    if session.wait_seq in session.replies:
        session.replies[session.wait_seq] = reply
    stop_wait(state, session)
    state.events.append((session.sid, reply))


def serve(state: State) -> None:
    """Give ready jobs to waiting sessions until no candidate tube can match (module doc)."""
    candidates = state.candidates
    while candidates:
        best_job = best_tube = None
        for name, tube in list(candidates.items()):
            job = state.min_ready(tube) if tube.waiters and not tube.pause_ns else None
            if job is None:
                del candidates[name]
            elif best_job is None or (job.pri, job.id) < (best_job.pri, best_job.id):
                best_job, best_tube = job, tube
        if best_job is None:
            return
        session = next(iter(best_tube.waiters.values()))
        state.reserve(best_job, session)
        finish_wait(state, session, ("RESERVED", best_job.id, best_job.body))


def wake(state: State, session: Session) -> None:
    """A waiting session's wake time came: DEADLINE_SOON or TIMED_OUT (§5).

    The clock stands at the wake time, which is the sooner of the timeout and one second before
    the soonest deadline; so if the session is not inside its margin, its timeout came. §5 also
    releases the session's reservations whose deadline has passed, but at this time none has:
    each one expires through its own TTR timer, one nanosecond after its deadline.
    """
    finish_wait(state, session, DEADLINE_SOON if deadline_soon(state, session) else TIMED_OUT)
