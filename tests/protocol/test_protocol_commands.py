"""Goal: every parse rule of §2 and §4 of the beanstalkd 1.12 reference holds for single lines.

Method: each example line from the reference (its tables, the testserv cases of §10 and the
transcripts of §12) is fed whole to a fresh ServerConnection and the requests or rejections it
yields are compared with what beanstalkd 1.12 does; several were re-checked live against the
installed binary. Framing (line ends, length limit, put bodies) is in test_protocol_framing.py.
"""

from __future__ import annotations

import pytest

from beanraft.protocol import (
    BadFormat,
    Bury,
    Delete,
    Ignore,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    Quit,
    Rejected,
    Release,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    UnknownCommand,
    Use,
    Watch,
    is_decimal,
)

BAD = Rejected(BadFormat())
UNKNOWN = Rejected(UnknownCommand())
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


def cases(*rows):
    """pytest params from (line, expected) rows; the line is the test id."""
    return [pytest.param(line, expected, id=repr(line)[2:-1][:60]) for line, expected in rows]


WELL_FORMED = cases(
    (b"put 1 2 3 1\r\nA\r\n", Put(1, 2, 3, b"A")),
    (b"use foo", Use("foo")),
    (b"reserve", Reserve()),
    (b"reserve-with-timeout 5", ReserveWithTimeout(5)),
    (b"reserve-job 7", ReserveJob(7)),
    (b"delete 7", Delete(7)),
    (b"release 7 100 30", Release(7, 100, 30)),
    (b"bury 7 100", Bury(7, 100)),
    (b"touch 7", Touch(7)),
    (b"watch foo", Watch("foo")),
    (b"ignore foo", Ignore("foo")),
    (b"peek 7", Peek(7)),
    (b"peek-ready", PeekReady()),
    (b"peek-delayed", PeekDelayed()),
    (b"peek-buried", PeekBuried()),
    (b"kick 10", Kick(10)),
    (b"kick-job 7", KickJob(7)),
    (b"stats-job 7", StatsJob(7)),
    (b"stats-tube foo", StatsTube("foo")),
    (b"stats", Stats()),
    (b"list-tubes", ListTubes()),
    (b"list-tube-used", ListTubeUsed()),
    (b"list-tubes-watched", ListTubesWatched()),
    (b"pause-tube foo 30", PauseTube("foo", 30)),
    (b"quit", Quit()),
)


def with_crlf(line: bytes) -> bytes:
    return line if line.endswith(b"\r\n") else line + b"\r\n"


@pytest.mark.parametrize("line, expected", WELL_FORMED)
def test_each_of_the_25_commands_parses_into_its_request(feed, line, expected):
    assert feed(with_crlf(line)) == [expected]


def test_each_request_class_knows_its_wire_command_name():
    names = {type(expected).name for _, expected in (param.values for param in WELL_FORMED)}
    assert len(names) == 25
    assert {"put", "reserve-with-timeout", "list-tubes-watched", "pause-tube"} <= names


PREFIX_MATCHING = cases(  # §2.1 and §12 T5, T17
    (b"peek", UNKNOWN),
    (b"peek ", BAD),
    (b"peek-readyX", BAD),
    (b"peek-ready ", BAD),
    (b"peek-delayedX", BAD),
    (b"peek-buried ", BAD),
    (b"reservex", BAD),
    (b"reserve ", BAD),
    (b"reserve-with-timeout", BAD),  # falls to "reserve", which must be exact
    (b"reserve-job", BAD),
    (b"stats-foo", BAD),
    (b"stats ", BAD),
    (b"statsx", BAD),
    (b"stats-tube", BAD),
    (b"stats-job", BAD),
    (b"list-tubesX", BAD),
    (b"list-tubes-watchedX", BAD),
    (b"list-tube-usedX", BAD),
    (b"list-tubes-used", BAD),  # only "list-tubes" is a prefix of it
    (b"delete", UNKNOWN),
    (b"kick", UNKNOWN),
    (b"kick-job", UNKNOWN),
    (b"touch", UNKNOWN),
    (b"use", UNKNOWN),
    (b"put", UNKNOWN),
    (b"PUT 0 0 1 1", UNKNOWN),  # case-sensitive
    (b"Stats", UNKNOWN),
    (b"", UNKNOWN),
    (b" ", UNKNOWN),
    (b" stats", UNKNOWN),
    (b"nont10knowncommand", UNKNOWN),
    (b"quitXYZ", Quit()),
    (b"quit now", Quit()),
    (b"pause-tubedefault 0", PauseTube("default", 0)),
)


