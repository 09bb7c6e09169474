"""Goal: the short cuts of the hot path give exactly what the plain readers give.

Method: hypothesis compares, on arbitrary and on near-miss input, (1) put's one-pattern
reader with four ``read_number`` calls as beanstalkd reads them, (2) ``parse_line``'s lookup by
first byte with a scan of every prefix in beanstalkd's order, and (3) the reply bytes the node
writes without building a reply (``translate.to_wire``) with the encoded reply, (4) the
parser's quick constructors of ``Put`` and ``PutHeader`` with the dataclasses' own: equal, equally
hashed, every field set, and still frozen, (5) a connection's short cut for a whole plain put
(``ServerConnection._whole_put``) with its states' general path: the same stream fed whole
(where the short cut reads what it can) and one byte at a time (where it never has a whole put
before it), and (6) its short cut for plain ``delete`` and ``reserve-with-timeout`` lines with
``parse_line``, which the general path hands every line to.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from beanraft import protocol as p
from beanraft.node import translate
from beanraft.protocol import commands
from beanraft.protocol.commands import ALL_COMMANDS, PutHeader, parse_line
from beanraft.protocol import connection as connection_module
from beanraft.protocol.connection import NEED_DATA, ServerConnection
from beanraft.protocol.fields import U32_MAX, FormatError, read_number
from beanraft.protocol.requests import new_put

# Bytes that make put lines interesting: digits, spaces, other whitespace and signs.
_PUT_BYTES = st.lists(st.sampled_from(b"0123456789    \t+-x"), max_size=40).map(bytes)
_NUMBER = st.one_of(st.integers(0, 50), st.integers(U32_MAX - 2, U32_MAX + 2),
                    st.integers(0, 10**25))


def _put_by_read_number(rest: bytes) -> PutHeader | None:
    try:
        pri, pos = read_number(rest, 0, U32_MAX)
        delay_s, pos = read_number(rest, pos, U32_MAX)
        ttr_s, pos = read_number(rest, pos, U32_MAX)
        size, pos = read_number(rest, pos, U32_MAX)
    except FormatError:
        return None
    return PutHeader(pri, delay_s, ttr_s, size, pos != len(rest))


def _put_by_pattern(rest: bytes) -> PutHeader | None:
    try:
        return commands._put(rest)
    except FormatError:
        return None


@settings(max_examples=600, deadline=None)
@given(_PUT_BYTES)
@example(b"0 0 0 0")
@example(b"  1  2   3 4 ")
@example(b"1 2 3 4294967296")
@example(b"1 2 3")
@example(b"1 2 3 4x")
@example(b"01 002 3 4")
def test_puts_pattern_reads_what_four_read_number_calls_read(rest):
    assert _put_by_pattern(rest) == _put_by_read_number(rest)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NUMBER, min_size=4, max_size=4), st.lists(st.integers(1, 3), min_size=4,
                                                             max_size=4),
       st.sampled_from([b"", b" ", b"x", b" 5"]))
def test_puts_pattern_agrees_on_well_formed_lines_and_their_limits(numbers, spaces, tail):
    rest = b"".join(b" " * gap + str(n).encode() for gap, n in zip(spaces, numbers)) + tail
    assert _put_by_pattern(rest) == _put_by_read_number(rest)


def _parse_by_scan(line: bytes):
    """parse_line as it was: every prefix tried in order."""
    if b"\x00" in line:
        return p.Rejected(p.BadFormat())
    for prefix, handler in ALL_COMMANDS:
        if line.startswith(prefix):
            try:
                return handler(line[len(prefix):])
            except FormatError:
                return p.Rejected(p.BadFormat())
    return p.Rejected(p.UnknownCommand())


_WORDS = sorted({prefix for prefix, _handler in ALL_COMMANDS} | {b"", b"x", b"Put ", b"p"})


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(_WORDS), st.binary(max_size=30))
def test_the_lookup_by_first_byte_finds_the_command_a_scan_in_order_finds(word, rest):
    line = word + rest
    assert parse_line(line) == _parse_by_scan(line)


_RESULTS = st.one_of(
    st.tuples(st.just("INSERTED"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("RESERVED"), st.integers(0, 2**64 - 1), st.binary(max_size=300)),
    st.tuples(st.sampled_from(sorted(translate._SIMPLE))),
    st.tuples(st.just("FOUND"), st.integers(0, 2**64 - 1), st.binary(max_size=50)),
    st.tuples(st.just("USING"), st.sampled_from(["default", "a-b"])),
    st.tuples(st.just("WATCHING"), st.integers(0, 100)),
    st.tuples(st.just("KICKED"), st.integers(0, 100)),
    st.tuples(st.just("KICKED")),
    st.tuples(st.just("NO_SUCH_TAG")),
)


@settings(max_examples=400, deadline=None)
@given(_RESULTS)
@example(("INSERTED", 0))
@example(("RESERVED", 7, b""))
@example(("RESERVED", 7, b"\r\n%d %s"))
def test_the_reply_bytes_written_without_a_reply_are_the_encoded_replys(result):
    assert translate.to_wire(result) == p.encode(translate.to_reply(result))


@given(st.integers(0, U32_MAX), st.integers(0, U32_MAX), st.integers(0, U32_MAX),
       st.binary(max_size=64))
def test_the_parsers_put_is_the_dataclasss_put(pri, delay_s, ttr_s, body):
    made, plain = new_put(pri, delay_s, ttr_s, body), p.Put(pri, delay_s, ttr_s, body)
    assert type(made) is p.Put
    assert made == plain and hash(made) == hash(plain)
    assert dataclasses.astuple(made) == (pri, delay_s, ttr_s, body)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.pri = pri + 1


@given(st.integers(0, U32_MAX), st.integers(0, U32_MAX), st.integers(0, U32_MAX),
       st.integers(0, U32_MAX), st.booleans(), st.none() | st.text(max_size=8),
       st.none() | st.sampled_from(["ready", "buried", "delayed"]))
def test_the_parsers_put_header_is_the_dataclasss_header(pri, delay_s, ttr_s, size, trailing,
                                                         key, state):
    made = commands._new_header(pri, delay_s, ttr_s, size, trailing, key, state)
    plain = PutHeader(pri, delay_s, ttr_s, size, trailing, key, state)
    assert type(made) is PutHeader
    assert made == plain and hash(made) == hash(plain)
    assert dataclasses.astuple(made) == (pri, delay_s, ttr_s, size, trailing, key, state)
    assert commands._new_header(pri, delay_s, ttr_s, size, trailing) == PutHeader(
        pri, delay_s, ttr_s, size, trailing)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.size = size + 1


def _events(collect, stream: bytes, max_job_size: int, piece: int) -> tuple[list, bool, int]:
    """What a fresh connection gives for ``stream`` fed ``piece`` bytes at a time (each piece
    drained by conftest's ``collect``), and the state it is left in."""
    conn = ServerConnection(max_job_size)
    events = []
    for at in range(0, len(stream), piece):
        conn.receive_data(stream[at:at + piece])
        events += collect(conn)
    return events, conn.in_put_body, conn.buffered_bytes


_SPACES = st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"])
_DIGITS = st.one_of(st.integers(0, 300).map(lambda n: str(n).encode()),
                    st.sampled_from([b"0", b"007", b"4294967295", b"4294967296", b"9999999999",
                                     b"12345678901", b"", b"-1", b"+1"]))


@st.composite
def _put_streams(draw) -> bytes:
    """Puts near the plain form (spacing, numbers, sizes, body ends, trailing text), each
    followed by more input."""
    stream = b""
    for _ in range(draw(st.integers(1, 4))):
        body = draw(st.binary(max_size=12))
        size = draw(st.one_of(st.just(str(len(body)).encode()), _DIGITS))
        numbers = [draw(_DIGITS) for _ in range(3)] + [size]
        line = draw(st.sampled_from([b"put", b"put", b"put", b"Put", b"put-key"]))
        for number in numbers:
            line += draw(_SPACES) + number
        line += draw(st.sampled_from([b"", b"", b"", b" ", b"x", b"\x00"]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\rx"]))
        body_end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"xy", b""]))
        stream += line + end + body + body_end
    return stream + draw(st.sampled_from([b"", b"use a\r\n", b"put 1 2 3", b"put 1 2 3 4\r\nab"]))


