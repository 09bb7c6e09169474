"""Goal: ServerConnection frames a byte stream exactly as beanstalkd 1.12 does (§1, §4.1, §12).

Method: the parsing side of the reference transcripts is replayed as one client byte stream,
and the requests and rejections that come out are compared with beanstalkd's replies. Each
stream is fed whole, byte by byte and split at every possible point, because the same events
must come out however TCP cut the bytes. Memory use is checked through ``buffered_bytes``.
"""

from __future__ import annotations

import pytest

from beanraft.protocol import (
    NEED_DATA,
    BadFormat,
    ExpectedCrlf,
    Inserted,
    JobTooBig,
    Kick,
    ListTubeUsed,
    PauseTube,
    Peek,
    Put,
    Quit,
    Rejected,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    ServerConnection,
    StatsJob,
    UnknownCommand,
    Use,
)

BAD = Rejected(BadFormat())
UNKNOWN = Rejected(UnknownCommand())
TOO_BIG = Rejected(JobTooBig(), counted="put")
NO_CRLF = Rejected(ExpectedCrlf(), counted="put", producer=True, burns_id=True)
COUNTED_BAD_PUT = Rejected(BadFormat(), counted="put")


TRANSCRIPTS = {
    # name: (max_job_size, client bytes, expected events)
    "T2 size limit, drain on JOB_TOO_BIG, none on trailing text": (
        10,
        b"put 0 0 1 10\r\n0123456789\r\n"
        b"put 0 0 1 11\r\n01234567890\r\nput 0 0 1 1\r\nx\r\n"
        b"put 0 0 1 11 junk\r\n01234567890\r\n"
        b"put 0 0 1 1 junk\r\nA\r\n"
        b"put 0 0 1 1 \r\nA\r\n",
        [Put(0, 0, 1, b"0123456789"), TOO_BIG, Put(0, 0, 1, b"x"), TOO_BIG,
         COUNTED_BAD_PUT, UNKNOWN, COUNTED_BAD_PUT, UNKNOWN],
    ),
    "T3 EXPECTED_CRLF leaves its extra byte in front of the next line": (
        65535,
        b"put 0 0 1 3\r\nabcd\r\n"
        b"put 0 0 1 3\r\nabc\r\n"
        b"put 0 0 1 3\r\nab\n\r\n"
        b"put 0 0 1 4294967296\r\n",
        [NO_CRLF, UNKNOWN, UNKNOWN, Put(0, 0, 1, b"ab\n"), BAD],
    ),
    "T4 the 225-byte line swallows the next command": (
        65535,
        b"use " + b"b" * 219 + b"\r\n" + b"use x\r\n" + b"use y\r\n",
        [BAD, Use("y")],
    ),
    "T4 the longest legal command is 224 bytes": (
        65535,
        b"pause-tube " + b"a" * 200 + b" 4294967295\r\n" + b"use " + b"b" * 218 + b"\r\n",
        [PauseTube("a" * 200, 4294967295), BAD],
    ),
    "T5 a stray CR hides every later line end of its window": (
        65535,
        b"use a\rb\r\n" + b"use c\r\n" + b"x" * 230 + b"\r\n" + b"use d\r\n",
        [BAD, Use("d")],
    ),
    "T5 a bare LF does not end a line": (
        65535,
        b"use a\nuse b\r\nuse a\r\nuse b\r\nlist-tube-used\r\n",
        [BAD, Use("a"), Use("b"), ListTubeUsed()],
    ),
    "T5 quit is a prefix and ends the stream": (
        65535,
        b"use a\r\nquitXYZ\r\nuse b\r\n",
        [Use("a"), Quit()],
    ),
    "T14 kick quirks": (
        65535,
        b"kick 5abc\r\nkick -1\r\nkick 99999999999999999999\r\nkick abc\r\nkick 4294967297\r\n",
        [Kick(5), Kick(4294967295), BAD, BAD, Kick(1)],
    ),
    "T15 binary and empty bodies, the default size limit, id parsing": (
        65535,
        b"put 0 0 1 65535\r\n" + b"\xff" * 65535 + b"\r\n"
        b"put 0 0 1 65536\r\n" + b"\x00" * 65536 + b"\r\n"
        b"put 0 0 1 0\r\n\r\n"
        b"put 0 0 1 6\r\n\x00\r\n\xff\r\n\r\n"
        b"peek 0\r\npeek 00004\r\nreserve\r\nlist-tube-used\r\n",
        [Put(0, 0, 1, b"\xff" * 65535), TOO_BIG, Put(0, 0, 1, b""),
         Put(0, 0, 1, b"\x00\r\n\xff\r\n"), Peek(0), Peek(4), Reserve(), ListTubeUsed()],
    ),
    "T17 misc parsing": (
        65535,
        b"pause-tube default10\r\nstats-job\r\npause-tube -x 5\r\nreserve-job 1\r\n",
        [BAD, BAD, Rejected(BadFormat(), counted="pause-tube"), ReserveJob(1)],
    ),
    "testserv too_big: the drained body may look like a command": (
        10,
        b"put 0 0 0 11\r\ndelete 9999\r\nput 0 0 1 1\r\nx\r\n",
        [TOO_BIG, Put(0, 0, 1, b"x")],
    ),
    "testserv too_long_commandline": (
        65535,
        b"x" * 500 + b"\r\nput 0 0 1 1\r\nA\r\n",
        [BAD, Put(0, 0, 1, b"A")],
    ),
    "T6 reserve-with-timeout arguments": (
        65535,
        b"reserve-with-timeout 0\r\nreserve-with-timeout abc\r\nreserve-with-timeout \r\n"
        b"reserve-with-timeout 1xyz\r\nreserve-with-timeout 99999999999999999999\r\n"
        b"reserve-with-timeout -1\r\nreserve-with-timeout 4294967295\r\n",
        [ReserveWithTimeout(0), ReserveWithTimeout(0), ReserveWithTimeout(0),
         ReserveWithTimeout(1), BAD, ReserveWithTimeout(-1), ReserveWithTimeout(-1)],
    ),
}