@pytest.mark.parametrize("line, expected", PREFIX_MATCHING)
def test_the_first_matching_prefix_in_beanstalkd_order_decides_the_command(feed, line, expected):
    assert feed(line + b"\r\n") == [expected]


NUL_BYTES = cases(  # §1.3, verified live
    (b"use a\x00b\r\n", [BAD]),
    (b"\x00\r\n", [BAD]),
    (b"quit\x00\r\nuse a\r\n", [BAD, Use("a")]),
    (b"put 0 0 1 1\x00\r\nA\r\n", [BAD, UNKNOWN]),
    (b"put 0 0 1 3\r\n\x00\x00\x00\r\n", [Put(0, 0, 1, b"\x00\x00\x00")]),
)


@pytest.mark.parametrize("data, expected", NUL_BYTES)
def test_a_nul_in_a_command_line_is_bad_format_but_a_nul_in_a_body_is_data(feed, data, expected):
    assert feed(data) == expected


SEPARATORS = cases(  # §2.2 and §12 T3, T15
    (b"put  1   2  3  1\r\nA\r\n", [Put(1, 2, 3, b"A")]),
    (b"put 1\t0 1 1\r\nA\r\n", [BAD, UNKNOWN]),
    (b"delete  1\r\n", [Delete(1)]),
    (b"delete 1 \r\n", [BAD]),
    (b"delete\t1\r\n", [UNKNOWN]),
    (b"release  1  2  3\r\n", [Release(1, 2, 3)]),
    (b"release 1 2 3 \r\n", [BAD]),
    (b"use  foo\r\n", [BAD]),
    (b"use foo \r\n", [BAD]),
    (b"use a\nb\r\n", [BAD]),
)


@pytest.mark.parametrize("data, expected", SEPARATORS)
def test_only_spaces_separate_arguments_and_only_numbers_skip_extra_ones(feed, data, expected):
    assert feed(data) == expected


TUBE_NAMES = cases(  # §2.3 and §12 T4, testserv use_tube_long / underscore
    (b"use " + b"a" * 200, Use("a" * 200)),
    (b"use " + b"a" * 200 + b"Z", BAD),
    (b"use " + b"b" * 218, BAD),  # a 224-byte line: parsed, but the name is too long
    (b"use -foo", BAD),
    (b"use foo-", Use("foo-")),
    (b"use a+/;.$_()b", Use("a+/;.$_()b")),
    (b"use x_y", Use("x_y")),
    (b"use 123", Use("123")),
    (b"use ABC", Use("ABC")),
    (b"use a*b", BAD),
    (b"use a b", BAD),
    (b"use a\xc3\xa9", BAD),
    (b"use ", BAD),
    (b"watch -x", BAD),
    (b"watch " + b"w" * 201, BAD),
    (b"ignore a*b", BAD),
    (b"ignore  foo", BAD),
    (b"stats-tube -x", BAD),
    (b"stats-tube ", BAD),
    (b"stats-tube default", StatsTube("default")),
)


@pytest.mark.parametrize("line, expected", TUBE_NAMES)
def test_tube_names_are_1_to_200_name_characters_not_starting_with_a_dash(feed, line, expected):
    assert feed(line + b"\r\n") == [expected]


