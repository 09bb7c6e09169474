"""Where protocol requests become state-machine commands and machine replies become wire replies.

This is the one place the two vocabularies meet (seconds on the wire, nanoseconds inside).
"""

from __future__ import annotations

import secrets

from beanraft import protocol as p
from beanraft.jobs.commands import Op

from .config import NodeConfig

NS = 1_000_000_000

# Requests that change replicated state and whose reply does not block: a connection may have
# several of these in flight at once (pipelining), and they share Raft entries with others.
PIPELINED = (p.Put, p.Use, p.Watch, p.Ignore, p.Delete, p.Release, p.Bury, p.Touch, p.Kick,
             p.KickJob, p.PauseTube, p.ReserveJob, p.PutKey, p.SessionId, p.SessionResume,
             p.PurgeTube, p.MoveJob, p.MoveBuried, p.ImportJob)

#: The dedup window and cap used when the caller does not give the node's own (tests).
DEFAULT_DEDUP = (NodeConfig.dedup_window_s, NodeConfig.dedup_cap)
# 24 random bytes as URL-safe base64: a 32-character session id, 192 bits to guess.
SESSION_TOKEN_BYTES = 24


def to_command(req, sid: int, seq: int, dedup: tuple[int, int] = DEFAULT_DEDUP) -> tuple:
    """The state-machine command for a pipelined request.

    ``dedup`` is this node's (window in seconds, cap): a keyed put carries them so that every
    replica applies the same rule. A session-id carries a fresh random token, which the state
    machine keeps only if the session has none yet.
    """
    kind = type(req)
    if kind is p.Put:
        return (Op.PUT, sid, seq, req.pri, req.delay_s * NS, req.ttr_s * NS, req.body)
    if kind is p.PutKey:
        window_s, cap = dedup
        return (Op.PUT_KEY, sid, seq, req.key, window_s * NS, cap, req.pri, req.delay_s * NS,
                req.ttr_s * NS, req.body)
    if kind is p.ImportJob:
        window_s, cap = dedup
        return (Op.IMPORT_JOB, sid, seq, req.key, window_s * NS, cap, req.state, req.pri,
                req.delay_s * NS, req.ttr_s * NS, req.body)
    if kind is p.SessionId:
        return (Op.SESSION_ID, sid, seq, secrets.token_urlsafe(SESSION_TOKEN_BYTES))
    if kind is p.SessionResume:
        return (Op.RESUME, sid, seq, req.session_id)
    if kind is p.Use:
        return (Op.USE, sid, seq, req.tube)
    if kind is p.Watch:
        return (Op.WATCH, sid, seq, req.tube)
    if kind is p.Ignore:
        return (Op.IGNORE, sid, seq, req.tube)
    if kind is p.Delete:
        return (Op.DELETE, sid, seq, req.job_id)
    if kind is p.Release:
        return (Op.RELEASE, sid, seq, req.job_id, req.pri, req.delay_s * NS)
    if kind is p.Bury:
        return (Op.BURY, sid, seq, req.job_id, req.pri)
    if kind is p.Touch:
        return (Op.TOUCH, sid, seq, req.job_id)
    if kind is p.Kick:
        return (Op.KICK, sid, seq, req.bound)
    if kind is p.KickJob:
        return (Op.KICK_JOB, sid, seq, req.job_id)
    if kind is p.PauseTube:
        return (Op.PAUSE_TUBE, sid, seq, req.tube, req.delay_s * NS)
    if kind is p.ReserveJob:
        return (Op.RESERVE_JOB, sid, seq, req.job_id)
    if kind is p.PurgeTube:
        return (Op.PURGE_TUBE, sid, seq, req.tube, req.state)
    if kind is p.MoveJob:
        return (Op.MOVE_JOB, sid, seq, req.job_id, req.tube)
    if kind is p.MoveBuried:
        return (Op.MOVE_BURIED, sid, seq, req.source, req.target)
    raise TypeError(f"not a pipelined request: {req!r}")


def reserve_timeout_ns(req) -> int:
    """``reserve`` waits forever (-1); 1.12 also waits forever for a negative timeout."""
    if isinstance(req, p.Reserve) or req.timeout_s < 0:
        return -1
    return req.timeout_s * NS


_SIMPLE = {
    "NOT_FOUND": p.NotFound(), "DELETED": p.Deleted(), "RELEASED": p.Released(),
    "BURIED": p.Buried(), "TOUCHED": p.Touched(), "PAUSED": p.Paused(),
    "NOT_IGNORED": p.NotIgnored(), "TIMED_OUT": p.TimedOut(), "DEADLINE_SOON": p.DeadlineSoon(),
}


#: The wire bytes of the replies that are one constant word, by tag.
_SIMPLE_BYTES = {tag: p.encode(reply) for tag, reply in _SIMPLE.items()}


def to_wire(result: tuple) -> bytes:
    """The wire bytes of ``to_reply(result)``; the frequent replies without building one."""
    tag = result[0]
    if tag == "INSERTED":
        return p.inserted_bytes(result[1])
    if tag == "RESERVED":
        return p.reserved_bytes(result[1], result[2])
    simple = _SIMPLE_BYTES.get(tag)
    if simple is not None:
        return simple
    return p.encode(to_reply(result))


def to_reply(result: tuple):
    """The wire reply for a state-machine reply tuple."""
    tag = result[0]
    simple = _SIMPLE.get(tag)
    if simple is not None:
        return simple
    if tag == "INSERTED":
        return p.Inserted(result[1])
    if tag == "RESERVED":
        return p.Reserved(result[1], result[2])
    if tag == "FOUND":
        return p.Found(result[1], result[2])
    if tag == "USING":
        return p.Using(result[1])
    if tag == "WATCHING":
        return p.Watching(result[1])
    if tag == "KICKED":
        return p.Kicked(result[1] if len(result) > 1 else None)
    if tag == "SESSION":
        return p.Session(result[1])
    if tag == "RESUMED":
        return p.Resumed(tuple(result[1]))
    if tag == "PURGED":
        return p.Purged(result[1])
    if tag == "MOVED":
        return p.Moved(result[1])
    if tag == "EXISTS":
        return p.Exists(result[1])
    return p.InternalError()
