"""Transcripts of stats-job, stats-tube and stats: exact bytes, key order, and when each counter
moves (§2.6, §4.14, §6, T1, T8, T10, T17).

Method: exact bytes where the reply is fully determined by the commands sent (stats-job,
stats-tube); for `stats`, whose values include a pid, rusage, hostname and the like, the key order
is exact, node-specific values are matched by shape, and counters are compared as deltas so the
readiness probe of the fixture does not matter.
"""

import re
import time

import pytest


def yaml_reply(pairs: list[tuple[str, object]]) -> bytes:
    """The exact `OK <n>` framing of a YAML mapping (n excludes the final CRLF)."""
    body = b"---\n" + b"".join(f"{key}: {value}\n".encode() for key, value in pairs)
    return b"OK %d\r\n" % len(body) + body + b"\r\n"


def job_stats(job_id=1, tube="default", state="ready", pri=0, age=0, delay=0, ttr=60, time_left=0,
              reserves=0, timeouts=0, releases=0, buries=0, kicks=0) -> bytes:
    return yaml_reply([
        ("id", job_id), ("tube", tube), ("state", state), ("pri", pri), ("age", age), ("delay", delay),
        ("ttr", ttr), ("time-left", time_left), ("file", 0), ("reserves", reserves), ("timeouts", timeouts),
        ("releases", releases), ("buries", buries), ("kicks", kicks)])


def tube_stats(name="default", urgent=0, ready=0, reserved=0, delayed=0, buried=0, total=0, using=0,
               watching=0, waiting=0, deletes=0, pauses=0, pause=0, pause_left=0) -> bytes:
    return yaml_reply([
        ("name", name), ("current-jobs-urgent", urgent), ("current-jobs-ready", ready),
        ("current-jobs-reserved", reserved), ("current-jobs-delayed", delayed), ("current-jobs-buried", buried),
        ("total-jobs", total), ("current-using", using), ("current-watching", watching),
        ("current-waiting", waiting), ("cmd-delete", deletes), ("cmd-pause-tube", pauses), ("pause", pause),
        ("pause-time-left", pause_left)])


# --------------------------------------------------------------------------- stats-job


def test_stats_job_and_stats_tube_of_a_fresh_job_are_exactly_these_bytes(wire):
    wire.send(b"put 0 0 0 5\r\nhello\r\nstats-job 1\r\n")
    wire.expect(b"INSERTED 1\r\n" + b"OK 143\r\n---\nid: 1\ntube: default\nstate: ready\npri: 0\nage: 0\n"
                b"delay: 0\nttr: 1\ntime-left: 0\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\n"
                b"kicks: 0\n\r\n")
    wire.send(b"stats-tube default\r\n")
    wire.expect(b"OK 265\r\n---\nname: default\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 1\n"
                b"current-jobs-reserved: 0\ncurrent-jobs-delayed: 0\ncurrent-jobs-buried: 0\ntotal-jobs: 1\n"
                b"current-using: 1\ncurrent-watching: 1\ncurrent-waiting: 0\ncmd-delete: 0\ncmd-pause-tube: 0\n"
                b"pause: 0\npause-time-left: 0\n\r\n")


def test_stats_job_of_a_reserved_job_shows_its_time_left(wire):
    wire.send(b"use work\r\nput 2000 0 30 1\r\nx\r\nwatch work\r\nreserve\r\nstats-job 1\r\n")
    wire.expect(b"USING work\r\nINSERTED 1\r\nWATCHING 2\r\nRESERVED 1 1\r\nx\r\n"
                + job_stats(tube="work", state="reserved", pri=2000, ttr=30, time_left=29, reserves=1))