JOB_IDS = cases(  # §2.4, testserv peek_bad_format, touch/bury/kickjob/statsjob/release_bad_format
    (b"peek 18446744073709551615", Peek(U64_MAX)),
    (b"peek 18446744073709551616", BAD),
    (b"peek 184467440737095516160000", BAD),
    (b"peek foo111", BAD),
    (b"peek 111foo", BAD),
    (b"peek 00004", Peek(4)),
    (b"peek 0", Peek(0)),
    (b"peek -1", BAD),
    (b"peek +1", BAD),
    (b"delete 18446744073709551616", BAD),
    (b"touch +1", BAD),
    (b"touch a111", BAD),
    (b"touch 111a", BAD),
    (b"touch !@#!@#", BAD),
    (b"touch 100000000000000", Touch(100000000000000)),
    (b"kick-job a111", BAD),
    (b"kick-job 111a", BAD),
    (b"kick-job !@#!@#", BAD),
    (b"stats-job 111ABC", BAD),
    (b"stats-job 111 222", BAD),
    (b"stats-job 111", StatsJob(111)),
    (b"reserve-job 1 ", BAD),
    (b"bury 111abc 2", BAD),
    (b"bury 111", BAD),
    (b"bury 111 222abc", BAD),
    (b"bury 1 4294967295", Bury(1, U32_MAX)),
    (b"bury 1 4294967296", BAD),
    (b"release 1", BAD),
    (b"release 1 2", BAD),
    (b"release 1 abc 1", BAD),
    (b"release 1 1 abc", BAD),
    (b"release 1 2 3x", BAD),
    (b"release 1 -2 3", BAD),
    (b"release 18446744073709551615 4294967295 4294967295", Release(U64_MAX, U32_MAX, U32_MAX)),
    (b"release 1 1 4294967296", BAD),
)


@pytest.mark.parametrize("line, expected", JOB_IDS)
def test_ids_priorities_and_delays_are_unsigned_decimals_within_range(feed, line, expected):
    assert feed(line + b"\r\n") == [expected]


PUT_HEADERS = cases(  # §4.1, §12 T2/T3, testserv negative_delay, garbage/negative/max priority
    (b"put -1 0 100 1\r\na\r\n", [BAD, UNKNOWN]),
    (b"put +1 0 1 1\r\nA\r\n", [BAD, UNKNOWN]),
    (b"put 512 -1 100 0\r\n\r\n", [BAD, UNKNOWN]),
    (b"put -1kkdj9djjkd9 0 100 1\r\nA\r\n", [BAD, UNKNOWN]),
    (b"put 4294967295 0 100 1\r\nA\r\n", [Put(U32_MAX, 0, 100, b"A")]),
    (b"put 4294967296 0 100 1\r\nA\r\n", [BAD, UNKNOWN]),
    (b"put 4294967295 4294967295 4294967295 1\r\nA\r\n", [Put(U32_MAX, U32_MAX, U32_MAX, b"A")]),
    (b"put 0 4294967296 1 1\r\nA\r\n", [BAD, UNKNOWN]),
    (b"put 0 0 1 4294967296\r\n", [BAD]),
    (b"put 0 0 0 --!@#$%^&&**()0b\r\n", [BAD]),
    (b"put 0 0 1\r\n", [BAD]),
    (b"put 0 0 1 \r\n", [BAD]),
    (b"put 0 0 1 01\r\nA\r\n", [Put(0, 0, 1, b"A")]),
    (b"put 0 0 0 5\r\nhello\r\n", [Put(0, 0, 0, b"hello")]),  # ttr 0 kept as sent
    (b"put 0 1 1 0\r\n\r\n", [Put(0, 1, 1, b"")]),
)


@pytest.mark.parametrize("data, expected", PUT_HEADERS)
def test_a_malformed_put_header_is_bad_format_and_leaves_its_body_unread(feed, data, expected):
    assert feed(data) == expected


@pytest.mark.parametrize(
    "line", [b"put 0 0 1 1 junk", b"put 0 0 1 1 ", b"put 0 0 0 10b", b"put 1  2 3 4x"]
)
def test_text_after_the_put_size_is_bad_format_yet_counted_as_a_put(feed, line):
    assert feed(line + b"\r\nA\r\n") == [Rejected(BadFormat(), counted="put"), UNKNOWN]