@pytest.mark.parametrize("name", list(TRANSCRIPTS))
def test_each_transcript_gives_beanstalkds_answers_when_fed_whole(feed, name):
    max_job_size, data, expected = TRANSCRIPTS[name]
    assert feed(data, max_job_size=max_job_size) == expected


@pytest.mark.parametrize("name", list(TRANSCRIPTS))
def test_each_transcript_gives_the_same_answers_when_fed_byte_by_byte(feed, name):
    max_job_size, data, expected = TRANSCRIPTS[name]
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed(*chunks, max_job_size=max_job_size) == expected


@pytest.mark.parametrize("name", [n for n in TRANSCRIPTS if not n.startswith("T15")])
def test_each_transcript_gives_the_same_answers_split_at_any_point(feed, name):
    max_job_size, data, expected = TRANSCRIPTS[name]
    for cut in range(len(data) + 1):
        assert feed(data[:cut], data[cut:], max_job_size=max_job_size) == expected, cut


# --------------------------------------------------------------------------- line ends (§1.1)


def test_a_line_waits_for_the_lf_after_a_cr_that_ends_the_input(feed):
    connection = ServerConnection()
    connection.receive_data(b"use a\r")
    assert connection.next_request() is NEED_DATA
    connection.receive_data(b"\n")
    assert connection.next_request() == Use("a")


def test_a_bare_lf_line_is_bad_format_once_a_crlf_arrives(collect):
    connection = ServerConnection()
    connection.receive_data(b"use a\n")
    assert collect(connection) == []
    connection.receive_data(b"\r\n")
    assert collect(connection) == [BAD]


def test_a_stray_cr_swallows_later_commands_until_its_window_fills(collect):
    connection = ServerConnection()
    connection.receive_data(b"use a\rb\r\nuse c\r\n")
    assert collect(connection) == []
    connection.receive_data(b"use d\r\n" * 40)
    # The first 224 bytes (16 + 29 "use d" lines + "use d") are dropped without a line end; the
    # CRLF that follows in the next window is the end of the long line: one BAD_FORMAT. Then
    # the remaining 10 commands are read normally.
    assert collect(connection) == [BAD] + [Use("d")] * 10


def test_a_line_end_split_across_two_discard_windows_is_not_seen(feed):
    first_window = b"x" * 224
    assert feed(first_window + b"y" * 222 + b"\r\nuse z\r\n") == [BAD, Use("z")]
    assert feed(first_window + b"y" * 223 + b"\r\nuse z\r\nuse w\r\n") == [BAD, Use("w")]


def test_an_overlong_line_of_any_length_gives_one_bad_format(feed):
    assert feed(b"q" * 100_000 + b"\r\nuse after\r\n") == [BAD, Use("after")]


def test_unparsed_input_stays_below_one_line_buffer_while_no_line_ends():
    connection = ServerConnection()
    for _ in range(1000):
        connection.receive_data(b"garbage ")
        assert connection.next_request() is NEED_DATA
        assert connection.buffered_bytes < 224


# --------------------------------------------------------------------------- put bodies (§4.1)