def test_stats_job_of_a_job_released_with_a_delay(server):
    producer, worker = server.connect(), server.connect()
    producer.send(b"put 100 0 60 1\r\n1\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.send(b"reserve\r\nrelease 1 100 0\r\nreserve\r\nrelease 1 5 3\r\n")
    worker.expect(b"RESERVED 1 1\r\n1\r\nRELEASED\r\nRESERVED 1 1\r\n1\r\nRELEASED\r\n")
    producer.send(b"stats-job 1\r\n")
    producer.expect(b"OK 146\r\n---\nid: 1\ntube: default\nstate: delayed\npri: 5\nage: 0\ndelay: 3\nttr: 60\n"
                    b"time-left: 2\nfile: 0\nreserves: 2\ntimeouts: 0\nreleases: 2\nburies: 0\nkicks: 0\n\r\n")


def test_stats_job_of_a_buried_then_kicked_job_counts_both(wire):
    wire.send(b"put 7 0 60 1\r\nx\r\nreserve\r\nbury 1 8\r\nstats-job 1\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\nBURIED\r\n"
                + job_stats(state="buried", pri=8, reserves=1, buries=1))
    wire.send(b"kick 1\r\nstats-job 1\r\n")
    wire.expect(b"KICKED 1\r\n" + job_stats(state="ready", pri=8, reserves=1, buries=1, kicks=1))


def test_stats_job_age_grows_with_wall_time(wire):
    wire.send(b"put 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\n")
    time.sleep(1.1)
    assert wire.yaml(b"stats-job 1")["age"] == "1"


# --------------------------------------------------------------------------- stats-tube


def test_stats_tube_counts_users_watchers_and_successful_deletes(wire):
    wire.send(b"use tubea\r\nput 0 0 60 1\r\nx\r\ndelete 1\r\ndelete 1\r\n")
    wire.expect(b"USING tubea\r\nINSERTED 1\r\nDELETED\r\nNOT_FOUND\r\n")
    wire.send(b"stats-tube tubea\r\nstats-tube default\r\n")
    wire.expect(tube_stats(name="tubea", total=1, using=1, watching=0, deletes=1)
                + tube_stats(name="default", using=0, watching=1))


def test_stats_tube_counts_every_state(server):
    wire, waiter = server.connect(), server.connect()
    wire.send(b"put 1 0 60 1\r\na\r\nput 2000 0 60 1\r\nb\r\nput 3 100 60 1\r\nc\r\nput 4 0 60 1\r\nd\r\n"
              b"put 5 0 60 1\r\ne\r\nreserve-job 4\r\nreserve-job 5\r\nbury 5 5\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\n"
                b"RESERVED 4 1\r\nd\r\nRESERVED 5 1\r\ne\r\nBURIED\r\n")
    wire.send(b"stats-tube default\r\n")
    wire.expect(tube_stats(urgent=1, ready=2, reserved=1, delayed=1, buried=1, total=5, using=2, watching=2))
    waiter.send(b"watch idle\r\nignore default\r\nreserve\r\n")
    waiter.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    time.sleep(0.2)
    wire.send(b"stats-tube idle\r\n")
    wire.expect(tube_stats(name="idle", watching=1, waiting=1))


def test_stats_tube_of_a_paused_tube(wire):
    wire.send(b"pause-tube default 100\r\nstats-tube default\r\n")
    wire.expect(b"PAUSED\r\n" + tube_stats(using=1, watching=1, pauses=1, pause=100, pause_left=99))


# --------------------------------------------------------------------------- stats

STATS_KEYS = [
    "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
    "current-jobs-buried", "cmd-put", "cmd-peek", "cmd-peek-ready", "cmd-peek-delayed", "cmd-peek-buried",
    "cmd-reserve", "cmd-reserve-with-timeout", "cmd-delete", "cmd-release", "cmd-use", "cmd-watch",
    "cmd-ignore", "cmd-bury", "cmd-kick", "cmd-touch", "cmd-stats", "cmd-stats-job", "cmd-stats-tube",
    "cmd-list-tubes", "cmd-list-tube-used", "cmd-list-tubes-watched", "cmd-pause-tube", "job-timeouts",
    "total-jobs", "max-job-size", "current-tubes", "current-connections", "current-producers",
    "current-workers", "current-waiting", "total-connections", "pid", "version", "rusage-utime",
    "rusage-stime", "uptime", "binlog-oldest-index", "binlog-current-index", "binlog-records-migrated",
    "binlog-records-written", "binlog-max-size", "draining", "id", "hostname", "os", "platform",
]
COUNTERS = [key for key in STATS_KEYS if key.startswith("cmd-")]
NODE_SPECIFIC = {  # values that differ between processes: only their shape is compared
    "pid": r"[1-9]\d*",
    "version": r'"[^"\n]+"',
    "rusage-utime": r"\d+\.\d{6}",
    "rusage-stime": r"\d+\.\d{6}",
    "uptime": r"\d+",
    "total-connections": r"[1-9]\d*",
    "cmd-list-tube-used": r"\d+",  # the fixture's readiness probe sends list-tube-used
    "id": r"[0-9a-f]{16}",
    "hostname": r"\S+",
    "os": r".*",
    "platform": r"\S+",
}


def test_stats_has_every_key_in_the_reference_order(wire):
    assert list(wire.yaml(b"stats")) == STATS_KEYS


def test_stats_of_a_fresh_server_has_these_values(wire):
    stats = wire.yaml(b"stats")
    for key, shape in NODE_SPECIFIC.items():
        assert re.fullmatch(shape, stats[key]), f"{key}: {stats[key]!r}"
    fixed = {key: value for key, value in stats.items() if key not in NODE_SPECIFIC}
    assert fixed == {
        **{key: "0" for key in fixed if key.startswith(("current-jobs-", "cmd-", "binlog-"))},
        "cmd-stats": "1", "job-timeouts": "0", "total-jobs": "0", "max-job-size": "65535",
        "current-tubes": "1", "current-connections": "1", "current-producers": "0", "current-workers": "0",
        "current-waiting": "0", "binlog-max-size": "10485760", "draining": "false",
    }


def test_the_version_of_beanstalkd_is_quoted_1_12(server, wire):
    if server.kind != "beanstalkd":
        pytest.skip("only the reference must call itself 1.12")
    assert wire.yaml(b"stats")["version"] == '"1.12"'


def counters(wire) -> dict[str, int]:
    stats = wire.yaml(b"stats")
    return {key: int(stats[key]) for key in COUNTERS}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that moved, without the `stats` that measured them."""
    moved = {key: after[key] - before[key] for key in before if after[key] != before[key]}
    moved["cmd-stats"] -= 1
    return {key: value for key, value in moved.items() if value}


def test_each_command_increments_its_own_counter_once(wire):
    wire.send(b"put 0 0 60 1\r\nx\r\nput 0 100 60 1\r\nd\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    cases = [
        (b"peek 1", b"FOUND 1 1\r\nx\r\n", "cmd-peek"),
        (b"peek-ready", b"FOUND 1 1\r\nx\r\n", "cmd-peek-ready"),
        (b"peek-delayed", b"FOUND 2 1\r\nd\r\n", "cmd-peek-delayed"),
        (b"peek-buried", b"NOT_FOUND\r\n", "cmd-peek-buried"),
        (b"reserve-with-timeout 0", b"RESERVED 1 1\r\nx\r\n", "cmd-reserve-with-timeout"),
        (b"touch 1", b"TOUCHED\r\n", "cmd-touch"),
        (b"release 1 0 0", b"RELEASED\r\n", "cmd-release"),
        (b"reserve", b"RESERVED 1 1\r\nx\r\n", "cmd-reserve"),
        (b"bury 1 0", b"BURIED\r\n", "cmd-bury"),
        (b"kick 1", b"KICKED 1\r\n", "cmd-kick"),
        (b"delete 1", b"DELETED\r\n", "cmd-delete"),
        (b"use u", b"USING u\r\n", "cmd-use"),
        (b"watch w", b"WATCHING 2\r\n", "cmd-watch"),
        (b"ignore w", b"WATCHING 1\r\n", "cmd-ignore"),
        (b"stats-job 2", None, "cmd-stats-job"),
        (b"stats-tube default", None, "cmd-stats-tube"),
        (b"list-tubes", None, "cmd-list-tubes"),
        (b"list-tube-used", b"USING u\r\n", "cmd-list-tube-used"),
        (b"list-tubes-watched", None, "cmd-list-tubes-watched"),
        (b"pause-tube default 0", b"PAUSED\r\n", "cmd-pause-tube"),
        (b"put 0 0 60 1\r\ny", b"INSERTED 3\r\n", "cmd-put"),
    ]
    for command, reply, counter in cases:
        before = counters(wire)
        if reply is None:
            wire.yaml(command)
        else:
            wire.send(command + b"\r\n")
            wire.expect(reply)
        assert delta(before, counters(wire)) == {counter: 1}, command


def test_commands_that_find_nothing_are_counted(wire):
    before = counters(wire)
    for command in (b"peek 9", b"delete 9", b"release 9 0 0", b"bury 9 0", b"touch 9", b"stats-job 9",
                    b"stats-tube nope", b"pause-tube nope 1"):
        wire.send(command + b"\r\n")
        wire.expect(b"NOT_FOUND\r\n")
    assert delta(before, counters(wire)) == {
        "cmd-peek": 1, "cmd-delete": 1, "cmd-release": 1, "cmd-bury": 1, "cmd-touch": 1, "cmd-stats-job": 1,
        "cmd-stats-tube": 1, "cmd-pause-tube": 1}


def test_commands_whose_arguments_do_not_parse_are_not_counted(wire):
    before = counters(wire)
    for command in (b"peek x", b"delete x", b"release x 0 0", b"bury x 0", b"touch x", b"stats-job x",
                    b"kick x", b"use -x", b"watch -x", b"ignore -x", b"stats-tube -x", b"put x 0 0 1",
                    b"reserve-with-timeout 99999999999999999999", b"reserve ", b"stats ", b"list-tubes ",
                    b"peek-ready ", b"pause-tube default"):
        wire.send(command + b"\r\n")
        wire.expect(b"BAD_FORMAT\r\n")
    assert delta(before, counters(wire)) == {}


def test_reserve_job_and_kick_job_have_no_counter_in_stats(wire):
    wire.send(b"put 0 100 60 1\r\nd\r\n")
    wire.expect(b"INSERTED 1\r\n")
    before = counters(wire)
    wire.send(b"kick-job 1\r\nreserve-job 1\r\n")
    wire.expect(b"KICKED\r\nRESERVED 1 1\r\nd\r\n")
    assert delta(before, counters(wire)) == {}


def test_connections_producers_and_workers_are_counted_while_open(server):
    observer = server.connect()
    first = observer.yaml(b"stats")
    producer, worker, idle = server.connect(), server.connect(), server.connect()
    producer.send(b"put 0 0 60 1\r\nx\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.send(b"reserve-job 1\r\n")  # reserve-job makes a worker too
    worker.expect(b"RESERVED 1 1\r\nx\r\n")
    stats = observer.yaml(b"stats")
    assert (stats["current-connections"], stats["current-producers"], stats["current-workers"]) == ("4", "1", "1")
    assert int(stats["total-connections"]) == int(first["total-connections"]) + 3
    for connection in (producer, worker, idle):
        connection.close()
    time.sleep(0.2)
    stats = observer.yaml(b"stats")
    assert (stats["current-connections"], stats["current-producers"], stats["current-workers"]) == ("1", "0", "0")
    assert (stats["current-jobs-ready"], stats["current-jobs-reserved"]) == ("1", "0")


def test_global_job_gauges_add_up_over_tubes(wire):
    wire.send(b"use a\r\nput 0 0 60 1\r\nx\r\nput 2000 100 60 1\r\ny\r\nuse b\r\nput 5 0 60 1\r\nz\r\n")
    wire.expect(b"USING a\r\nINSERTED 1\r\nINSERTED 2\r\nUSING b\r\nINSERTED 3\r\n")
    stats = wire.yaml(b"stats")
    assert [stats[key] for key in ("current-jobs-urgent", "current-jobs-ready", "current-jobs-delayed",
                                   "total-jobs", "current-tubes")] == ["2", "2", "1", "3", "3"]