TIMEOUTS = cases(  # §4.3 and §12 T6: (int) strtol in 1.12, some verified live
    (b"0", ReserveWithTimeout(0)),
    (b"abc", ReserveWithTimeout(0)),
    (b"", ReserveWithTimeout(0)),
    (b"1xyz", ReserveWithTimeout(1)),
    (b"  0", ReserveWithTimeout(0)),
    (b"\t5", ReserveWithTimeout(5)),
    (b"+7", ReserveWithTimeout(7)),
    (b"-1", ReserveWithTimeout(-1)),
    (b"4294967295", ReserveWithTimeout(-1)),
    (b"2147483647", ReserveWithTimeout(2147483647)),
    (b"2147483648", ReserveWithTimeout(-2147483648)),
    (b"4294967296", ReserveWithTimeout(0)),
    (b"4294967297", ReserveWithTimeout(1)),
    (b"-4294967296", ReserveWithTimeout(0)),
    (b"9223372036854775807", ReserveWithTimeout(-1)),
    (b"-9223372036854775808", ReserveWithTimeout(0)),
    (b"9223372036854775808", BAD),
    (b"-9223372036854775809", BAD),
    (b"99999999999999999999", BAD),
)


@pytest.mark.parametrize("argument, expected", TIMEOUTS)
def test_reserve_with_timeout_reads_its_seconds_like_a_c_int_from_strtol(feed, argument, expected):
    assert feed(b"reserve-with-timeout " + argument + b"\r\n") == [expected]


KICK_BOUNDS = cases(  # §4.12 and §12 T14, T17: strtoul truncated to unsigned int
    (b"5abc", Kick(5)),
    (b"-1", Kick(U32_MAX)),
    (b"+1", Kick(1)),
    (b"\t5", Kick(5)),
    (b"\x0b5", Kick(5)),
    (b"4294967297", Kick(1)),
    (b"4294967296", Kick(0)),
    (b"18446744073709551615", Kick(U32_MAX)),
    (b"-18446744073709551615", Kick(1)),
    (b"99999999999999999999", BAD),
    (b"-18446744073709551616", BAD),
    (b"abc", BAD),
    (b"", BAD),
    (b"- 5", BAD),
    (b"+", BAD),
)


@pytest.mark.parametrize("argument, expected", KICK_BOUNDS)
def test_kick_reads_its_bound_like_a_c_unsigned_int_from_strtoul(feed, argument, expected):
    assert feed(b"kick " + argument + b"\r\n") == [expected]


COUNTED_PAUSE = Rejected(BadFormat(), counted="pause-tube")
PAUSE_TUBE = cases(  # §4.16, §12 T4, T5, T17, testserv longest_command
    (b"pause-tube default 0", PauseTube("default", 0)),
    (b"pause-tube    default    1", PauseTube("default", 1)),
    (b"pause-tube " + b"a" * 200 + b" 4294967295", PauseTube("a" * 200, U32_MAX)),
    (b"pause-tube nope 1", PauseTube("nope", 1)),
    (b"pause-tube 1 2", PauseTube("1", 2)),
    (b"pause-tube default10", BAD),  # digits belong to the name, so the delay is missing
    (b"pause-tube default -1", BAD),
    (b"pause-tube default 1 ", BAD),
    (b"pause-tube default 1x", BAD),
    (b"pause-tube default 4294967296", BAD),
    (b"pause-tube\t default 1", BAD),
    (b"pause-tube default\t1", BAD),
    (b"pause-tube a*b 1", BAD),
    (b"pause-tube", BAD),
    (b"pause-tube -x 5", COUNTED_PAUSE),  # the name is judged after cmd-pause-tube counted
    (b"pause-tube-x 5", COUNTED_PAUSE),
    (b"pause-tube " + b"a" * 201 + b" 1", COUNTED_PAUSE),
)


@pytest.mark.parametrize("line, expected", PAUSE_TUBE)
def test_pause_tube_takes_the_longest_run_of_name_characters_then_a_strict_delay(
    feed, line, expected
):
    assert feed(line + b"\r\n") == [expected]


@pytest.mark.parametrize("text, max_digits, expected", [
    ("0", 1, True), ("65535", 5, True), ("655350", 5, False), ("", 5, False),
    ("\u00b2", 5, False), ("\u0663", 5, False), ("12a", 5, False), ("-1", 5, False),
    ("9" * 40, 40, True), ("9" * 21, 20, False)])
def test_is_decimal_takes_only_ascii_digits_and_no_more_than_asked(text, max_digits, expected):
    assert is_decimal(text, max_digits) is expected
