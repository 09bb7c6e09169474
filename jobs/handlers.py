"""One small function per session command, with beanstalkd 1.12's semantics (reference §4).

Each handler receives the state, the open session that issued the command and the already
validated arguments, and returns the reply. Handlers only call the primitives of ``State`` and
``waiting``; serving waiters after the command is the machine's job, except where rules version
2 (machine.py) serves them between the jobs one command makes ready, as beanstalkd 1.12 runs its
queue each time a job becomes ready: ``kick`` and ``close``.
"""

from __future__ import annotations

from collections.abc import Callable

from .commands import (
    BURIED, DEADLINE_SOON, DELETED, KICKED, NOT_FOUND, NOT_IGNORED, OK, PAUSED, RELEASED,
    SECOND_NS, TIMED_OUT, TOUCHED, WAITING, Op,
)
from .model import BURIED as S_BURIED
from .model import DELAYED, RESERVED, Job, Session
from .state import State
from .waiting import deadline_soon, finish_wait, reservable_job, serve, start_wait, stop_wait, \
    wake_time, watches_ready_job


def _held(state: State, session: Session, job_id: int) -> Job | None:
    """The job ``job_id`` if ``session`` holds its reservation."""
    job = state.jobs.get(job_id)
    return job if job is not None and job.holder is session else None


def _unwatch(state: State, session: Session, index: int) -> None:
    """Swap-remove the ``index``-th watched tube, as beanstalkd's watch sets do (§3.2)."""
    watched = session.watch
    tube = watched[index]
    watched[index] = watched[-1]
    watched.pop()
    tube.watching_ct -= 1
    state.release_tube(tube)


def close(state: State, session: Session) -> tuple:
    """CLOSE (§4.18): release held jobs to ready, drop the wait and the tube references."""
    waited = bool(session.wait_ticket)
    if waited:
        stop_wait(state, session)
    # In the order the session reserved them. Rules 2 serves waiters after each job, so a
    # waiting worker gets the job reserved first, as from 1.12; rules 1 served them after the
    # last one, which gave the most urgent.
    each = state.rules >= 2
    for job_id in list(session.reserved):
        state.make_ready(state.jobs[job_id])
        if each:
            serve(state)
    while session.watch:  # beanstalkd empties a watch set by removing its first entry
        _unwatch(state, session, 0)
    session.used.using_ct -= 1
    state.release_tube(session.used)
    if session.token is not None:
        del state.tokens[session.token]
    del state.sessions[session.sid]
    state.detached.pop(session.sid, None)
    return TIMED_OUT if waited else OK


def put(state: State, session: Session, pri: int, delay_ns: int, ttr_ns: int,
        body: bytes) -> tuple:
    """PUT (§4.1): a new job in the used tube, delayed if ``delay_ns`` > 0."""
    job_id = state.next_id
    state.next_id += 1
    tube = session.used
    job = Job(job_id, tube, pri, delay_ns, max(ttr_ns, SECOND_NS), body, state.now_ns)
    state.add_job(job)
    if delay_ns > 0:
        state.make_delayed(job, state.now_ns + delay_ns)
    else:
        state.make_ready(job)
    tube.total_jobs += 1
    state.total_jobs += 1
    return ("INSERTED", job_id)


def burn_id(state: State, session: Session) -> tuple:
    """BURN_ID: consume a job id, as beanstalkd does for a put whose body never arrived."""
    state.next_id += 1
    return OK


def use(state: State, session: Session, name: str) -> tuple:
    """USE (§4.2)."""
    tube = state.ref_tube(name)
    tube.using_ct += 1
    old, session.used = session.used, tube
    old.using_ct -= 1
    state.release_tube(old)
    return ("USING", name)


def watch(state: State, session: Session, name: str) -> tuple:
    """WATCH (§4.9)."""
    if all(tube.name != name for tube in session.watch):
        tube = state.ref_tube(name)
        tube.watching_ct += 1
        session.watch.append(tube)
    return ("WATCHING", len(session.watch))


def ignore(state: State, session: Session, name: str) -> tuple:
    """IGNORE (§4.10): swap-remove from the watch list; never the last watched tube."""
    for index, tube in enumerate(session.watch):
        if tube.name == name:
            if len(session.watch) == 1:
                return NOT_IGNORED
            _unwatch(state, session, index)
            break
    return ("WATCHING", len(session.watch))


def reserve(state: State, session: Session, timeout_ns: int) -> tuple:
    """RESERVE (§4.3); ``timeout_ns`` -1 waits forever, 0 answers at once."""
    if deadline_soon(state, session) and not watches_ready_job(session):
        return DEADLINE_SOON
    job = reservable_job(state, session)
    if job is not None:
        state.reserve(job, session)
        return ("RESERVED", job.id, job.body)
    if timeout_ns == 0:
        # Rules 2, as 1.12: a wait of 0 still looks at the safety margin before its timeout
        # (the first check above passes over a ready job in a paused tube).
        return DEADLINE_SOON if state.rules >= 2 and deadline_soon(state, session) else TIMED_OUT
    wake_ns = wake_time(state, session, timeout_ns)
    if wake_ns is not None and wake_ns <= state.now_ns:
        # Inside the safety margin but a paused watched tube has a ready job: beanstalkd
        # waits and its very next tick answers DEADLINE_SOON, so answer it now.
        return DEADLINE_SOON
    start_wait(state, session, timeout_ns, wake_ns)
    return WAITING


