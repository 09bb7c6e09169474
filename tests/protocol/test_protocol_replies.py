"""Goal: every reply and every YAML body is byte-for-byte what beanstalkd 1.12 sends (§4, §6).

Method: replies are encoded and compared with the exact bytes of the reference's transcripts;
the YAML helpers rebuild the stats-job, stats-tube, stats and list bodies of §6 and §12 T1 from
the key constants, so a wrong key, order or format shows up as a byte difference.
"""

from __future__ import annotations

import pytest

from beanraft.protocol import (
    REPLY_TYPES,
    STATS_JOB_KEYS,
    STATS_KEYS,
    STATS_TUBE_KEYS,
    BadFormat,
    Buried,
    DeadlineSoon,
    AuthFailed,
    AuthRequired,
    Authenticated,
    Deleted,
    Draining,
    ExpectedCrlf,
    Found,
    Inserted,
    InternalError,
    JobTooBig,
    Kicked,
    NotFound,
    NotIgnored,
    Ok,
    OutOfMemory,
    Paused,
    PermissionDenied,
    Released,
    Reserved,
    Moved,
    Exists,
    Purged,
    Resumed,
    Session,
    TimedOut,
    Touched,
    UnknownCommand,
    Using,
    Watching,
    encode,
    yaml_list,
    yaml_mapping,
)

REPLIES = [
    (Inserted(1), b"INSERTED 1\r\n"),
    (Inserted(18446744073709551615), b"INSERTED 18446744073709551615\r\n"),
    (Buried(), b"BURIED\r\n"),
    (Buried(4), b"BURIED 4\r\n"),
    (Using("default"), b"USING default\r\n"),
    (Reserved(1, b"x"), b"RESERVED 1 1\r\nx\r\n"),
    (Reserved(2, b""), b"RESERVED 2 0\r\n\r\n"),
    (DeadlineSoon(), b"DEADLINE_SOON\r\n"),
    (TimedOut(), b"TIMED_OUT\r\n"),
    (Deleted(), b"DELETED\r\n"),
    (NotFound(), b"NOT_FOUND\r\n"),
    (Released(), b"RELEASED\r\n"),
    (Touched(), b"TOUCHED\r\n"),
    (Watching(2), b"WATCHING 2\r\n"),
    (NotIgnored(), b"NOT_IGNORED\r\n"),
    (Found(1, b"\x00\r\n\xff\r\n"), b"FOUND 1 6\r\n\x00\r\n\xff\r\n\r\n"),  # §12 T15
    (Kicked(), b"KICKED\r\n"),
    (Kicked(0), b"KICKED 0\r\n"),
    (Kicked(3), b"KICKED 3\r\n"),
    (Paused(), b"PAUSED\r\n"),
    (Ok(b"---\n- default\n"), b"OK 14\r\n---\n- default\n\r\n"),
    (BadFormat(), b"BAD_FORMAT\r\n"),
    (UnknownCommand(), b"UNKNOWN_COMMAND\r\n"),
    (ExpectedCrlf(), b"EXPECTED_CRLF\r\n"),
    (JobTooBig(), b"JOB_TOO_BIG\r\n"),
    (OutOfMemory(), b"OUT_OF_MEMORY\r\n"),
    (InternalError(), b"INTERNAL_ERROR\r\n"),
    (Draining(), b"DRAINING\r\n"),
    # The extensions (docs/reference/extensions.md).
    (Session("Zx-9_"), b"SESSION Zx-9_\r\n"),
    (Resumed((5, 7)), b"RESUMED 12\r\n---\n- 5\n- 7\n\r\n"),
    (Resumed(()), b"RESUMED 4\r\n---\n\r\n"),
    (Purged(0), b"PURGED 0\r\n"),
    (Purged(12345), b"PURGED 12345\r\n"),
    (Moved(3), b"MOVED 3\r\n"),
    (Exists(18446744073709551615), b"EXISTS 18446744073709551615\r\n"),
    # Authentication (docs/reference/auth.md).
    (Authenticated(), b"AUTHENTICATED\r\n"),
    (AuthFailed(), b"AUTH_FAILED\r\n"),
    (AuthRequired(), b"AUTH_REQUIRED\r\n"),
    (PermissionDenied(), b"PERMISSION_DENIED\r\n"),
]


@pytest.mark.parametrize("reply, wire", REPLIES, ids=[repr(w)[2:-5] for _, w in REPLIES])
def test_each_reply_encodes_to_beanstalkds_bytes(reply, wire):
    assert encode(reply) == wire
    assert reply.to_bytes() == wire


def test_every_reply_class_has_an_example_above():
    assert {type(reply) for reply, _ in REPLIES} == set(REPLY_TYPES)


def test_replies_are_immutable_values():
    assert TimedOut() == TimedOut() and hash(Inserted(3)) == hash(Inserted(3))
    with pytest.raises(AttributeError):
        Inserted(3).job_id = 4  # type: ignore[misc]