@settings(max_examples=1500, deadline=None)
@given(_put_streams(), st.sampled_from([0, 5, 12, 65535]))
@example(b"put 1 2 3 2\r\nab\r\nput 4294967295 0 0 0\r\n\r\n", 65535)
@example(b"put 4294967296 0 0 2\r\nab\r\n", 65535)
@example(b"put 1 2 3 3\r\nab\r\n", 65535)
@example(b"put 1 2 3 6\r\nabcdef\r\n", 5)
@example(b"put 1 2 3 2\r\nabxy", 65535)
def test_a_whole_plain_put_gives_what_the_general_path_gives(collect, stream, max_job_size):
    whole = _events(collect, stream, max_job_size, len(stream) or 1)
    assert whole == _events(collect, stream, max_job_size, 1)


def test_the_short_cut_reads_a_whole_plain_put_and_nothing_else():
    conn = ServerConnection()
    conn.receive_data(b"put 1 2 3 2\r\nab\r\nuse a\r\n")
    assert conn._whole_put() == p.Put(1, 2, 3, b"ab")
    assert conn.buffered_bytes == len(b"use a\r\n")
    for partial in (b"put 1 2 3 2\r\nab\r", b"put 1 2 3 2\r\n", b"put 1  2 3 2\r\nab\r\n",
                    b"put 1 2 3 2 \r\nab\r\n", b"put 1 2 3 2\r\nabc\r\n",
                    b"put 4294967296 2 3 2\r\nab\r\n", b"put 1 2 3 70000\r\n"):
        conn = ServerConnection()
        conn.receive_data(partial)
        assert conn._whole_put() is None, partial
        assert conn.buffered_bytes == len(partial), partial


