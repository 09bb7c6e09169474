"""Operations: what one API call sends, which reply means success, and what it returns.

An ``Op`` is one application command (``put``, ``reserve``, ...) from the moment it is called
until it completes with a result or an exception. It may cross several connections: the core
(``core.py``) sends it, and after a failover either sends it again, completes it from what the
resumed session says, or fails it -- by its ``replay`` rule:

``always``   Reads and idempotent changes (peek, stats, list, use, watch, ignore, touch,
             pause-tube, kick, kick-job): sent again as they are.
``put``      Sent again only as ``put-key`` with the same key, so the cluster creates the job
             once. Without idempotent put (plain beanstalkd) a put whose reply was lost fails
             with ``UnavailableError``: its outcome is unknown.
``job``      delete, release, bury of a job this client held: after the session resumed, sent
             again if the session still holds the job, else done (the first send committed).
``reserve``  reserve, reserve-with-timeout: fulfilled from a job the resumed session holds
             that the client did not know of, else sent again with the time that is left.
``reserve-job``  Fetched with ``peek`` if the resumed session holds the job (its RESERVED was
             lost), else sent again as reserve-job: it returns that job or fails, never another.
``once``     purge-tube and move-buried (admin commands): never sent again. Sent a second
             time they could delete or move jobs that arrived since, so a lost reply fails
             with ``UnavailableError``: the outcome is unknown. (list-jobs and move-job are
             ``always``: a read, and a move that ends with the job in the tube either way.)

An op's rule never changes: an op lost on several connections in a row (its replay lost too)
is replayed by the same rule after each failover.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from beanraft import protocol as p
from beanraft.protocol.client import (bury_bytes, delete_bytes, put_bytes, release_bytes,
                                     reserve_bytes, touch_bytes)

from .errors import ERRORS_BY_REPLY, BuriedError, NotBeanRaftError, UnknownResponseError

DEFAULT_TUBE = "default"
DEFAULT_PRIORITY = 2**16
DEFAULT_DELAY = 0
DEFAULT_TTR = 60



@dataclass(eq=False, slots=True)
class Op:
    """One application command and its outcome."""

    kind: str  # the greenstalk method name
    # The protocol request as first sent (put and reserve are rebuilt per send). The commands a
    # producer and a worker send most are encoded once, when built: their request is its bytes.
    request: Any
    expect: type | tuple  # the reply class(es) that mean success
    convert: Callable[[Any], Any] = lambda reply: None
    replay: str = "always"
    job_id: int | None = None
    key: str | None = None  # put only
    deadline: float | None = None  # reserve only: monotonic seconds, None = wait forever
    timeout_s: int | None = None  # reserve only: the timeout as sent first, None = none
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    callback: Callable[["Op"], None] | None = None  # the async client's wake-up
    cancelled: bool = False  # the caller gave up after it was sent (Core.cancel)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done, self.result, self.error = True, result, error
        if self.callback is not None:
            self.callback(self)

    def outcome(self) -> Any:
        """The result, or raise the error."""
        assert self.done
        if self.error is not None:
            raise self.error
        return self.result


#: The API methods that send BeanRaft's admin commands (docs/reference/extensions.md).
ADMIN_KINDS = ("purge_tube", "list_jobs", "move_job", "move_buried")


def error_for(reply: Any, kind: str = "") -> Exception:
    """The exception for a reply that is not the expected one to the API method ``kind``."""
    name = type(reply).__name__
    if isinstance(reply, p.UnknownCommand) and kind in ADMIN_KINDS:
        return NotBeanRaftError(f"{kind}: the server answered UNKNOWN_COMMAND: it is not "
                                "BeanRaft (a plain beanstalkd?), which has no admin commands")
    if isinstance(reply, p.Buried):
        return BuriedError([str(reply.job_id).encode()] if reply.job_id is not None else None)
    cls = ERRORS_BY_REPLY.get(name)
    if cls is not None:
        return cls()
    return UnknownResponseError(name.encode(), [])


def check_key(key: str) -> str:
    """A put key is 1-64 characters of [A-Za-z0-9_.:-] (the wire's rule, checked early)."""
    raw = key.encode("utf-8")
    if not 1 <= len(raw) <= p.MAX_KEY_LEN or not set(raw) <= p.KEY_CHARS:
        raise ValueError(f"a put key is 1-{p.MAX_KEY_LEN} characters of [A-Za-z0-9_.:-]: {key!r}")
    return key


class _Keys:
    """Put keys unique to this process: 96 random bits, then a counter (no system call per key,
    unlike a uuid4). A forked child draws its own random part, so it never repeats a key of
    its parent's, which the cluster would answer with the parent's job id."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(12) + "."
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_KEYS = _Keys()
os.register_at_fork(after_in_child=_KEYS.reset)


def new_key() -> str:
    """A fresh put key: 24 hex digits, a dot and a hex counter (at most 41 characters)."""
    return _KEYS.next()


def _yaml_text(data: bytes) -> str:
    """The text of an OK reply's YAML body; UnknownResponseError when it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnknownResponseError(b"OK", [b"a body that is not UTF-8"]) from None
    if not text.startswith("---\n"):
        raise UnknownResponseError(b"OK", [data[:40]])
    return text


def parse_yaml_list(data: bytes) -> list[str]:
    text = _yaml_text(data)
    return [line[2:] for line in text[4:].splitlines() if line.startswith("- ")]


def parse_yaml_mapping(data: bytes) -> dict[str, Any]:
    """beanstalkd's stats YAML as a dict; numbers become ints, quotes are stripped."""
    text = _yaml_text(data)
    stats: dict[str, Any] = {}
    for line in text[4:].splitlines():
        key, _, value = line.partition(": ")
        if p.is_decimal(value, 40):
            stats[key] = int(value)
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            stats[key] = value[1:-1]
        else:
            stats[key] = value
    return stats


def _id(job: Any) -> int:
    return job if isinstance(job, int) else job.id


# ------------------------------------------------------------------------- builders


def _inserted_id(reply: Any) -> int:
    return reply.job_id


def put(body: bytes, priority: int, delay: int, ttr: int, key: str | None) -> Op:
    return Op("put", put_bytes(priority, delay, ttr, body), p.Inserted, _inserted_id,
              replay="put", key=check_key(key) if key is not None else new_key())


def reserve(timeout: float | None, now: float, job_of: Callable) -> Op:
    timeout_s = None if timeout is None else int(timeout)
    deadline = None if timeout_s is None else now + max(0, timeout_s)
    return Op("reserve", reserve_bytes(timeout_s), p.Reserved, job_of,
              replay="reserve", deadline=deadline, timeout_s=timeout_s)


def reserve_job(job_id: int, job_of: Callable) -> Op:
    return Op("reserve_job", p.ReserveJob(job_id), p.Reserved, job_of, replay="reserve-job",
              job_id=job_id)


def delete(job: Any) -> Op:
    job_id = _id(job)
    return Op("delete", delete_bytes(job_id), p.Deleted, replay="job", job_id=job_id)


def release(job: Any, priority: int, delay: int) -> Op:
    job_id = _id(job)
    return Op("release", release_bytes(job_id, priority, delay), p.Released,
              replay="job", job_id=job_id)


def bury(job: Any, priority: int) -> Op:
    job_id = _id(job)
    return Op("bury", bury_bytes(job_id, priority), p.Buried, replay="job",
              job_id=job_id)


def touch(job: Any) -> Op:
    job_id = _id(job)
    return Op("touch", touch_bytes(job_id), p.Touched, job_id=job_id)


def use(tube: str) -> Op:
    return Op("use", p.Use(tube), p.Using, lambda r: None)


def watch(tube: str) -> Op:
    return Op("watch", p.Watch(tube), p.Watching, lambda r: r.count)


def ignore(tube: str) -> Op:
    return Op("ignore", p.Ignore(tube), p.Watching, lambda r: r.count)


def peek(kind: str, request: Any, job_of: Callable) -> Op:
    return Op(kind, request, p.Found, job_of)


def kick(bound: int) -> Op:
    return Op("kick", p.Kick(bound), p.Kicked, lambda r: r.count)


def kick_job(job: Any) -> Op:
    return Op("kick_job", p.KickJob(_id(job)), p.Kicked, job_id=_id(job))


def stats(kind: str, request: Any) -> Op:
    return Op(kind, request, p.Ok, lambda r: parse_yaml_mapping(r.data))


def listing(kind: str, request: Any) -> Op:
    return Op(kind, request, p.Ok, lambda r: parse_yaml_list(r.data))


def using() -> Op:
    return Op("using", p.ListTubeUsed(), p.Using, lambda r: r.tube)


def pause_tube(tube: str, delay: int) -> Op:
    return Op("pause_tube", p.PauseTube(tube, delay), p.Paused)


# -------------------------------------------------------------- the admin commands


def _state(state: str, allowed: tuple[str, ...]) -> str:
    if state not in allowed:
        raise ValueError(f"state must be one of {', '.join(allowed)}: {state!r}")
    return state


def parse_yaml_records(data: bytes) -> list[dict[str, Any]]:
    """list-jobs' YAML list of flat mappings as a list of dicts; numbers become ints."""
    text = _yaml_text(data)
    records: list[dict[str, Any]] = []
    for line in text[4:].splitlines():
        if line.startswith("- "):
            records.append({})
        elif not records:
            raise UnknownResponseError(b"OK", [line.encode()[:40]])
        key, _, value = line[2:].partition(": ")
        records[-1][key] = int(value) if p.is_decimal(value, 40) else value
    return records


def purge_tube(tube: str, state: str) -> Op:
    return Op("purge_tube", p.PurgeTube(tube, _state(state, p.PURGE_STATES)), p.Purged,
              lambda r: r.count, replay="once")


def list_jobs(tube: str, state: str, offset: int, limit: int) -> Op:
    if not 0 <= offset <= 2**32 - 1 or not 1 <= limit <= p.MAX_LIST_LIMIT:
        raise ValueError(f"offset is 0..4294967295 and limit 1..{p.MAX_LIST_LIMIT}")
    return Op("list_jobs", p.ListJobs(tube, _state(state, p.LIST_STATES), offset, limit), p.Ok,
              lambda r: parse_yaml_records(r.data))


def move_job(job: Any, tube: str) -> Op:
    return Op("move_job", p.MoveJob(_id(job), tube), p.Moved, lambda r: r.count == 1,
              job_id=_id(job))


def move_buried(source: str, target: str) -> Op:
    return Op("move_buried", p.MoveBuried(source, target), p.Moved, lambda r: r.count,
              replay="once")
