"""``ClientConnection``: the client side of one beanstalk connection, without any I/O.

Theory of operation. ``send(request)`` returns the bytes of a request. The caller feeds the
bytes the server sends with ``receive_data`` and pulls replies with ``next_reply`` until it
says ``NEED_DATA``. A reply is one line, and for ``RESERVED``, ``FOUND``, ``OK`` (and the
extension's ``RESUMED``) a body of the announced size plus CRLF. Which reply a line is never
depends on the request it answers (``BURIED`` and ``BURIED <id>``, ``KICKED`` and
``KICKED <n>`` differ by their words), so the parser needs no knowledge of what was sent:
matching replies to requests is the caller's job.

Two reading states: LINE (look for CRLF) and BODY (wait for size + 2 bytes). Because the
parser only ever looks at complete lines and complete bodies, how TCP split the bytes cannot
change what comes out.

Bounds: a reply line longer than ``MAX_REPLY_LINE`` bytes, a body larger than
``max_body_size`` or anything that is not a beanstalkd reply raises ``ProtocolError`` (the
connection is then unusable). While ``next_reply`` returns NEED_DATA the buffer holds at most
one line (< MAX_REPLY_LINE + 2 bytes) or one body (<= max_body_size + 2 bytes).
"""

from __future__ import annotations

import re
from typing import Callable

from .connection import MAX_JOB_SIZE_LIMIT, NEED_DATA
from .fields import U64_MAX, is_valid_session_id
from .replies import (
    Authenticated,
    AuthFailed,
    AuthRequired,
    PermissionDenied,
    BadFormat,
    Buried,
    DeadlineSoon,
    Deleted,
    Draining,
    ExpectedCrlf,
    Found,
    Inserted,
    InternalError,
    JobTooBig,
    Kicked,
    Moved,
    NotFound,
    NotIgnored,
    Ok,
    OutOfMemory,
    Paused,
    Purged,
    Exists,
    Released,
    Reserved,
    Resumed,
    Session,
    TimedOut,
    Touched,
    UnknownCommand,
    Using,
    Watching,
)
from .requests import (
    Bury,
    Delete,
    Put,
    PutKey,
    Release,
    Request,
    Reserve,
    ReserveWithTimeout,
    Touch,
    encode_request,
)

#: The longest reply line accepted, CRLF excluded (the longest real one is ``USING`` and a
#: 200-byte tube name).
MAX_REPLY_LINE = 512


class ProtocolError(ValueError):
    """The server sent bytes that are not a beanstalkd reply; the connection cannot go on."""


_WORDS = {
    reply.word[:-2]: reply
    for reply in (
        DeadlineSoon(), TimedOut(), Deleted(), NotFound(), Released(), Touched(), NotIgnored(),
        Paused(), BadFormat(), UnknownCommand(), ExpectedCrlf(), JobTooBig(), OutOfMemory(),
        InternalError(), Draining(), Authenticated(), AuthFailed(), AuthRequired(),
        PermissionDenied(),
    )
}


def _number(word: bytes) -> int:
    if not word.isdigit() or len(word) > 20:
        raise ProtocolError(f"not a number: {word!r}")
    value = int(word)
    if value > U64_MAX:
        raise ProtocolError(f"number out of range: {word!r}")
    return value


def _one_number(make: Callable[[int], object]) -> Callable[[list[bytes]], object]:
    def parse(args: list[bytes]) -> object:
        if len(args) != 1:
            raise ProtocolError("expected one number")
        return make(_number(args[0]))
    return parse


def _optional_number(make: Callable[..., object]) -> Callable[[list[bytes]], object]:
    def parse(args: list[bytes]) -> object:
        if len(args) > 1:
            raise ProtocolError("expected at most one number")
        return make(_number(args[0])) if args else make()
    return parse


def _using(args: list[bytes]) -> Using:
    if len(args) != 1:
        raise ProtocolError("USING needs one tube name")
    try:
        return Using(args[0].decode("ascii"))
    except UnicodeDecodeError as error:
        raise ProtocolError("tube name is not ASCII") from error


