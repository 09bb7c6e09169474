"""The replies a beanstalkd 1.12 server sends, and the YAML it uses for stats and lists.

Every reply is a frozen dataclass whose ``to_bytes()`` gives the exact wire bytes; ``encode``
does the same for any reply. Numbers are written like C's ``%llu``/``%u``: plain decimal.

YAML here is beanstalkd's hand-written subset, not a YAML library's output: ``---\\n``, then one
``key: value\\n`` (or ``- name\\n``) per entry, with nothing quoted unless the caller quotes it
(1.12 quotes only ``version``). Replies carrying YAML are ``Ok(data)``, and ``Resumed`` of the
``session-resume`` extension, which has the same framing under its own word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterable, Union

_CRLF = b"\r\n"


def _line(*words: object) -> bytes:
    """One reply line: the words joined by single spaces, then CRLF."""
    return " ".join(str(word) for word in words).encode("ascii") + _CRLF


def _with_body(word: bytes, job_id: int, body: bytes) -> bytes:
    """``<WORD> <id> <bytes>\\r\\n<body>\\r\\n``, the shape of RESERVED and FOUND."""
    return b"%b %d %d\r\n%b\r\n" % (word, job_id, len(body), body)


def inserted_bytes(job_id: int) -> bytes:
    """The bytes of ``Inserted(job_id)``, for a caller that has only the id (the hot path)."""
    return b"INSERTED %d\r\n" % job_id


def reserved_bytes(job_id: int, body: bytes) -> bytes:
    """The bytes of ``Reserved(job_id, body)``, for a caller that has only the two."""
    return _with_body(b"RESERVED", job_id, body)


@dataclass(frozen=True, slots=True)
class Inserted:
    """``INSERTED <id>``: the put succeeded."""

    job_id: int

    def to_bytes(self) -> bytes:
        return inserted_bytes(self.job_id)


@dataclass(frozen=True, slots=True)
class Buried:
    """``BURIED`` for bury (or release), ``BURIED <id>`` for a put that could not be queued."""

    job_id: int | None = None

    def to_bytes(self) -> bytes:
        return _line("BURIED") if self.job_id is None else _line("BURIED", self.job_id)


@dataclass(frozen=True, slots=True)
class Using:
    """``USING <tube>``: answer to use and list-tube-used."""

    tube: str

    def to_bytes(self) -> bytes:
        return _line("USING", self.tube)


@dataclass(frozen=True, slots=True)
class Reserved:
    """``RESERVED <id> <bytes>`` followed by the body."""

    job_id: int
    body: bytes

    def to_bytes(self) -> bytes:
        return reserved_bytes(self.job_id, self.body)


@dataclass(frozen=True, slots=True)
class Found:
    """``FOUND <id> <bytes>`` followed by the body: answer to the peek family."""

    job_id: int
    body: bytes

    def to_bytes(self) -> bytes:
        return _with_body(b"FOUND", self.job_id, self.body)


@dataclass(frozen=True, slots=True)
class Watching:
    """``WATCHING <count>``: the size of the watch list after watch or ignore."""

    count: int

    def to_bytes(self) -> bytes:
        return _line("WATCHING", self.count)


@dataclass(frozen=True, slots=True)
class Kicked:
    """``KICKED <count>`` for kick, bare ``KICKED`` for kick-job."""

    count: int | None = None

    def to_bytes(self) -> bytes:
        return _line("KICKED") if self.count is None else _line("KICKED", self.count)


@dataclass(frozen=True, slots=True)
class Ok:
    """``OK <bytes>`` followed by ``data`` (YAML): answer to stats and list commands."""

    data: bytes

    def to_bytes(self) -> bytes:
        return _line("OK", len(self.data)) + self.data + _CRLF


@dataclass(frozen=True, slots=True)
class Session:
    """``SESSION <id>`` (extension): answer to session-id; ``session_id`` is printable ASCII
    without spaces, at most ``MAX_SESSION_ID_LEN`` bytes."""

    session_id: str

    def to_bytes(self) -> bytes:
        return _line("SESSION", self.session_id)


@dataclass(frozen=True, slots=True)
class Resumed:
    """``RESUMED <bytes>`` followed by a YAML list of job ids (extension): answer to
    session-resume, listing every job reserved to the session, in list-tubes' format."""

    job_ids: tuple[int, ...]

    def to_bytes(self) -> bytes:
        data = yaml_list(str(job_id) for job_id in self.job_ids)
        return _line("RESUMED", len(data)) + data + _CRLF


@dataclass(frozen=True, slots=True)
class Purged:
    """``PURGED <count>`` (admin extension): how many jobs purge-tube deleted."""

    count: int

    def to_bytes(self) -> bytes:
        return _line("PURGED", self.count)


