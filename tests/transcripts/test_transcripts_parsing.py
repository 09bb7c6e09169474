"""Transcripts of how a command line is framed and parsed (reference §1, §2, §12 T3–T5, T15, T17).

Method: send exact bytes to a fresh server and expect exact bytes back; every table row of the
reference becomes one parametrized case, so the same lines run against beanstalkd and BeanRaft.
"""

import pytest

# --------------------------------------------------------------------------- §2.1 prefix table

PREFIX_CASES = [
    (b"nont10knowncommand", b"UNKNOWN_COMMAND"),
    (b"peek", b"UNKNOWN_COMMAND"),
    (b"peek ", b"BAD_FORMAT"),
    (b"peek-readyX", b"BAD_FORMAT"),
    (b"peek-ready ", b"BAD_FORMAT"),
    (b"peek-delayedX", b"BAD_FORMAT"),
    (b"peek-buried ", b"BAD_FORMAT"),
    (b"reservex", b"BAD_FORMAT"),
    (b"reserve ", b"BAD_FORMAT"),
    (b"reserve-with-timeout", b"BAD_FORMAT"),
    (b"reserve-job", b"BAD_FORMAT"),
    (b"stats-foo", b"BAD_FORMAT"),
    (b"stats ", b"BAD_FORMAT"),
    (b"statsx", b"BAD_FORMAT"),
    (b"stats-tube", b"BAD_FORMAT"),
    (b"stats-job", b"BAD_FORMAT"),
    (b"list-tubesX", b"BAD_FORMAT"),
    (b"list-tubes-watchedX", b"BAD_FORMAT"),
    (b"list-tube-usedX", b"BAD_FORMAT"),
    (b"list-tube", b"UNKNOWN_COMMAND"),
    (b"pause-tube", b"BAD_FORMAT"),
    (b"delete", b"UNKNOWN_COMMAND"),
    (b"release", b"UNKNOWN_COMMAND"),
    (b"bury", b"UNKNOWN_COMMAND"),
    (b"kick", b"UNKNOWN_COMMAND"),
    (b"kick-job", b"UNKNOWN_COMMAND"),
    (b"touch", b"UNKNOWN_COMMAND"),
    (b"use", b"UNKNOWN_COMMAND"),
    (b"watch", b"UNKNOWN_COMMAND"),
    (b"ignore", b"UNKNOWN_COMMAND"),
    (b"put", b"UNKNOWN_COMMAND"),
    (b"PUT 0 0 1 1", b"UNKNOWN_COMMAND"),
    (b"Reserve", b"UNKNOWN_COMMAND"),
    (b"LIST-TUBES", b"UNKNOWN_COMMAND"),
    (b"", b"UNKNOWN_COMMAND"),
    (b" ", b"UNKNOWN_COMMAND"),
    (b" use foo", b"UNKNOWN_COMMAND"),
]


@pytest.mark.parametrize("line, reply", PREFIX_CASES, ids=[repr(c[0])[2:-1] or "empty" for c in PREFIX_CASES])
def test_a_command_is_recognised_by_its_prefix_in_the_fixed_order(wire, line, reply):
    wire.send(line + b"\r\n")
    wire.expect(reply + b"\r\n")
    # The connection keeps working after the error.
    wire.send(b"list-tube-used\r\n")
    wire.expect(b"USING default\r\n")


def test_quit_and_any_line_starting_with_quit_close_the_connection_without_a_reply(server):
    for line in (b"quit\r\n", b"quitXYZ\r\n", b"quit now\r\n"):
        wire = server.connect()
        wire.send(line)
        assert wire.recv_until_closed() == b""


def test_pause_tube_needs_no_space_after_its_prefix(wire):
    wire.send(b"pause-tubedefault 0\r\n")
    wire.expect(b"PAUSED\r\n")
    wire.send(b"pause-tube   default 0\r\n")  # spaces before the name are skipped
    wire.expect(b"PAUSED\r\n")
    assert wire.yaml(b"stats-tube default")["cmd-pause-tube"] == "2"


# --------------------------------------------------------------------------- §1.1 line termination


