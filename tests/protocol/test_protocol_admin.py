"""Goal: the four admin commands (purge-tube, list-jobs, move-job, move-buried) parse strictly,
are bounded (a list page holds at most MAX_LIST_LIMIT jobs, every line fits beanstalkd's
224-byte line buffer) and encode back to the same bytes, as docs/reference/extensions.md says.

Method: lines fed to a fresh ServerConnection through the shared ``feed`` fixture, compared with
the documented requests or BAD_FORMAT; ``encode_request`` round-trips through the parser; the
list-jobs YAML writer is checked byte for byte.
"""

from __future__ import annotations

import pytest

from beanraft.protocol import (
    LINE_BUF_SIZE,
    MAX_LIST_LIMIT,
    BadFormat,
    ListJobs,
    MoveBuried,
    MoveJob,
    PurgeTube,
    Rejected,
    UnknownCommand,
    ImportJob,
    encode_request,
    yaml_records,
)

BAD = Rejected(BadFormat())


@pytest.mark.parametrize("line, expected", [
    (b"purge-tube default ready", PurgeTube("default", "ready")),
    (b"purge-tube a-b(c) all", PurgeTube("a-b(c)", "all")),
    (b"purge-tube t delayed", PurgeTube("t", "delayed")),
    (b"purge-tube t buried", PurgeTube("t", "buried")),
    (b"list-jobs t ready 0 1", ListJobs("t", "ready", 0, 1)),
    (b"list-jobs t reserved 4294967295 1000", ListJobs("t", "reserved", 2**32 - 1, 1000)),
    (b"list-jobs t all 10 50", ListJobs("t", "all", 10, 50)),
    (b"move-job 18446744073709551615 x", MoveJob(2**64 - 1, "x")),
    (b"move-buried from to", MoveBuried("from", "to")),
])
def test_well_formed_admin_lines_become_their_requests(feed, line, expected):
    assert feed(line + b"\r\n") == [expected]
    assert encode_request(expected) == line + b"\r\n"


@pytest.mark.parametrize("line", [
    b"purge-tube t reserved",       # reserved jobs are never purged
    b"purge-tube t",
    b"purge-tube t ready extra",
    b"purge-tube  t ready",         # doubled space
    b"purge-tube t ready ",         # trailing space
    b"purge-tube -t ready",         # a tube name cannot start with '-'
    b"purge-tube t READY",
    b"list-jobs t ready 0 0",       # a page holds at least one job
    b"list-jobs t ready 0 1001",    # and at most MAX_LIST_LIMIT
    b"list-jobs t ready -1 10",
    b"list-jobs t ready 4294967296 10",
    b"list-jobs t ready 0",
    b"list-jobs t nosuchstate 0 10",
    b"move-job x t",
    b"move-job 18446744073709551616 t",
    b"move-job 1",
    b"move-job 1 t u",
    b"move-buried t",
    b"move-buried t u v",
    b"move-buried t -u",
])
def test_malformed_admin_lines_are_bad_format(feed, line):
    assert feed(line + b"\r\n") == [BAD]


@pytest.mark.parametrize("line", [b"purge-tube", b"list-jobs", b"move-job", b"move-buried",
                                  b"purge-tubes t all", b"move t u"])
def test_admin_names_without_their_space_are_unknown_commands(feed, line):
    assert feed(line + b"\r\n") == [Rejected(UnknownCommand())]


def test_the_list_limit_is_a_thousand_jobs():
    assert MAX_LIST_LIMIT == 1000


def test_an_admin_line_longer_than_the_line_buffer_is_refused(feed):
    # Two 200-byte names do not fit in one 224-byte line: move-buried between them is refused.
    line = b"move-buried " + b"a" * 110 + b" " + b"b" * 110
    assert len(line) + 2 > LINE_BUF_SIZE
    assert feed(line + b"\r\n") == [BAD]


def test_list_jobs_yaml_is_a_list_of_flat_mappings():
    records = [[("id", 5), ("state", "ready"), ("pri", 0), ("age", 2), ("size", 11)],
               [("id", 9), ("state", "buried"), ("pri", 4294967295), ("age", 0), ("size", 0)]]
    assert yaml_records(records) == (
        b"---\n- id: 5\n  state: ready\n  pri: 0\n  age: 2\n  size: 11\n"
        b"- id: 9\n  state: buried\n  pri: 4294967295\n  age: 0\n  size: 0\n")
    assert yaml_records([]) == b"---\n"


@pytest.mark.parametrize("line, body, expected", [
    (b"import-job binlog:7.1796 buried 5 0 9 3", b"a\r\n",
     ImportJob("binlog:7.1796", "buried", 5, 0, 9, b"a\r\n")),
    (b"import-job k delayed 4294967295 4294967295 0 0", b"",
     ImportJob("k", "delayed", 2**32 - 1, 2**32 - 1, 0, b"")),
    (b"import-job k ready 0 0 1 1", b"x", ImportJob("k", "ready", 0, 0, 1, b"x")),
])
def test_import_job_lines_with_their_body_become_import_requests(feed, line, body, expected):
    assert feed(line + b"\r\n" + body + b"\r\n") == [expected]
    assert encode_request(expected) == line + b"\r\n" + body + b"\r\n"


@pytest.mark.parametrize("line", [
    b"import-job k reserved 0 0 1 1",   # a reserved job is imported as ready
    b"import-job k ready 0 5 1 1",      # only a delayed job has a delay
    b"import-job k delayed 0 0 1 1",    # and it must have one
    b"import-job k ready 0 0 1",
    b"import-job k ready 0 0 1 1 x",
    b"import-job k  ready 0 0 1 1",
    b"import-job k/1 ready 0 0 1 1",    # a key is put-key's: [A-Za-z0-9_.:-]
    b"import-job " + b"k" * 65 + b" ready 0 0 1 1",
    b"import-job k ready 4294967296 0 1 1",
])
def test_malformed_import_job_headers_are_bad_format_and_the_body_is_a_command(feed, line):
    assert feed(line + b"\r\nx\r\n") == [BAD, Rejected(UnknownCommand())]


def test_an_oversized_import_job_is_job_too_big_and_counted_as_import_job(feed):
    events = feed(b"import-job k ready 0 0 1 5\r\nabcde\r\n", max_job_size=4)
    assert [(type(e.reply).__name__, e.counted) for e in events] == [("JobTooBig", "import-job")]


def test_the_admin_request_types_are_the_admin_commands_of_the_prefix_table():
    from beanraft.protocol import ADMIN_REQUEST_TYPES, REQUEST_TYPES
    from beanraft.protocol.commands import ALL_COMMANDS

    prefixes = [prefix.decode().strip() for prefix, _ in ALL_COMMANDS]
    admin = prefixes[prefixes.index("purge-tube"):]
    assert [kind.name for kind in ADMIN_REQUEST_TYPES] == admin
    assert set(ADMIN_REQUEST_TYPES) <= set(REQUEST_TYPES)