def test_a_put_is_returned_only_when_its_whole_body_and_crlf_arrived():
    connection = ServerConnection()
    connection.receive_data(b"put 5 6 7 5\r\nhel")
    assert connection.next_request() is NEED_DATA
    connection.receive_data(b"lo\r")
    assert connection.next_request() is NEED_DATA
    connection.receive_data(b"\n")
    assert connection.next_request() == Put(5, 6, 7, b"hello")


def test_in_put_body_is_true_only_between_an_accepted_header_and_its_body_end():
    connection = ServerConnection(max_job_size=10)
    assert not connection.in_put_body
    connection.receive_data(b"put 0 0 5 10\r\nabc")  # T16: an EOF now consumes an id
    assert connection.next_request() is NEED_DATA and connection.in_put_body
    connection.receive_data(b"defghij\r")
    assert connection.next_request() is NEED_DATA and connection.in_put_body
    connection.receive_data(b"\n")
    assert connection.next_request() == Put(0, 0, 5, b"abcdefghij")
    assert not connection.in_put_body


@pytest.mark.parametrize(
    "header",
    [b"put 0 0 1 11\r\n", b"put 0 0 1 1 junk\r\n", b"put -1 0 1 1\r\n", b"put 0 0 1 1"],
    ids=["too big", "trailing text", "bad header", "incomplete header"],
)
def test_in_put_body_is_false_when_no_header_was_accepted(header):
    connection = ServerConnection(max_job_size=10)
    connection.receive_data(header)
    while connection.next_request() is not NEED_DATA:
        pass
    assert not connection.in_put_body


def test_an_oversized_body_is_counted_down_and_job_too_big_comes_after_its_last_byte():
    connection = ServerConnection(max_job_size=10)
    connection.receive_data(b"put 0 0 1 11\r\n0123")
    assert connection.next_request() is NEED_DATA
    connection.receive_data(b"4567890\r")
    assert connection.next_request() is NEED_DATA
    assert connection.buffered_bytes == 0
    connection.receive_data(b"\nuse t\r\n")
    assert connection.next_request() == TOO_BIG
    assert connection.next_request() == Use("t")


def test_a_one_gib_body_announced_over_the_limit_is_never_buffered():
    size = 1 << 30
    connection = ServerConnection()
    connection.receive_data(b"put 0 0 1 %d\r\n" % size)
    assert connection.next_request() is NEED_DATA
    chunk = memoryview(bytes(1 << 20))
    for _ in range(size >> 20):
        connection.receive_data(chunk)
        assert connection.buffered_bytes == 0
    assert connection.next_request() is NEED_DATA
    connection.receive_data(b"\r\nstats-job 1\r\n")
    assert connection.next_request() == TOO_BIG
    assert connection.next_request() == StatsJob(1)
    assert connection.buffered_bytes == 0


def test_the_largest_announced_size_is_counted_down_without_buffering_either():
    connection = ServerConnection(max_job_size=0)
    connection.receive_data(b"put 0 0 1 4294967295\r\n")
    chunk = memoryview(bytes(1 << 20))
    for _ in range(8):
        assert connection.next_request() is NEED_DATA
        connection.receive_data(chunk)
        assert connection.buffered_bytes == 0 and not connection.in_put_body


def test_a_body_of_exactly_max_job_size_is_accepted(feed):
    assert feed(b"put 0 0 1 3\r\nabc\r\n", max_job_size=3) == [Put(0, 0, 1, b"abc")]
    assert feed(b"put 0 0 1 0\r\n\r\n", max_job_size=0) == [Put(0, 0, 1, b"")]


def test_a_body_may_contain_crlf_nul_and_command_text(feed):
    body = b"put 0 0 1 1\r\nx\r\n\x00"
    assert feed(b"put 1 0 1 %d\r\n" % len(body) + body + b"\r\n") == [Put(1, 0, 1, body)]


# --------------------------------------------------------------------------- quit, send, limits


def test_nothing_after_quit_is_parsed_or_kept():
    connection = ServerConnection()
    connection.receive_data(b"quit\r\nuse a\r\n")
    assert connection.next_request() == Quit()
    assert connection.next_request() is NEED_DATA
    connection.receive_data(b"use b\r\n")
    assert connection.next_request() is NEED_DATA
    assert connection.buffered_bytes == 0


def test_send_returns_the_reply_bytes():
    assert ServerConnection().send(Inserted(7)) == b"INSERTED 7\r\n"


@pytest.mark.parametrize("size", [-1, 1073741825])
def test_a_max_job_size_beanstalkd_would_not_accept_is_refused(size):
    with pytest.raises(ValueError):
        ServerConnection(size)


def test_need_data_prints_as_its_name():
    assert repr(NEED_DATA) == "NEED_DATA"
