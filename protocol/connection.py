"""``ServerConnection``: beanstalkd 1.12's framing of one client connection, without any I/O.

Theory of operation. The caller feeds bytes with ``receive_data`` and pulls requests with
``next_request`` until it says ``NEED_DATA``; ``send`` turns a reply into bytes. The only state
is the unparsed input and which of these reading states it is in (one handler each, chosen
from a table):

COMMAND  Look for a line in the *window*: the first 224 bytes of the buffer. The line ends at
         the window's first CR, and only if an LF follows it; a CR followed by anything else
         means no line can end in this window. A full window without a line is dropped and
         we move to DISCARD. A line is handed to ``commands.parse_line``.
DISCARD  The rest of an over-long line (beanstalkd's STATE_WANT_ENDLINE): the same search in
         fresh 224-byte windows, dropping each full one. The first line end yields a single
         BAD_FORMAT and we are back in COMMAND after it. This also gives the 225-byte anomaly:
         223 characters + CRLF fill the window with the CR last, so the LF opens the next
         window and the following command is swallowed as the tail of the long line.
BODY     A put header was accepted (beanstalkd has allocated a job id). Wait for size + 2
         bytes: a Put (a PutKey for ``put-key``) if they end in CRLF, else EXPECTED_CRLF. What
         follows is the next command.
SKIP     A put announced more than max_job_size: count size + 2 bytes down as they arrive,
         without keeping them, then JOB_TOO_BIG.
CLOSED   After ``quit``: input is ignored.

Short cuts in COMMAND for a worker's and a producer's most frequent lines: a ``put`` in its
plainest form (single spaces, at most ten digits per number) whose body has arrived whole, CRLF
included, is read in one pattern match (``_whole_put``), and so are ``delete <id>`` and
``reserve-with-timeout <seconds>`` with one space and at most nine digits (``_PLAIN_LINE``).
They give exactly what the states above give for those bytes; anything else (another spacing, a
number out of range, a body too big or not all there, no CRLF after it) goes through them.

Why windows: beanstalkd reads a command into a 224-byte buffer and rescans the whole buffer
after every read, so its decisions depend only on the window's contents, never on how TCP
split the bytes. Scanning the same window makes this parser split-independent as well.

Memory: whenever ``next_request`` returns NEED_DATA the buffer holds fewer than 224 bytes
(COMMAND, DISCARD), fewer than size + 2 (BODY) or nothing (SKIP, CLOSED).
"""

from __future__ import annotations

import enum
import re
from typing import Callable, Union

from .commands import PutHeader, parse_line
from .fields import U32_MAX
from .replies import BadFormat, ExpectedCrlf, JobTooBig, Reply, encode
from .requests import (Delete, ImportJob, PutKey, Quit, Rejected, Request, ReserveWithTimeout,
                       new_put)

#: beanstalkd's LINE_BUF_SIZE: the longest command line, CRLF included.
LINE_BUF_SIZE = 224
#: The largest max-job-size beanstalkd accepts (larger -z values are clamped to it).
MAX_JOB_SIZE_LIMIT = 1073741824
#: beanstalkd's default max-job-size (-z).
DEFAULT_MAX_JOB_SIZE = 65535
# Up to this many bytes, ``_pop`` copies by slicing (see there).
_SLICE_BYTES = 4096
# The short cuts' lines (see the theory of operation), 49 bytes at most, well inside a window.
_PLAIN_PUT = re.compile(rb"put ([0-9]{1,10}) ([0-9]{1,10}) ([0-9]{1,10}) ([0-9]{1,10})\r\n")
_PLAIN_LINE = re.compile(rb"(delete|reserve-with-timeout) ([0-9]{1,9})\r\n")
# What such a line is: nine digits fit a job id and, unchanged by 1.12's (int) strtol, a timeout.
_PLAIN_REQUESTS = {b"delete": Delete, b"reserve-with-timeout": ReserveWithTimeout}