def reserve_job(state: State, session: Session, job_id: int) -> tuple:
    """RESERVE_JOB (§4.4): any unreserved job, whatever its tube, pause or the watch list."""
    job = state.jobs.get(job_id)
    if job is None or job.state is RESERVED:
        return NOT_FOUND
    state.reserve(job, session)
    return ("RESERVED", job.id, job.body)


def delete(state: State, session: Session, job_id: int) -> tuple:
    """DELETE (§4.5): a job this session holds, or any ready, buried or delayed job."""
    job = state.jobs.get(job_id)
    if job is None or (job.state is RESERVED and job.holder is not session):
        return NOT_FOUND
    state.delete(job)
    return DELETED


def release(state: State, session: Session, job_id: int, pri: int, delay_ns: int) -> tuple:
    """RELEASE (§4.6)."""
    job = _held(state, session, job_id)
    if job is None:
        return NOT_FOUND
    job.pri = pri
    job.delay_ns = delay_ns
    job.releases += 1
    if delay_ns > 0:
        state.make_delayed(job, state.now_ns + delay_ns)
    else:
        state.make_ready(job)
    return RELEASED


def bury(state: State, session: Session, job_id: int, pri: int) -> tuple:
    """BURY (§4.7)."""
    job = _held(state, session, job_id)
    if job is None:
        return NOT_FOUND
    job.pri = pri
    job.buries += 1
    state.make_buried(job)
    return BURIED


def touch(state: State, session: Session, job_id: int) -> tuple:
    """TOUCH (§4.8): a full TTR from now."""
    job = _held(state, session, job_id)
    if job is None:
        return NOT_FOUND
    state.touch(job)
    return TOUCHED


def _kick(state: State, job: Job) -> None:
    job.kicks += 1
    state.make_ready(job)


def kick(state: State, session: Session, bound: int) -> tuple:
    """KICK (§4.12): up to ``bound`` buried jobs of the used tube, else delayed ones."""
    tube = session.used
    each = state.rules >= 2  # rules 2 serves waiters after each job, as 1.12 (module doc)
    if tube.buried:
        count = min(bound, len(tube.buried))
        for _ in range(count):
            _kick(state, state.oldest_buried(tube))
            if each:
                serve(state)
    else:
        count = min(bound, tube.delayed_ct)
        for _ in range(count):
            _kick(state, state.min_delayed(tube))
            if each:
                serve(state)
    return ("KICKED", count)


def kick_job(state: State, session: Session, job_id: int) -> tuple:
    """KICK_JOB (§4.13): a buried or delayed job, in any tube."""
    job = state.jobs.get(job_id)
    if job is None or (job.state is not S_BURIED and job.state is not DELAYED):
        return NOT_FOUND
    _kick(state, job)
    return KICKED


def pause_tube(state: State, session: Session, name: str, delay_ns: int) -> tuple:
    """PAUSE_TUBE (§4.16): an existing tube only.

    beanstalkd turns a delay of 0 into 1 ns, which has always passed by the next command it
    reads; here every command of a batch shares one ``now``, so 0 unpauses at once instead.
    """
    tube = state.tubes.get(name)
    if tube is None:
        return NOT_FOUND
    if delay_ns == 0:
        tube.cmd_pause += 1
        state.unpause(tube)
    else:
        state.pause(tube, delay_ns)
    return PAUSED


def end_wait(state: State, session: Session) -> tuple:
    """END_WAIT (rules 3): the session's client half-closed while it waited in reserve.

    beanstalkd 1.12 answers the waiting reserve TIMED_OUT at once and goes on with the commands
    the client sent behind it before it closes the connection. The wait ends as its timeout
    would (the event and the cached reply say TIMED_OUT), and the session stays open for those
    commands; a session no longer waiting (a job or its timeout reached it first) is left as
    it is.
    """
    if session.wait_ticket:
        finish_wait(state, session, TIMED_OUT)
    return OK


HANDLERS: dict[Op, Callable[..., tuple]] = {
    Op.CLOSE: close,
    Op.PUT: put,
    Op.USE: use,
    Op.WATCH: watch,
    Op.IGNORE: ignore,
    Op.RESERVE: reserve,
    Op.RESERVE_JOB: reserve_job,
    Op.DELETE: delete,
    Op.RELEASE: release,
    Op.BURY: bury,
    Op.TOUCH: touch,
    Op.KICK: kick,
    Op.KICK_JOB: kick_job,
    Op.PAUSE_TUBE: pause_tube,
    Op.BURN_ID: burn_id,
    Op.END_WAIT: end_wait,
}