def test_encode_refuses_something_that_is_not_a_reply():
    with pytest.raises(TypeError):
        encode(b"INSERTED 1\r\n")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- YAML (§6, §12 T1)


def test_stats_job_of_t1_is_rebuilt_byte_for_byte():
    values = ["1", "default", "ready", 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    body = yaml_mapping(list(zip(STATS_JOB_KEYS, values)))
    assert encode(Ok(body)) == (
        b"OK 143\r\n---\nid: 1\ntube: default\nstate: ready\npri: 0\nage: 0\ndelay: 0\nttr: 1\n"
        b"time-left: 0\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n\r\n"
    )


def test_stats_tube_of_t1_is_rebuilt_byte_for_byte():
    values = ["default", 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    body = yaml_mapping(list(zip(STATS_TUBE_KEYS, values)))
    assert encode(Ok(body)) == (
        b"OK 265\r\n---\nname: default\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 1\n"
        b"current-jobs-reserved: 0\ncurrent-jobs-delayed: 0\ncurrent-jobs-buried: 0\n"
        b"total-jobs: 1\ncurrent-using: 1\ncurrent-watching: 1\ncurrent-waiting: 0\n"
        b"cmd-delete: 0\ncmd-pause-tube: 0\npause: 0\npause-time-left: 0\n\r\n"
    )


FRESH_STATS = (  # §6.3: a fresh beanstalkd 1.12
    b"OK 956\r\n---\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 0\ncurrent-jobs-reserved: 0\n"
    b"current-jobs-delayed: 0\ncurrent-jobs-buried: 0\ncmd-put: 0\ncmd-peek: 0\n"
    b"cmd-peek-ready: 0\ncmd-peek-delayed: 0\ncmd-peek-buried: 0\ncmd-reserve: 0\n"
    b"cmd-reserve-with-timeout: 0\ncmd-delete: 0\ncmd-release: 0\ncmd-use: 0\ncmd-watch: 0\n"
    b"cmd-ignore: 0\ncmd-bury: 0\ncmd-kick: 0\ncmd-touch: 0\ncmd-stats: 1\ncmd-stats-job: 0\n"
    b"cmd-stats-tube: 0\ncmd-list-tubes: 1\ncmd-list-tube-used: 1\ncmd-list-tubes-watched: 1\n"
    b"cmd-pause-tube: 0\njob-timeouts: 0\ntotal-jobs: 0\nmax-job-size: 65535\ncurrent-tubes: 1\n"
    b"current-connections: 1\ncurrent-producers: 0\ncurrent-workers: 0\ncurrent-waiting: 0\n"
    b"total-connections: 2\npid: 18219\nversion: \"1.12\"\nrusage-utime: 0.003467\n"
    b"rusage-stime: 0.000000\nuptime: 0\nbinlog-oldest-index: 0\nbinlog-current-index: 0\n"
    b"binlog-records-migrated: 0\nbinlog-records-written: 0\nbinlog-max-size: 10485760\n"
    b"draining: false\nid: fbf5d23f8283d715\nhostname: vm\nos: #1 SMP PREEMPT_DYNAMIC @0\n"
    b"platform: x86_64\n\r\n"
)


def test_stats_of_a_fresh_server_is_rebuilt_byte_for_byte():
    # Read the values back out of the reference bytes; the keys and formatting come from us.
    values = dict(line.split(": ", 1) for line in FRESH_STATS.decode().split("\n")[2:-2])
    typed = {key: (int(v) if v.isdigit() else v) for key, v in values.items()}
    typed["draining"] = False
    body = yaml_mapping([(key, typed[key]) for key in STATS_KEYS])
    assert encode(Ok(body)) == FRESH_STATS
    assert list(values) == list(STATS_KEYS)


def test_yaml_mapping_writes_booleans_as_words_and_strings_verbatim():
    assert yaml_mapping([("draining", True), ("n", 0), ("s", '"1.12"')]) == (
        b'---\ndraining: true\nn: 0\ns: "1.12"\n'
    )
    assert yaml_mapping([]) == b"---\n"


def test_list_replies_of_t1_are_rebuilt_byte_for_byte():
    assert encode(Ok(yaml_list(["default", "foo", "bar"]))) == (
        b"OK 26\r\n---\n- default\n- foo\n- bar\n\r\n"
    )
    assert encode(Ok(yaml_list(["default", "bar"]))) == b"OK 20\r\n---\n- default\n- bar\n\r\n"
    assert encode(Ok(yaml_list(["default", "t4", "t2", "t3"]))) == (  # §12 T9
        b"OK 29\r\n---\n- default\n- t4\n- t2\n- t3\n\r\n"
    )


def test_stats_reports_no_counter_for_reserve_job_kick_job_or_quit():
    assert not {"cmd-reserve-job", "cmd-kick-job", "cmd-quit"} & set(STATS_KEYS)
    assert sum(key.startswith("cmd-") for key in STATS_KEYS) == 22