_LINE_NUMBERS = st.one_of(_DIGITS, st.integers(0, 10**12).map(lambda n: str(n).encode()),
                          st.sampled_from([b"2147483647", b"2147483648", b"999999999",
                                           b"1000000000", b"0000000001", b"1x", b"1 "]))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([b"delete", b"reserve-with-timeout", b"Delete", b"delete-job",
                        b"reserve-with-timeou", b"reserve"]),
       st.sampled_from([b" ", b" ", b" ", b"  ", b"\t", b""]), _LINE_NUMBERS,
       st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n\r\n", b" \r\n", b"\x00\r\n"]))
@example(b"delete", b" ", b"123456789", b"\r\n")
@example(b"reserve-with-timeout", b" ", b"999999999", b"\r\n")
@example(b"reserve-with-timeout", b" ", b"4294967295", b"\r\n")
def test_a_plain_delete_or_reserve_with_timeout_line_is_what_parse_line_makes_of_it(
        word, space, number, end):
    conn = ServerConnection()
    conn.receive_data(word + space + number + end + b"use a\r\n")
    assert conn.next_request() == parse_line((word + space + number + end)[:-2])
    assert conn.next_request() == p.Use("a")
    assert conn.next_request() is NEED_DATA


def test_the_short_cuts_read_their_lines_without_the_general_path(monkeypatch):
    def general_path(line):
        raise AssertionError(f"parse_line called for {line!r}")

    monkeypatch.setattr(connection_module, "parse_line", general_path)
    conn = ServerConnection()
    conn.receive_data(b"delete 12\r\nreserve-with-timeout 007\r\nput 1 0 2 3\r\nabc\r\n"
                      b"reserve\r\n")
    assert conn.next_request() == p.Delete(12)
    assert conn.next_request() == p.ReserveWithTimeout(7)
    assert conn.next_request() == p.Put(1, 0, 2, b"abc")
    assert conn.buffered_bytes == len(b"reserve\r\n")
    with pytest.raises(AssertionError, match="reserve"):
        conn.next_request()