@dataclass(frozen=True, slots=True)
class Moved:
    """``MOVED <count>`` (admin extension): how many jobs move-job or move-buried moved."""

    count: int

    def to_bytes(self) -> bytes:
        return _line("MOVED", self.count)


@dataclass(frozen=True, slots=True)
class Exists:
    """``EXISTS <id>`` (admin extension): import-job's key was already imported, as job
    ``job_id``; nothing was created."""

    job_id: int

    def to_bytes(self) -> bytes:
        return _line("EXISTS", self.job_id)


class _WordReply:
    """A reply that is one constant word; subclasses set ``word`` to its exact bytes."""

    __slots__ = ()
    word: ClassVar[bytes]

    def to_bytes(self) -> bytes:
        return self.word


@dataclass(frozen=True, slots=True)
class DeadlineSoon(_WordReply):
    """``DEADLINE_SOON``: a job this connection holds reaches its TTR within 1 s."""

    word: ClassVar[bytes] = b"DEADLINE_SOON\r\n"


@dataclass(frozen=True, slots=True)
class TimedOut(_WordReply):
    """``TIMED_OUT``: reserve-with-timeout found no job in time."""

    word: ClassVar[bytes] = b"TIMED_OUT\r\n"


@dataclass(frozen=True, slots=True)
class Deleted(_WordReply):
    """``DELETED``: the job was deleted."""

    word: ClassVar[bytes] = b"DELETED\r\n"


@dataclass(frozen=True, slots=True)
class NotFound(_WordReply):
    """``NOT_FOUND``: no such job or tube (as far as this connection may see)."""

    word: ClassVar[bytes] = b"NOT_FOUND\r\n"


@dataclass(frozen=True, slots=True)
class Released(_WordReply):
    """``RELEASED``: the job was released."""

    word: ClassVar[bytes] = b"RELEASED\r\n"


@dataclass(frozen=True, slots=True)
class Touched(_WordReply):
    """``TOUCHED``: the job's TTR was restarted."""

    word: ClassVar[bytes] = b"TOUCHED\r\n"


@dataclass(frozen=True, slots=True)
class NotIgnored(_WordReply):
    """``NOT_IGNORED``: the last watched tube cannot be ignored."""

    word: ClassVar[bytes] = b"NOT_IGNORED\r\n"


@dataclass(frozen=True, slots=True)
class Paused(_WordReply):
    """``PAUSED``: the tube was paused."""

    word: ClassVar[bytes] = b"PAUSED\r\n"


@dataclass(frozen=True, slots=True)
class BadFormat(_WordReply):
    """``BAD_FORMAT``: the command line is malformed."""

    word: ClassVar[bytes] = b"BAD_FORMAT\r\n"


@dataclass(frozen=True, slots=True)
class UnknownCommand(_WordReply):
    """``UNKNOWN_COMMAND``: no command matched the line."""

    word: ClassVar[bytes] = b"UNKNOWN_COMMAND\r\n"


@dataclass(frozen=True, slots=True)
class ExpectedCrlf(_WordReply):
    """``EXPECTED_CRLF``: a put body did not end in CRLF."""

    word: ClassVar[bytes] = b"EXPECTED_CRLF\r\n"


@dataclass(frozen=True, slots=True)
class JobTooBig(_WordReply):
    """``JOB_TOO_BIG``: a put body is larger than max-job-size."""

    word: ClassVar[bytes] = b"JOB_TOO_BIG\r\n"


@dataclass(frozen=True, slots=True)
class OutOfMemory(_WordReply):
    """``OUT_OF_MEMORY``: the server could not store the job."""

    word: ClassVar[bytes] = b"OUT_OF_MEMORY\r\n"


@dataclass(frozen=True, slots=True)
class InternalError(_WordReply):
    """``INTERNAL_ERROR``: the server hit a path that should not happen."""

    word: ClassVar[bytes] = b"INTERNAL_ERROR\r\n"


@dataclass(frozen=True, slots=True)
class Draining(_WordReply):
    """``DRAINING``: the server is in drain mode and refuses new jobs."""

    word: ClassVar[bytes] = b"DRAINING\r\n"


@dataclass(frozen=True, slots=True)
class Authenticated(_WordReply):
    """``AUTHENTICATED`` (extension): the ``auth`` command's principal and token match."""

    word: ClassVar[bytes] = b"AUTHENTICATED\r\n"


@dataclass(frozen=True, slots=True)
class AuthFailed(_WordReply):
    """``AUTH_FAILED`` (extension): unknown principal or wrong token; the connection is not
    authenticated (any earlier authentication is dropped)."""

    word: ClassVar[bytes] = b"AUTH_FAILED\r\n"


