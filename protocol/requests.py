"""The requests a client can send: one frozen dataclass per beanstalkd 1.12 command, plus the
three extensions of BeanRaft (``put-key``, ``session-id``, ``session-resume``) and its four admin
commands (``purge-tube``, ``list-jobs``, ``move-job``, ``move-buried``, ``import-job``; see
docs/reference/extensions.md) and ``auth`` (docs/reference/auth.md), which beanstalkd 1.12
answers with UNKNOWN_COMMAND.

Each class carries its wire command name in the class attribute ``name`` (``"put"``,
``"reserve-with-timeout"``, ...), which is also the suffix of its ``cmd-*`` counter in ``stats``.
Values are kept exactly as they were sent; semantic rules (ttr 0 means 1, a negative timeout
means "wait forever") belong to the layers that act on them.

``Rejected`` is the parser's own answer to input it cannot turn into a request.
``encode_request`` writes a request the way a well-behaved client would; tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union

from .replies import Reply


@dataclass(frozen=True, slots=True)
class Put:
    """``put <pri> <delay> <ttr> <bytes>``: ``ttr_s`` exactly as sent (0 is not yet 1)."""

    name: ClassVar[str] = "put"
    pri: int
    delay_s: int
    ttr_s: int
    body: bytes


# A job's ``Put`` is made by the parser for every put. The generated ``__init__`` of a frozen
# dataclass sets each field through ``object.__setattr__`` (around its own ``__setattr__``, which
# refuses); the slots' own setters do the same in about half the time. The result is the same
# object, still frozen: only its construction is quicker.
_new = object.__new__
_put_pri, _put_delay, _put_ttr, _put_body = (Put.pri.__set__, Put.delay_s.__set__,
                                             Put.ttr_s.__set__, Put.body.__set__)


def new_put(pri: int, delay_s: int, ttr_s: int, body: bytes) -> Put:
    """``Put(pri, delay_s, ttr_s, body)``, made faster (the parser's path for every job)."""
    put = _new(Put)
    _put_pri(put, pri)
    _put_delay(put, delay_s)
    _put_ttr(put, ttr_s)
    _put_body(put, body)
    return put


@dataclass(frozen=True, slots=True)
class Use:
    """``use <tube>``: make ``tube`` the tube that ``put``, ``peek-*`` and ``kick`` act on."""

    name: ClassVar[str] = "use"
    tube: str


@dataclass(frozen=True, slots=True)
class Reserve:
    """``reserve``: wait as long as needed for a job from a watched tube."""

    name: ClassVar[str] = "reserve"


@dataclass(frozen=True, slots=True)
class ReserveWithTimeout:
    """``reserve-with-timeout <seconds>``: a negative ``timeout_s`` means wait forever (1.12)."""

    name: ClassVar[str] = "reserve-with-timeout"
    timeout_s: int


@dataclass(frozen=True, slots=True)
class ReserveJob:
    """``reserve-job <id>``: reserve one specific job, whatever its tube or state."""

    name: ClassVar[str] = "reserve-job"
    job_id: int


@dataclass(frozen=True, slots=True)
class Delete:
    """``delete <id>``."""

    name: ClassVar[str] = "delete"
    job_id: int


@dataclass(frozen=True, slots=True)
class Release:
    """``release <id> <pri> <delay>``."""

    name: ClassVar[str] = "release"
    job_id: int
    pri: int
    delay_s: int


@dataclass(frozen=True, slots=True)
class Bury:
    """``bury <id> <pri>``."""

    name: ClassVar[str] = "bury"
    job_id: int
    pri: int


@dataclass(frozen=True, slots=True)
class Touch:
    """``touch <id>``: restart the TTR of a job this connection holds."""

    name: ClassVar[str] = "touch"
    job_id: int


@dataclass(frozen=True, slots=True)
class Watch:
    """``watch <tube>``."""

    name: ClassVar[str] = "watch"
    tube: str


@dataclass(frozen=True, slots=True)
class Ignore:
    """``ignore <tube>``."""

    name: ClassVar[str] = "ignore"
    tube: str


@dataclass(frozen=True, slots=True)
class Peek:
    """``peek <id>``."""

    name: ClassVar[str] = "peek"
    job_id: int


@dataclass(frozen=True, slots=True)
class PeekReady:
    """``peek-ready``: the most urgent ready job of the used tube."""

    name: ClassVar[str] = "peek-ready"


@dataclass(frozen=True, slots=True)
class PeekDelayed:
    """``peek-delayed``: the delayed job of the used tube that becomes ready first."""

    name: ClassVar[str] = "peek-delayed"


@dataclass(frozen=True, slots=True)
class PeekBuried:
    """``peek-buried``: the oldest buried job of the used tube."""

    name: ClassVar[str] = "peek-buried"


@dataclass(frozen=True, slots=True)
class Kick:
    """``kick <bound>``: ``bound`` is already truncated to 0..4294967295 as 1.12 does."""

    name: ClassVar[str] = "kick"
    bound: int


@dataclass(frozen=True, slots=True)
class KickJob:
    """``kick-job <id>``."""

    name: ClassVar[str] = "kick-job"
    job_id: int


@dataclass(frozen=True, slots=True)
class StatsJob:
    """``stats-job <id>``."""

    name: ClassVar[str] = "stats-job"
    job_id: int


@dataclass(frozen=True, slots=True)
class StatsTube:
    """``stats-tube <tube>``."""

    name: ClassVar[str] = "stats-tube"
    tube: str


@dataclass(frozen=True, slots=True)
class Stats:
    """``stats``."""

    name: ClassVar[str] = "stats"


@dataclass(frozen=True, slots=True)
class ListTubes:
    """``list-tubes``."""

    name: ClassVar[str] = "list-tubes"


@dataclass(frozen=True, slots=True)
class ListTubeUsed:
    """``list-tube-used``."""

    name: ClassVar[str] = "list-tube-used"


@dataclass(frozen=True, slots=True)
class ListTubesWatched:
    """``list-tubes-watched``."""

    name: ClassVar[str] = "list-tubes-watched"


@dataclass(frozen=True, slots=True)
class PauseTube:
    """``pause-tube <tube> <delay>``."""

    name: ClassVar[str] = "pause-tube"
    tube: str
    delay_s: int


@dataclass(frozen=True, slots=True)
class PutKey:
    """``put-key <key> <pri> <delay> <ttr> <bytes>`` (extension): a put that the cluster
    performs at most once per ``key`` within its dedup window."""

    name: ClassVar[str] = "put-key"
    key: str
    pri: int
    delay_s: int
    ttr_s: int
    body: bytes


@dataclass(frozen=True, slots=True)
class SessionId:
    """``session-id`` (extension): ask for the id that lets another connection resume this
    connection's session."""

    name: ClassVar[str] = "session-id"


@dataclass(frozen=True, slots=True)
class SessionResume:
    """``session-resume <id>`` (extension): take over the session ``session_id`` and its
    reservations."""

    name: ClassVar[str] = "session-resume"
    session_id: str


@dataclass(frozen=True, slots=True)
class PurgeTube:
    """``purge-tube <tube> <state>`` (admin extension): delete every job of ``tube`` in
    ``state`` (ready, delayed, buried or all; never reserved jobs) as one committed command."""

    name: ClassVar[str] = "purge-tube"
    tube: str
    state: str


@dataclass(frozen=True, slots=True)
class ListJobs:
    """``list-jobs <tube> <state> <offset> <limit>`` (admin extension): one page of the jobs
    of ``tube`` in ``state`` (ready, delayed, buried, reserved or all), in id order."""

    name: ClassVar[str] = "list-jobs"
    tube: str
    state: str
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class MoveJob:
    """``move-job <id> <tube>`` (admin extension): move an unreserved job to ``tube``."""

    name: ClassVar[str] = "move-job"
    job_id: int
    tube: str


@dataclass(frozen=True, slots=True)
class MoveBuried:
    """``move-buried <from> <to>`` (admin extension): move every buried job of ``source`` to
    the tail of ``target``'s buried list, oldest burial first."""

    name: ClassVar[str] = "move-buried"
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class ImportJob:
    """``import-job <key> <state> <pri> <delay> <ttr> <bytes>`` (admin extension): create a
    job in the used tube directly in ``state`` (ready, delayed or buried), at most once per
    ``key`` while the cluster remembers the key (``beanraft import-binlog`` sends it)."""

    name: ClassVar[str] = "import-job"
    key: str
    state: str
    pri: int
    delay_s: int
    ttr_s: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """``auth <principal> <token>`` (extension): authenticate this connection as ``principal``
    (docs/reference/auth.md). The token is left out of the repr, so it never reaches a log."""

    name: ClassVar[str] = "auth"
    principal: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Quit:
    """``quit`` (any line starting with it): close the connection without a reply."""

    name: ClassVar[str] = "quit"


Request = Union[
    Put, Use, Reserve, ReserveWithTimeout, ReserveJob, Delete, Release, Bury, Touch, Watch,
    Ignore, Peek, PeekReady, PeekDelayed, PeekBuried, Kick, KickJob, StatsJob, StatsTube, Stats,
    ListTubes, ListTubeUsed, ListTubesWatched, PauseTube, Quit, PutKey, SessionId, SessionResume,
    PurgeTube, ListJobs, MoveJob, MoveBuried, ImportJob, Auth,
]

#: Every request class (25 of beanstalkd 1.12, then the three extensions, the five admin ones
#: and ``auth``).
REQUEST_TYPES: tuple[type, ...] = Request.__args__

#: BeanRaft's admin commands (docs/reference/extensions.md#admin-commands): what an admin role
#: guards. Every other extension (put-key, session-id, session-resume) is an application's.
ADMIN_REQUEST_TYPES: tuple[type, ...] = (PurgeTube, ListJobs, MoveJob, MoveBuried, ImportJob)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input the parser answers itself, with ``reply`` (BadFormat, UnknownCommand, ...).

    ``counted`` names the command whose ``cmd-*`` counter beanstalkd increments despite the
    error (``"put"`` for JOB_TOO_BIG, trailing text after ``<bytes>`` and EXPECTED_CRLF;
    ``"pause-tube"`` for a bad tube name found after the delay parsed), else None.
    ``producer`` is True when a put header was accepted, which makes the connection a producer;
    ``burns_id`` is True when beanstalkd had already allocated a job id for it.
    ``auth`` is True for a malformed ``auth`` line: a server without authentication answers it
    UNKNOWN_COMMAND, as beanstalkd 1.12 does.
    """

    reply: Reply
    counted: str | None = None
    producer: bool = False
    burns_id: bool = False
    auth: bool = False


def encode_request(request: Request) -> bytes:
    """Returns the canonical client bytes for ``request`` (single spaces, CRLF endings)."""
    if isinstance(request, Put):
        header = f"put {request.pri} {request.delay_s} {request.ttr_s} {len(request.body)}"
        return header.encode("ascii") + b"\r\n" + request.body + b"\r\n"
    if isinstance(request, PutKey):
        header = (f"put-key {request.key} {request.pri} {request.delay_s} {request.ttr_s} "
                  f"{len(request.body)}")
        return header.encode("ascii") + b"\r\n" + request.body + b"\r\n"
    if isinstance(request, ImportJob):
        header = (f"import-job {request.key} {request.state} {request.pri} {request.delay_s} "
                  f"{request.ttr_s} {len(request.body)}")
        return header.encode("ascii") + b"\r\n" + request.body + b"\r\n"
    if isinstance(request, SessionResume):
        return f"session-resume {request.session_id}\r\n".encode("ascii")
    if isinstance(request, PurgeTube):
        return f"purge-tube {request.tube} {request.state}\r\n".encode("ascii")
    if isinstance(request, ListJobs):
        line = f"list-jobs {request.tube} {request.state} {request.offset} {request.limit}\r\n"
        return line.encode("ascii")
    if isinstance(request, MoveJob):
        return f"move-job {request.job_id} {request.tube}\r\n".encode("ascii")
    if isinstance(request, MoveBuried):
        return f"move-buried {request.source} {request.target}\r\n".encode("ascii")
    if isinstance(request, Auth):
        return f"auth {request.principal} {request.token}\r\n".encode("ascii")
    arguments = [
        getattr(request, field)
        for field in ("job_id", "tube", "pri", "delay_s", "timeout_s", "bound")
        if hasattr(request, field)
    ]
    # The field order above happens to match the wire order of every command that has two.
    words = [request.name] + [str(argument) for argument in arguments]
    return " ".join(words).encode("ascii") + b"\r\n"
