"""Turning one command line into a request, by beanstalkd 1.12's prefix table.

Theory of operation. ``parse_line`` gets the bytes of one line without its CRLF.

1. A NUL byte anywhere makes the line BAD_FORMAT before any command is looked at.
2. The line is compared with the prefixes of ``ALL_COMMANDS`` in beanstalkd's order, and the first
   prefix that matches decides the command, however nonsensical the rest: ``reservex`` is a
   malformed ``reserve``, ``stats-tube`` without a name a malformed ``stats``, and
   ``pause-tubedefault 0`` a valid pause of ``default``. No prefix matches: UNKNOWN_COMMAND.
   Matching is case-sensitive.
3. The command's handler reads the rest of the line with the readers of ``fields``; any
   ``FormatError`` becomes BAD_FORMAT, not counted in ``cmd-*``.

A put line does not make a request on its own: ``parse_line`` returns a ``PutHeader`` and the
connection, which knows max-job-size, decides whether to read the body or discard it. A
``put-key`` line (extension) is a put header with a key and follows exactly the same path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Union

from .fields import (
    U32_MAX,
    U64_MAX,
    LIST_STATES,
    MAX_LIST_LIMIT,
    IMPORT_STATES,
    PURGE_STATES,
    FormatError,
    is_valid_tube_name,
    name_run_end,
    read_c_int_timeout,
    read_kick_bound,
    read_number,
    read_number_strict,
    read_auth,
    read_put_key,
    read_session_id,
    read_state,
    read_tube_name,
    read_word_number,
    split_words,
)
from .replies import BadFormat, UnknownCommand
from .requests import (
    Auth,
    Bury,
    Delete,
    Ignore,
    Kick,
    KickJob,
    ListJobs,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    MoveBuried,
    MoveJob,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    PurgeTube,
    Quit,
    Rejected,
    Release,
    Request,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    SessionId,
    SessionResume,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Watch,
)


@dataclass(frozen=True, slots=True)
class PutHeader:
    """A parsed ``put`` line. ``trailing`` is True when bytes follow ``<bytes>`` on the line;
    ``key`` is the key of a ``put-key`` or ``import-job`` line, None for a plain ``put``;
    ``state`` is the job state of an ``import-job`` line, None otherwise."""

    pri: int
    delay_s: int
    ttr_s: int
    size: int
    trailing: bool
    key: str | None = None
    state: str | None = None

    @property
    def command(self) -> str:
        """The command whose ``cmd-*`` counter this header counts in (put-key counts as put)."""
        return "put" if self.state is None else "import-job"


_new = object.__new__
(_set_pri, _set_delay, _set_ttr, _set_size, _set_trailing, _set_key, _set_state) = (
    getattr(PutHeader, name).__set__
    for name in ("pri", "delay_s", "ttr_s", "size", "trailing", "key", "state"))


def _new_header(pri: int, delay_s: int, ttr_s: int, size: int, trailing: bool,
                key: str | None = None, state: str | None = None) -> PutHeader:
    """``PutHeader(...)`` through the slots' own setters: the same frozen object in about half
    the time of the generated ``__init__`` (see ``requests.new_put``); made for every put."""
    header = _new(PutHeader)
    _set_pri(header, pri)
    _set_delay(header, delay_s)
    _set_ttr(header, ttr_s)
    _set_size(header, size)
    _set_trailing(header, trailing)
    _set_key(header, key)
    _set_state(header, state)
    return header


Parsed = Union[Request, Rejected, PutHeader]
Handler = Callable[[bytes], Parsed]


# put's four numbers, each read as ``read_number`` reads one: spaces, then the whole digit run
# (``++`` gives nothing back). After a whole run the next byte is not a digit, so a following
# number needs at least one space: this matches exactly where four read_number calls succeed.
_PUT_NUMBERS = re.compile(rb" *+([0-9]++) ++([0-9]++) ++([0-9]++) ++([0-9]++)")


def _put(rest: bytes, pos: int = 0, key: str | None = None) -> PutHeader:
    """put's four numbers from ``pos`` on (``key``: a put-key's, read before them)."""
    found = _PUT_NUMBERS.match(rest, pos)
    if found is None:
        raise FormatError("put needs four numbers")
    pri, delay_s, ttr_s, size = int(found[1]), int(found[2]), int(found[3]), int(found[4])
    if pri > U32_MAX or delay_s > U32_MAX or ttr_s > U32_MAX or size > U32_MAX:
        raise FormatError("number out of range")
    # Trailing text is judged by the connection: JOB_TOO_BIG takes precedence over it.
    return _new_header(pri, delay_s, ttr_s, size, found.end() != len(rest), key)


def _put_key(rest: bytes) -> PutHeader:
    # The key first, then exactly put's arguments, read by put's own rules.
    key, pos = read_put_key(rest)
    return _put(rest, pos, key)


def _import_job(rest: bytes) -> PutHeader:
    # Strict like the admin commands: six words, single spaces. The delay is the time left of a
    # delayed job, so only a delayed job has one (and must).
    key, state, pri, delay, ttr, size = split_words(rest, 6)
    key_text, end = read_put_key(key)
    state_text = read_state(state, IMPORT_STATES)
    delay_s = read_word_number(delay, 0, U32_MAX)
    if (state_text == "delayed") != (delay_s > 0):
        raise FormatError("only a delayed job has a delay")
    return PutHeader(read_word_number(pri, 0, U32_MAX), delay_s, read_word_number(ttr, 0, U32_MAX),
                     read_word_number(size, 0, U32_MAX), False, key_text, state_text)


def _release(rest: bytes) -> Release:
    job_id, pos = read_number(rest, 0, U64_MAX)
    pri, pos = read_number(rest, pos, U32_MAX)
    return Release(job_id, pri, read_number_strict(rest, pos, U32_MAX))


def _bury(rest: bytes) -> Bury:
    job_id, pos = read_number(rest, 0, U64_MAX)
    return Bury(job_id, read_number_strict(rest, pos, U32_MAX))


def _pause_tube(rest: bytes) -> PauseTube | Rejected:
    # The prefix has no trailing space; spaces before the name are skipped, then the name is
    # the longest run of name characters -- digits included, so "default10" is all name.
    start = 0
    while start < len(rest) and rest[start] == 0x20:
        start += 1
    end = name_run_end(rest, start)
    delay_s = read_number_strict(rest, end, U32_MAX)
    name = rest[start:end]
    if not is_valid_tube_name(name):
        # 1.12 has already counted cmd-pause-tube when it checks the name's length and "-".
        return Rejected(BadFormat(), counted="pause-tube")
    return PauseTube(name.decode("ascii"), delay_s)


def _purge_tube(rest: bytes) -> PurgeTube:
    tube, state = split_words(rest, 2)
    return PurgeTube(read_tube_name(tube), read_state(state, PURGE_STATES))


def _list_jobs(rest: bytes) -> ListJobs:
    tube, state, offset, limit = split_words(rest, 4)
    return ListJobs(read_tube_name(tube), read_state(state, LIST_STATES),
                    read_word_number(offset, 0, U32_MAX),
                    read_word_number(limit, 1, MAX_LIST_LIMIT))


def _move_job(rest: bytes) -> MoveJob:
    job_id, tube = split_words(rest, 2)
    return MoveJob(read_word_number(job_id, 0, U64_MAX), read_tube_name(tube))


def _move_buried(rest: bytes) -> MoveBuried:
    source, target = split_words(rest, 2)
    return MoveBuried(read_tube_name(source), read_tube_name(target))


def _auth(rest: bytes) -> Auth | Rejected:
    try:
        return Auth(*read_auth(rest))
    except FormatError:
        return Rejected(BadFormat(), auth=True)


def _job_id(request_type: type) -> Handler:
    """Handler for ``<command> <id>`` where the id must end the line."""
    return lambda rest: request_type(read_number_strict(rest, 0, U64_MAX))


def _tube(request_type: type) -> Handler:
    """Handler for ``<command> <tube>``: the name is the whole rest, no space skipping."""
    return lambda rest: request_type(read_tube_name(rest))


def _exact(request_type: type) -> Handler:
    """Handler for a command without arguments: nothing may follow the prefix."""

    def handler(rest: bytes) -> Request:
        if rest:
            raise FormatError("no arguments expected")
        return request_type()

    return handler


#: beanstalkd 1.12's command prefixes, in the order it tries them (§2.1). The order matters:
#: "peek " before "peek-ready", "reserve-with-timeout " and "reserve-job " before "reserve",
#: "stats-job " and "stats-tube " before "stats", "list-tubes-watched" before "list-tubes".
BEANSTALKD_COMMANDS: tuple[tuple[bytes, Handler], ...] = (
    (b"put ", _put),
    (b"peek ", _job_id(Peek)),
    (b"peek-ready", _exact(PeekReady)),
    (b"peek-delayed", _exact(PeekDelayed)),
    (b"peek-buried", _exact(PeekBuried)),
    (b"reserve-with-timeout ", lambda rest: ReserveWithTimeout(read_c_int_timeout(rest))),
    (b"reserve-job ", _job_id(ReserveJob)),
    (b"reserve", _exact(Reserve)),
    (b"delete ", _job_id(Delete)),
    (b"release ", _release),
    (b"bury ", _bury),
    (b"kick ", lambda rest: Kick(read_kick_bound(rest))),
    (b"kick-job ", _job_id(KickJob)),
    (b"touch ", _job_id(Touch)),
    (b"stats-job ", _job_id(StatsJob)),
    (b"stats-tube ", _tube(StatsTube)),
    (b"stats", _exact(Stats)),
    (b"use ", _tube(Use)),
    (b"watch ", _tube(Watch)),
    (b"ignore ", _tube(Ignore)),
    (b"list-tubes-watched", _exact(ListTubesWatched)),
    (b"list-tube-used", _exact(ListTubeUsed)),
    (b"list-tubes", _exact(ListTubes)),
    (b"quit", lambda rest: Quit()),  # a prefix: "quitXYZ" quits too
    (b"pause-tube", _pause_tube),
)

#: BeanRaft's extensions (docs/reference/extensions.md). No prefix above matches them, so
#: every 1.12 command parses exactly as before, and beanstalkd answers UNKNOWN_COMMAND.
EXTENSION_COMMANDS: tuple[tuple[bytes, Handler], ...] = (
    (b"put-key ", _put_key),
    (b"session-id", _exact(SessionId)),
    (b"session-resume ", lambda rest: SessionResume(read_session_id(rest))),
    # Authentication (docs/reference/auth.md): the principal and its token, one space between.
    (b"auth ", _auth),
    # The admin extensions: strict single-space arguments (fields.split_words).
    (b"purge-tube ", _purge_tube),
    (b"list-jobs ", _list_jobs),
    (b"move-job ", _move_job),
    (b"move-buried ", _move_buried),
    (b"import-job ", _import_job),
)

ALL_COMMANDS = BEANSTALKD_COMMANDS + EXTENSION_COMMANDS

#: ``ALL_COMMANDS`` split by the prefix's first byte, each list in the table's order: a line is
#: compared only with the prefixes that begin as it does, and the first of those that matches is
#: the first of the whole table that matches (a prefix that starts otherwise cannot match).
_BY_FIRST_BYTE: dict[int, tuple[tuple[bytes, Handler], ...]] = {
    first: tuple(entry for entry in ALL_COMMANDS if entry[0][0] == first)
    for first in {prefix[0] for prefix, _ in ALL_COMMANDS}
}


def parse_line(line: bytes) -> Parsed:
    """Parses one command line (CRLF removed) into a request, a ``Rejected`` or a put header."""
    if b"\x00" in line:
        return Rejected(BadFormat())
    for prefix, handler in _BY_FIRST_BYTE.get(line[0], ()) if line else ():
        if line.startswith(prefix):
            try:
                return handler(line[len(prefix) :])
            except FormatError:
                return Rejected(BadFormat())
    return Rejected(UnknownCommand())