@dataclass(frozen=True, slots=True)
class AuthRequired(_WordReply):
    """``AUTH_REQUIRED`` (extension): the node has an auth file and this connection has not
    authenticated; the command was not carried out."""

    word: ClassVar[bytes] = b"AUTH_REQUIRED\r\n"


@dataclass(frozen=True, slots=True)
class PermissionDenied(_WordReply):
    """``PERMISSION_DENIED`` (extension): the principal may not do this to that tube; nothing
    happened and the connection stays usable."""

    word: ClassVar[bytes] = b"PERMISSION_DENIED\r\n"


Reply = Union[
    Inserted, Buried, Using, Reserved, Found, Watching, Kicked, Ok, DeadlineSoon, TimedOut,
    Deleted, NotFound, Released, Touched, NotIgnored, Paused, BadFormat, UnknownCommand,
    ExpectedCrlf, JobTooBig, OutOfMemory, InternalError, Draining, Session, Resumed,
    Purged, Moved, Exists, Authenticated, AuthFailed, AuthRequired, PermissionDenied,
]

#: Every reply class.
REPLY_TYPES: tuple[type, ...] = Reply.__args__


def encode(reply: Reply) -> bytes:
    """Returns the exact bytes beanstalkd 1.12 sends for ``reply``."""
    if not isinstance(reply, REPLY_TYPES):
        raise TypeError(f"not a reply: {reply!r}")
    return reply.to_bytes()


# --------------------------------------------------------------------------- YAML


def _yaml_scalar(value: int | str | bool) -> str:
    # bool first: True is also an int, and beanstalkd writes it as a word.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def yaml_mapping(pairs: Iterable[tuple[str, int | str | bool]]) -> bytes:
    """``---\\n`` then ``key: value\\n`` per pair, in the given order; strings are verbatim."""
    lines = [f"{key}: {_yaml_scalar(value)}\n" for key, value in pairs]
    return ("---\n" + "".join(lines)).encode("utf-8")


def yaml_list(names: Iterable[str]) -> bytes:
    """``---\\n`` then ``- name\\n`` per name: the body of list-tubes and list-tubes-watched."""
    return ("---\n" + "".join(f"- {name}\n" for name in names)).encode("utf-8")


def yaml_records(records: Iterable[Iterable[tuple[str, int | str]]]) -> bytes:
    """``---\n`` then a YAML list of flat mappings, one per record: the body of ``list-jobs``
    (admin extension), e.g. ``- id: 5\n  pri: 0\n``. An empty list is ``---\n``."""
    lines = ["---\n"]
    for record in records:
        for index, (key, value) in enumerate(record):
            lines.append(f"{'- ' if index == 0 else '  '}{key}: {_yaml_scalar(value)}\n")
    return "".join(lines).encode("utf-8")


#: The fields of each job in a ``list-jobs`` page, in order (admin extension).
LIST_JOBS_KEYS: tuple[str, ...] = ("id", "state", "pri", "age", "size")

#: ``stats-job`` keys in 1.12's order (§6.1).
STATS_JOB_KEYS: tuple[str, ...] = (
    "id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file",
    "reserves", "timeouts", "releases", "buries", "kicks",
)

#: ``stats-tube`` keys in 1.12's order (§6.2).
STATS_TUBE_KEYS: tuple[str, ...] = (
    "name", "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
    "current-jobs-delayed", "current-jobs-buried", "total-jobs", "current-using",
    "current-watching", "current-waiting", "cmd-delete", "cmd-pause-tube", "pause",
    "pause-time-left",
)

#: The ``cmd-*`` keys of ``stats``, in order; reserve-job, kick-job and quit are not reported.
STATS_CMD_KEYS: tuple[str, ...] = tuple(
    "cmd-" + command
    for command in (
        "put", "peek", "peek-ready", "peek-delayed", "peek-buried", "reserve",
        "reserve-with-timeout", "delete", "release", "use", "watch", "ignore", "bury", "kick",
        "touch", "stats", "stats-job", "stats-tube", "list-tubes", "list-tube-used",
        "list-tubes-watched", "pause-tube",
    )
)

#: ``stats`` keys in 1.12's order (§6.3).
STATS_KEYS: tuple[str, ...] = (
    "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
    "current-jobs-delayed", "current-jobs-buried",
    *STATS_CMD_KEYS,
    "job-timeouts", "total-jobs", "max-job-size", "current-tubes", "current-connections",
    "current-producers", "current-workers", "current-waiting", "total-connections", "pid",
    "version", "rusage-utime", "rusage-stime", "uptime", "binlog-oldest-index",
    "binlog-current-index", "binlog-records-migrated", "binlog-records-written",
    "binlog-max-size", "draining", "id", "hostname", "os", "platform",
)