def test_a_bare_line_feed_does_not_end_a_line(wire):
    wire.send(b"use a\n")
    wire.expect_nothing()
    wire.send(b"\r\n")  # the line is now "use a\n", and \n is not a name character
    wire.expect(b"BAD_FORMAT\r\n")
    wire.send(b"list-tube-used\r\n")
    wire.expect(b"USING default\r\n")


def test_a_stray_carriage_return_makes_the_server_wait_for_more_and_swallow_later_commands(wire):
    wire.send(b"use a\rb\r\n")
    wire.expect_nothing()
    wire.send(b"use c\r\n")
    wire.expect_nothing()


def test_pipelined_commands_in_one_packet_are_answered_in_order(wire):
    wire.send(b"use a\r\nuse b\r\nlist-tube-used\r\n")
    wire.expect(b"USING a\r\nUSING b\r\nUSING b\r\n")


def test_a_command_split_over_many_packets_is_assembled(wire):
    for byte in b"put 0 0 60 3\r\nabc\r\nlist-tube-used\r\n":
        wire.send(bytes([byte]))
    wire.expect(b"INSERTED 1\r\nUSING default\r\n")


# --------------------------------------------------------------------------- §1.2 line length


def test_the_longest_legal_command_is_224_bytes_including_crlf(wire):
    name = b"a" * 200
    wire.send(b"use " + name + b"\r\n")
    wire.expect(b"USING " + name + b"\r\n")
    line = b"pause-tube " + name + b" 4294967295\r\n"
    assert len(line) == 224
    wire.send(line)
    wire.expect(b"PAUSED\r\n")