class _Sentinel:
    """A named singleton, printed by its name."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``next_request`` returns this when it needs more bytes to say anything.
NEED_DATA = _Sentinel("NEED_DATA")
# A handler returns this when it changed state and the next handler should run at once.
_AGAIN = _Sentinel("_AGAIN")

Event = Union[Request, Rejected]


class _State(enum.Enum):
    COMMAND = "command"
    DISCARD = "discard"
    BODY = "body"
    SKIP = "skip"
    CLOSED = "closed"


class ServerConnection:
    """The server side of one beanstalk connection: bytes in, requests out, replies to bytes."""

    def __init__(self, max_job_size: int = DEFAULT_MAX_JOB_SIZE):
        if not 0 <= max_job_size <= MAX_JOB_SIZE_LIMIT:
            raise ValueError(f"max_job_size must be 0..{MAX_JOB_SIZE_LIMIT}, not {max_job_size}")
        self.max_job_size = max_job_size
        self._buffer = bytearray()
        self._state = _State.COMMAND
        self._header: PutHeader | None = None  # the accepted put header while in BODY
        self._skip_left = 0  # bytes still to discard while in SKIP
        self._skip_command = "put"  # the command whose oversized body is being discarded

    # ------------------------------------------------------------------ public interface

    def receive_data(self, data: bytes) -> None:
        """Appends bytes from the client. Bytes of an oversized put body are only counted."""
        if self._state is _State.CLOSED:
            return
        view = memoryview(data)
        if self._state is _State.SKIP and self._skip_left:
            # The buffer is empty in SKIP while bytes are still owed (the handler emptied it),
            # so these bytes are exactly the next ones of the body being thrown away.
            taken = min(len(view), self._skip_left)
            self._skip_left -= taken
            view = view[taken:]
        self._buffer += view

    def next_request(self) -> Event | _Sentinel:
        """Returns the next request, a ``Rejected``, or ``NEED_DATA``."""
        while True:
            result = self._HANDLERS[self._state](self)
            if result is not _AGAIN:
                return result

    def send(self, reply: Reply) -> bytes:
        """Returns the bytes to write for ``reply``."""
        return encode(reply)

    @property
    def in_put_body(self) -> bool:
        """True between an accepted put header and the end of its body.

        beanstalkd has allocated the job id by then, so a connection that ends now still
        consumes an id (§12 T16). It reflects what ``next_request`` has parsed, so ask after
        it returned NEED_DATA. An oversized put (being discarded) does not count.
        """
        return self._state is _State.BODY

    @property
    def buffered_bytes(self) -> int:
        """How many received bytes are held, not yet parsed (for backpressure)."""
        return len(self._buffer)

    # ------------------------------------------------------------------ state handlers

    def _on_command(self) -> Event | _Sentinel:
        if self._buffer.startswith(b"put "):
            put = self._whole_put()
            if put is not None:
                return put
        else:
            found = _PLAIN_LINE.match(self._buffer)
            if found is not None:
                # The groups are read before the buffer changes: a match reads them from it.
                request = _PLAIN_REQUESTS[bytes(found[1])](int(found[2]))
                del self._buffer[:found.end()]
                return request
        line = self._take_line()
        if line is not None:
            return self._dispatch(line)
        if len(self._buffer) < LINE_BUF_SIZE:
            return NEED_DATA
        del self._buffer[:LINE_BUF_SIZE]
        self._state = _State.DISCARD
        return _AGAIN

    def _on_discard(self) -> Event | _Sentinel:
        if self._take_line() is not None:
            self._state = _State.COMMAND
            return Rejected(BadFormat())
        if len(self._buffer) < LINE_BUF_SIZE:
            return NEED_DATA
        del self._buffer[:LINE_BUF_SIZE]
        return _AGAIN

    def _on_body(self) -> Event | _Sentinel:
        header = self._header
        assert header is not None
        size = header.size
        if len(self._buffer) < size + 2:
            return NEED_DATA
        ends_in_crlf = self._buffer.startswith(b"\r\n", size)
        body = self._pop(size, 2)
        self._header = None
        self._state = _State.COMMAND
        if not ends_in_crlf:
            return Rejected(ExpectedCrlf(), counted=header.command, producer=True, burns_id=True)
        if header.state is not None:
            return ImportJob(header.key, header.state, header.pri, header.delay_s, header.ttr_s,
                             body)
        if header.key is not None:
            return PutKey(header.key, header.pri, header.delay_s, header.ttr_s, body)
        return new_put(header.pri, header.delay_s, header.ttr_s, body)

    def _on_skip(self) -> Event | _Sentinel:
        taken = min(len(self._buffer), self._skip_left)
        del self._buffer[:taken]
        self._skip_left -= taken
        if self._skip_left:
            return NEED_DATA
        self._state = _State.COMMAND
        return Rejected(JobTooBig(), counted=self._skip_command)

    def _on_closed(self) -> _Sentinel:
        return NEED_DATA

    _HANDLERS: dict[_State, Callable[[ServerConnection], Event | _Sentinel]] = {
        _State.COMMAND: _on_command,
        _State.DISCARD: _on_discard,
        _State.BODY: _on_body,
        _State.SKIP: _on_skip,
        _State.CLOSED: _on_closed,
    }

    # ------------------------------------------------------------------ helpers

    def _whole_put(self) -> Request | None:
        """The put short cut: a plain put and all of its body, or None (nothing consumed)."""
        buffer = self._buffer
        found = _PLAIN_PUT.match(buffer)
        if found is None:
            return None
        size = int(found[4])
        start = found.end()
        end = start + size
        if size > self.max_job_size or len(buffer) < end + 2 \
                or buffer[end] != 0x0D or buffer[end + 1] != 0x0A:
            return None
        pri, delay_s, ttr_s = int(found[1]), int(found[2]), int(found[3])
        if pri > U32_MAX or delay_s > U32_MAX or ttr_s > U32_MAX:
            return None
        del buffer[:start]
        return new_put(pri, delay_s, ttr_s, self._pop(size, 2))

    def _take_line(self) -> bytes | None:
        """Removes and returns the line (without CRLF) ending in the window, if there is one."""
        window = min(len(self._buffer), LINE_BUF_SIZE)
        # Only the first CR counts, and it must have its LF inside the window too.
        cr = self._buffer.find(b"\r", 0, max(window - 1, 0))
        if cr < 0 or self._buffer[cr + 1] != 0x0A:
            return None
        return self._pop(cr, 2)

    def _pop(self, count: int, dropped: int = 0) -> bytes:
        """Removes the first ``count`` buffered bytes and returns them, and drops ``dropped``
        more (a CRLF). A big body is copied once, through a view; a small one by a slice,
        which costs a second copy but fewer steps."""
        if count <= _SLICE_BYTES:
            data = bytes(self._buffer[:count])
        else:
            with memoryview(self._buffer) as view:
                data = view[:count].tobytes()
        del self._buffer[: count + dropped]
        return data

    def _dispatch(self, line: bytes) -> Event | _Sentinel:
        """Parses a complete line; a put header moves us to BODY or SKIP instead of returning."""
        parsed = parse_line(line)
        if isinstance(parsed, PutHeader):
            return self._start_put(parsed)
        if isinstance(parsed, Quit):
            self._state = _State.CLOSED
            self._buffer.clear()
        return parsed

    def _start_put(self, header: PutHeader) -> Event | _Sentinel:
        # beanstalkd's order: the size limit first (even with trailing text), then trailing text.
        if header.size > self.max_job_size:
            self._skip_left = header.size + 2
            self._skip_command = header.command
            self._state = _State.SKIP
            return _AGAIN
        if header.trailing:
            return Rejected(BadFormat(), counted=header.command)
        self._header = header
        self._state = _State.BODY
        return self._on_body()  # the body has usually arrived with its header
