"""The state-machine side of BeanRaft's extensions: resumable sessions and keyed (idempotent) puts.

Theory of operation
-------------------
Session ids. ``SESSION_ID(token)`` gives a session a *token*: the id a client may later present
to resume it. The token is drawn at random by the node that proposes the command (the machine
never draws random numbers) and kept in ``Session.token`` and ``State.tokens`` (token -> sid).
A session keeps its first token: asking again answers the same one. The token is forgotten when
its session ends, for whatever reason (CLOSE, NODE_START or DROP_NODE of its node).

Resuming. ``RESUME(token)`` from session N takes over the session O that holds the token:

* every job O holds is re-reserved to N *with its deadline unchanged*, so its TTR keeps running
  as before (no reserve, timeout or release is counted);
* N takes O's token (N's own token, if it had one, is forgotten), so the client keeps one id
  across any number of resumes;
* O ends like a CLOSE that holds nothing (its use and watch references go, a waiting reserve is
  dropped), and an event ``(O, GONE)`` tells the node that holds O's connection to close it;
  any later command of O is answered GONE.

The reply lists every job N now holds, in id order. N's used tube and watch list stay N's own.
A token that no open session holds (never given, or its session ended) is NOT_FOUND.

Keyed puts. ``PUT_KEY(key, window_ns, cap, pri, delay_ns, ttr_ns, body)`` is a PUT that the
cluster performs at most once per key while the key is remembered. ``State.dedup`` maps
key -> (job id, expiry) in commit order, so its first entry is the oldest key. The window and
cap are the proposing node's settings carried in the command, so every replica decides alike
even when nodes are configured differently. Before looking a key up, keys whose expiry has
passed are dropped from the front (with one window cluster-wide the front is always the next to
expire; with mixed windows an expired key further back is still never *answered*, only
reclaimed later). A remembered key answers ``INSERTED <its job id>`` and creates nothing, even
if that job was deleted since. A new key creates the job, is remembered until
``now + window_ns``, and then the oldest keys are forgotten until at most ``cap`` remain. A
duplicate does not extend its key's window.

Imported jobs. ``IMPORT_JOB(key, window_ns, cap, state, pri, delay_ns, ttr_ns, body)`` creates a
job in the session's used tube directly in ``state`` -- ready, delayed by ``delay_ns``, or
buried at the tail of the tube's buried list -- in one command, so a buried job is never ready
for a moment. Its key lives in the same dedup table as put-key's, by the same rules; a key that
is remembered answers ``("EXISTS", job id)`` and creates nothing. This is what makes re-running
an import (``beanraft import-binlog``) create no second copy of a job.
"""

from __future__ import annotations

from collections.abc import Callable

from .commands import GONE, NOT_FOUND, SECOND_NS, Op
from .handlers import close, put
from .model import Job, Session
from .state import State


def session_id(state: State, session: Session, token: str) -> tuple:
    """SESSION_ID: the session's token, taking ``token`` if it has none yet."""
    if session.token is None:
        if token in state.tokens:
            # 192 random bits from the proposer make this unreachable in practice; refusing
            # keeps one token from ever naming two sessions.
            return ("ERROR", "session token already in use")
        session.token = token
        state.tokens[token] = session.sid
    return ("SESSION", session.token)


def resume(state: State, session: Session, token: str) -> tuple:
    """RESUME: take over the session holding ``token`` (see the module docstring)."""
    old_sid = state.tokens.get(token)
    if old_sid is None:
        return NOT_FOUND
    old = state.sessions[old_sid]
    if old is not session:
        for job_id in list(old.reserved):
            job = state.jobs[job_id]
            state.make_reserved(job, session, job.deadline_ns, job.timer_order)
        if session.token is not None:
            del state.tokens[session.token]
        old.token = None
        session.token = token
        state.tokens[token] = session.sid
        close(state, old)
        state.events.append((old_sid, GONE))
    return ("RESUMED", sorted(session.reserved))


def forget_expired_keys(state: State) -> None:
    """Drop keys whose window has passed from the front of ``state.dedup`` (oldest first)."""
    dedup, now_ns = state.dedup, state.now_ns
    while dedup:
        key = next(iter(dedup))
        if dedup[key][1] > now_ns:
            return
        del dedup[key]


def _remembered(state: State, key: str) -> int | None:
    """The job id of ``key`` if the dedup table remembers it (dropping expired keys first)."""
    forget_expired_keys(state)
    dedup = state.dedup
    known = dedup.get(key)
    if known is None:
        return None
    if known[1] > state.now_ns:
        return known[0]
    del dedup[key]  # expired behind an unexpired key (mixed windows): forget it now
    return None


def _remember(state: State, key: str, job_id: int, window_ns: int, cap: int) -> None:
    dedup = state.dedup
    dedup[key] = (job_id, state.now_ns + window_ns)
    while len(dedup) > cap:
        del dedup[next(iter(dedup))]


def _create(state: State, session: Session, job_state: str, pri: int, delay_ns: int,
            ttr_ns: int, body: bytes) -> int:
    """A new job in the used tube, placed in ``job_state``; returns its id."""
    job_id = state.next_id
    state.next_id += 1
    tube = session.used
    job = Job(job_id, tube, pri, delay_ns, max(ttr_ns, SECOND_NS), body, state.now_ns)
    state.add_job(job)
    if job_state == "buried":
        state.make_buried(job)
    elif job_state == "delayed" and delay_ns > 0:
        state.make_delayed(job, state.now_ns + delay_ns)
    else:
        state.make_ready(job)
    tube.total_jobs += 1
    state.total_jobs += 1
    return job_id


def put_key(state: State, session: Session, key: str, window_ns: int, cap: int, pri: int,
            delay_ns: int, ttr_ns: int, body: bytes) -> tuple:
    """PUT_KEY: the job id of ``key`` if it is remembered, else a PUT that remembers it."""
    known = _remembered(state, key)
    if known is not None:
        return ("INSERTED", known)
    reply = put(state, session, pri, delay_ns, ttr_ns, body)
    _remember(state, key, reply[1], window_ns, cap)
    return reply


def import_job(state: State, session: Session, key: str, window_ns: int, cap: int,
               job_state: str, pri: int, delay_ns: int, ttr_ns: int, body: bytes) -> tuple:
    """IMPORT_JOB: ``("EXISTS", id)`` if ``key`` is remembered, else a job created directly
    in ``job_state`` whose key is remembered."""
    known = _remembered(state, key)
    if known is not None:
        return ("EXISTS", known)
    job_id = _create(state, session, job_state, pri, delay_ns, ttr_ns, body)
    _remember(state, key, job_id, window_ns, cap)
    return ("INSERTED", job_id)


HANDLERS: dict[Op, Callable[..., tuple]] = {
    Op.SESSION_ID: session_id,
    Op.RESUME: resume,
    Op.PUT_KEY: put_key,
    Op.IMPORT_JOB: import_job,
}