def test_a_tube_name_of_201_bytes_is_a_bad_format(wire):
    wire.send(b"use " + b"a" * 201 + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")
    wire.send(b"use " + b"b" * 218 + b"\r\n")  # a 224-byte line whose name is too long
    wire.expect(b"BAD_FORMAT\r\n")


def test_a_225_byte_line_whose_cr_is_byte_224_swallows_the_next_command(wire):
    wire.send(b"use " + b"b" * 219 + b"\r\n")
    wire.expect_nothing()
    wire.send(b"use x\r\n")
    wire.expect(b"BAD_FORMAT\r\n")
    wire.send(b"use y\r\n")
    wire.expect(b"USING y\r\n")


@pytest.mark.parametrize("length", [230, 500, 1000])
def test_an_overlong_line_gets_one_bad_format_and_the_connection_recovers(wire, length):
    wire.send(b"x" * length + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")
    wire.send(b"put 0 0 1 1\r\nA\r\n")
    wire.expect(b"INSERTED 1\r\n")


def test_an_overlong_line_followed_by_a_command_in_the_same_packet_answers_both(wire):
    wire.send(b"x" * 500 + b"\r\nuse d\r\n")
    wire.expect(b"BAD_FORMAT\r\nUSING d\r\n")


# --------------------------------------------------------------------------- §1.3 NUL bytes


@pytest.mark.parametrize("line", [b"use a\x00b", b"list-tubes\x00", b"peek 1\x00", b"\x00"])
def test_a_nul_byte_in_a_command_line_is_a_bad_format(wire, line):
    wire.send(line + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")


# --------------------------------------------------------------------------- §2.2, §2.3 names


@pytest.mark.parametrize(
    "name",
    [b"a+/;.$_()b", b"foo-", b"x_y", b"0", b"A-Z", b"$", b"(", b"a" * 200],
    ids=["all-punctuation", "trailing-dash", "underscore", "digit", "upper", "dollar", "paren", "200"],
)
def test_a_valid_tube_name_is_echoed_by_use(wire, name):
    wire.send(b"use " + name + b"\r\n")
    wire.expect(b"USING " + name + b"\r\n")


@pytest.mark.parametrize(
    "line",
    [b"use -foo", b"use a*b", b"use  foo", b"use foo ", b"use ", b"use a\tb", b"use a b", b"use caf\xc3\xa9",
     b"watch -x", b"watch ", b"ignore a!b", b"stats-tube a b", b"stats-tube "],
)
def test_an_invalid_tube_name_is_a_bad_format(wire, line):
    wire.send(line + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")


def test_tube_names_are_case_sensitive(wire):
    wire.send(b"watch Foo\r\nwatch foo\r\nlist-tubes\r\n")
    wire.expect(b"WATCHING 2\r\nWATCHING 3\r\nOK 26\r\n---\n- default\n- Foo\n- foo\n\r\n")


def test_numbers_may_be_preceded_by_several_spaces_but_not_by_tabs(wire):
    wire.send(b"put  1   2  3  1\r\nA\r\n")
    wire.expect(b"INSERTED 1\r\n")
    wire.send(b"put 1\t0 1 1\r\nA\r\n")
    wire.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")
    wire.send(b"delete  1\r\n")
    wire.expect(b"DELETED\r\n")


# --------------------------------------------------------------------------- §2.4 integers

ID_COMMANDS = [b"peek", b"delete", b"touch", b"kick-job", b"stats-job", b"reserve-job"]


@pytest.mark.parametrize("command", ID_COMMANDS)
def test_a_malformed_job_id_is_a_bad_format(wire, command):
    for argument in [b"18446744073709551616", b"99999999999999999999999", b"foo111", b"111foo", b"-1", b"+1",
                     b"a111", b"!@#!@#", b"1 ", b"1 2", b"0x1", b""]:
        wire.send(command + b" " + argument + b"\r\n")
        wire.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize("command", ID_COMMANDS)
def test_a_well_formed_id_of_no_job_is_not_found(wire, command):
    for argument in [b"0", b"2", b"18446744073709551615", b"100000000000000"]:
        wire.send(command + b" " + argument + b"\r\n")
        wire.expect(b"NOT_FOUND\r\n")


def test_job_ids_accept_leading_zeros_and_leading_spaces(wire):
    wire.send(b"put 0 0 1 1\r\nq\r\npeek 00001\r\npeek    1\r\n")
    wire.expect(b"INSERTED 1\r\nFOUND 1 1\r\nq\r\nFOUND 1 1\r\nq\r\n")


@pytest.mark.parametrize(
    "line",
    [b"release 1 abc 1", b"release 1 1 abc", b"release 1 1", b"release 1 1 1 ", b"release 1 4294967296 0",
     b"release 1 0 4294967296", b"release 111abc 1 1", b"release 1 -1 0",
     b"bury 111abc 2", b"bury 111", b"bury 111 222abc", b"bury 1 4294967296", b"bury 1 2 ",
     b"touch 1 2"],
)
def test_malformed_arguments_of_release_and_bury_are_a_bad_format(wire, line):
    wire.send(line + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")


@pytest.mark.parametrize(
    "header",
    [b"put -1 0 100 1", b"put -1kkdj9djjkd9 0 100 1", b"put 512 -1 100 1", b"put 0 0 -1 1", b"put +1 0 1 1",
     b"put 4294967296 0 100 1", b"put 0 4294967296 1 1", b"put 0 0 4294967296 1", b"put 0 0 1",
     b"put 0 0 1 1 junk", b"put 0 0 1 1 ", b"put a 0 1 1"],
)
def test_a_malformed_put_header_is_a_bad_format_and_its_body_is_read_as_a_command(wire, header):
    wire.send(header + b"\r\nA\r\n")
    wire.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")


@pytest.mark.parametrize("size", [b"4294967296", b"10b", b"--!@#$%^&&**()0b", b"-1"])
def test_a_malformed_put_size_consumes_no_body_and_allocates_no_id(wire, size):
    wire.send(b"put 0 0 0 " + size + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")
    wire.send(b"put 0 0 0 1\r\nA\r\n")
    wire.expect(b"INSERTED 1\r\n")


def test_the_largest_u32_is_accepted_for_priority_delay_and_ttr(wire):
    wire.send(b"put 4294967295 4294967295 4294967295 1\r\nA\r\n")
    wire.expect(b"INSERTED 1\r\n")
    wire.send(b"put 0 0 1 01\r\nA\r\n")
    wire.expect(b"INSERTED 2\r\n")
    stats = wire.yaml(b"stats-job 1")
    assert (stats["pri"], stats["delay"], stats["ttr"], stats["state"]) == (
        "4294967295", "4294967295", "4294967295", "delayed")