#: Reply word -> parser of the remaining words, for replies without a body.
LINE_REPLIES: dict[bytes, Callable[[list[bytes]], object]] = {
    b"INSERTED": _one_number(Inserted),
    b"BURIED": _optional_number(Buried),
    b"USING": _using,
    b"WATCHING": _one_number(Watching),
    b"KICKED": _optional_number(Kicked),
}

#: Reply word -> (number of words before the size, maker(numbers, body)), for replies with a body.
BODY_REPLIES: dict[bytes, tuple[int, Callable[..., object]]] = {
    b"RESERVED": (1, lambda numbers, body: Reserved(numbers[0], body)),
    b"FOUND": (1, lambda numbers, body: Found(numbers[0], body)),
    b"OK": (0, lambda numbers, body: Ok(body)),
}


def _session(args: list[bytes]) -> Session:
    if len(args) != 1 or not is_valid_session_id(args[0]):
        raise ProtocolError("SESSION needs one session id")
    return Session(args[0].decode("ascii"))


def _resumed(numbers: list[int], body: bytes) -> Resumed:
    """RESUMED's body is a YAML list of job ids, as list-tubes writes names."""
    text = body.decode("ascii", "replace")
    if not text.startswith("---\n"):
        raise ProtocolError("RESUMED's list does not start with ---")
    entries = text[4:].splitlines()
    if not all(entry.startswith("- ") for entry in entries):
        raise ProtocolError("RESUMED's list has a line that is not an entry")
    return Resumed(tuple(_number(entry[2:].encode()) for entry in entries))


# The extensions' replies (docs/reference/extensions.md).
LINE_REPLIES[b"SESSION"] = _session
BODY_REPLIES[b"RESUMED"] = (0, _resumed)
LINE_REPLIES[b"PURGED"] = _one_number(Purged)
LINE_REPLIES[b"MOVED"] = _one_number(Moved)
LINE_REPLIES[b"EXISTS"] = _one_number(Exists)


# The commands a worker and a producer send most, written without encode_request's generic
# field lookup (the same bytes: the tests compare both). A client that has only the fields, not
# a request object, calls these directly.

def put_bytes(pri: int, delay_s: int, ttr_s: int, body: bytes) -> bytes:
    return b"put %d %d %d %d\r\n%b\r\n" % (pri, delay_s, ttr_s, len(body), body)


def put_key_bytes(key: str, put: bytes) -> bytes:
    """``put-key <key> …`` from the bytes of the plain ``put …`` (``put_bytes``) it replaces."""
    return b"put-key %b%b" % (key.encode("ascii"), put[3:])


def reserve_bytes(timeout_s: int | None) -> bytes:
    """``reserve`` (None) or ``reserve-with-timeout <timeout_s>``."""
    return b"reserve\r\n" if timeout_s is None else b"reserve-with-timeout %d\r\n" % timeout_s


def delete_bytes(job_id: int) -> bytes:
    return b"delete %d\r\n" % job_id


def release_bytes(job_id: int, pri: int, delay_s: int) -> bytes:
    return b"release %d %d %d\r\n" % (job_id, pri, delay_s)


def bury_bytes(job_id: int, pri: int) -> bytes:
    return b"bury %d %d\r\n" % (job_id, pri)


def touch_bytes(job_id: int) -> bytes:
    return b"touch %d\r\n" % job_id


_FAST: dict[type, Callable[..., bytes]] = {
    Put: lambda r: put_bytes(r.pri, r.delay_s, r.ttr_s, r.body),
    PutKey: lambda r: put_key_bytes(r.key, put_bytes(r.pri, r.delay_s, r.ttr_s, r.body)),
    Reserve: lambda r: reserve_bytes(None),
    ReserveWithTimeout: lambda r: reserve_bytes(r.timeout_s),
    Delete: lambda r: delete_bytes(r.job_id),
    Touch: lambda r: touch_bytes(r.job_id),
    Release: lambda r: release_bytes(r.job_id, r.pri, r.delay_s),
    Bury: lambda r: bury_bytes(r.job_id, r.pri),
}


# The replies a producer and a worker get most, read by one regular expression from the buffer
# (the same replies as the general path below, which takes over when a number is out of range:
# tests/protocol/test_protocol_client.py feeds both every reply shape).
_HOT = re.compile(rb"(?:INSERTED ([0-9]{1,20})|RESERVED ([0-9]{1,20}) ([0-9]{1,20})"
                  rb"|(DELETED|RELEASED|TOUCHED|TIMED_OUT|NOT_FOUND|DEADLINE_SOON))\r\n")
_RESERVED_MAKER = BODY_REPLIES[b"RESERVED"][1]


class ClientConnection:
    """The client side of one connection: requests to bytes, bytes to replies."""

    def __init__(self, max_body_size: int = MAX_JOB_SIZE_LIMIT):
        self.max_body_size = max_body_size
        self._buffer = bytearray()
        # In BODY: (maker, numbers, size) of the reply whose body is awaited.
        self._body: tuple[Callable[..., object], list[int], int] | None = None

    def send(self, request: Request) -> bytes:
        """Returns the bytes to write for ``request``."""
        fast = _FAST.get(type(request))
        return fast(request) if fast is not None else encode_request(request)

    def receive_data(self, data: bytes) -> None:
        """Appends bytes from the server."""
        self._buffer += data

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet returned as replies."""
        return len(self._buffer)

    def next_reply(self) -> object:
        """Returns the next complete reply or ``NEED_DATA``; raises ``ProtocolError``."""
        if not self._buffer:  # nothing can be complete: even an empty body ends in CRLF
            return NEED_DATA
        if self._body is None:
            hot = _HOT.match(self._buffer)
            if hot is not None and (reply := self._hot_reply(hot)) is not None:
                return reply
            line = self._take_line()
            if line is None:
                return NEED_DATA
            reply = self._parse_line(line)
            if reply is not None:
                return reply
        return self._take_body()

    # ------------------------------------------------------------------ helpers

    def _hot_reply(self, hot: re.Match) -> object | None:
        """The reply ``_HOT`` matched (NEED_DATA while a RESERVED body is incomplete), or None
        to leave a number out of range to the general path."""
        inserted, job, size, word = hot.groups()
        if word is not None:
            del self._buffer[: hot.end()]
            return _WORDS[word]
        if inserted is not None:
            job_id = int(inserted)
            if job_id > U64_MAX:
                return None
            del self._buffer[: hot.end()]
            return Inserted(job_id)
        job_id, length = int(job), int(size)
        if job_id > U64_MAX or length > self.max_body_size:
            return None
        body = self._cut_body(hot.end(), length)
        if body is not None:
            return Reserved(job_id, body)
        del self._buffer[: hot.end()]
        self._body = (_RESERVED_MAKER, [job_id], length)
        return NEED_DATA

    def _take_line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n", 0, MAX_REPLY_LINE + 2)
        if end < 0:
            if len(self._buffer) >= MAX_REPLY_LINE + 2:
                raise ProtocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _parse_line(self, line: bytes) -> object | None:
        """A reply without body, or None after entering BODY for one with a body."""
        word, *args = line.split(b" ")
        if word in _WORDS and not args:
            return _WORDS[word]
        parse = LINE_REPLIES.get(word)
        if parse is not None:
            return parse(args)
        shape = BODY_REPLIES.get(word)
        if shape is None:
            raise ProtocolError(f"unknown reply {line[:64]!r}")
        count, maker = shape
        if len(args) != count + 1:
            raise ProtocolError(f"malformed reply {line[:64]!r}")
        numbers = [_number(arg) for arg in args]
        size = numbers.pop()
        if size > self.max_body_size:
            raise ProtocolError(f"reply body of {size} bytes exceeds {self.max_body_size}")
        self._body = (maker, numbers, size)
        return None

    def _take_body(self) -> object:
        assert self._body is not None
        maker, numbers, size = self._body
        body = self._cut_body(0, size)
        if body is None:
            return NEED_DATA
        self._body = None
        return maker(numbers, body)

    def _cut_body(self, start: int, size: int) -> bytes | None:
        """The ``size``-byte body at ``start`` in the buffer, removed with everything before it
        and its CRLF; None while incomplete; ProtocolError if no CRLF follows it."""
        end = start + size
        if len(self._buffer) < end + 2:
            return None
        if self._buffer[end : end + 2] != b"\r\n":
            raise ProtocolError("reply body does not end in CRLF")
        body = bytes(self._buffer[start:end])
        del self._buffer[: end + 2]
        return body
