"""Transcripts of tubes: use, watch, ignore, the three list commands, tube lifetime (reference
counting and swap-remove order) and pause-tube (§3.2, §4.2, §4.9, §4.10, §4.15, §4.16, §6.4, T1, T9, T17).

Method: exact bytes against a fresh server, several connections where a tube's life depends on
who uses or watches it; pause timings are asserted as lower bounds or generous upper bounds.
"""

import time

import pytest


def yaml_list(*names: bytes) -> bytes:
    """The exact `OK <n>` reply of a list command naming these tubes."""
    body = b"---\n" + b"".join(b"- " + name + b"\n" for name in names)
    return b"OK %d\r\n" % len(body) + body + b"\r\n"


# --------------------------------------------------------------------------- use, watch, ignore


def test_a_fresh_connection_uses_and_watches_default(wire):
    wire.send(b"list-tube-used\r\nlist-tubes-watched\r\nlist-tubes\r\n")
    wire.expect(b"USING default\r\n" + b"OK 14\r\n---\n- default\n\r\n" * 2)


def test_use_and_watch_create_tubes_listed_in_creation_order(wire):
    wire.send(b"use foo\r\nwatch bar\r\nlist-tubes\r\nlist-tubes-watched\r\nlist-tube-used\r\npeek-ready\r\n")
    wire.expect(b"USING foo\r\nWATCHING 2\r\n" + b"OK 26\r\n---\n- default\n- foo\n- bar\n\r\n"
                + b"OK 20\r\n---\n- default\n- bar\n\r\n" + b"USING foo\r\nNOT_FOUND\r\n")


def test_watching_a_tube_twice_keeps_the_count(wire):
    wire.send(b"watch a\r\nwatch a\r\nwatch default\r\nlist-tubes-watched\r\n")
    wire.expect(b"WATCHING 2\r\nWATCHING 2\r\nWATCHING 2\r\n" + yaml_list(b"default", b"a"))


def test_the_last_watched_tube_cannot_be_ignored(wire):
    wire.send(b"use w\r\nwatch u\r\nlist-tubes\r\nlist-tube-used\r\nlist-tubes-watched\r\n")
    wire.expect(b"USING w\r\nWATCHING 2\r\n" + yaml_list(b"default", b"w", b"u") + b"USING w\r\n"
                + yaml_list(b"default", b"u"))
    wire.send(b"ignore default\r\nignore u\r\nlist-tubes-watched\r\n")
    wire.expect(b"WATCHING 1\r\nNOT_IGNORED\r\n" + yaml_list(b"u"))


def test_ignoring_a_tube_not_watched_or_not_existing_changes_nothing(wire):
    wire.send(b"ignore nonexist\r\nwatch x\r\nuse y\r\nignore y\r\nlist-tubes\r\n")
    wire.expect(b"WATCHING 1\r\nWATCHING 2\r\nUSING y\r\nWATCHING 2\r\n" + yaml_list(b"default", b"x", b"y"))


def test_a_name_of_200_characters_appears_in_the_lists_as_is(wire):
    name = b"n" * 200
    wire.send(b"watch " + name + b"\r\nlist-tubes-watched\r\n")
    wire.expect(b"WATCHING 2\r\n" + yaml_list(b"default", name))


def test_using_and_watching_connections_are_counted_per_tube(server):
    first, second = server.connect(), server.connect()
    first.send(b"use t\r\nwatch t\r\n")
    first.expect(b"USING t\r\nWATCHING 2\r\n")
    second.send(b"watch t\r\nignore default\r\n")
    second.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    tube = second.yaml(b"stats-tube t")
    assert (tube["current-using"], tube["current-watching"]) == ("1", "2")
    default = second.yaml(b"stats-tube default")
    assert (default["current-using"], default["current-watching"]) == ("1", "1")


# --------------------------------------------------------------------------- lifetime


def test_removing_a_tube_moves_the_last_one_into_its_place(server):
    keeper = server.connect()
    keeper.send(b"watch t1\r\nwatch t2\r\nwatch t3\r\nwatch t4\r\nlist-tubes\r\n")
    keeper.expect(b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 4\r\nWATCHING 5\r\n"
                  + yaml_list(b"default", b"t1", b"t2", b"t3", b"t4"))
    keeper.send(b"ignore t1\r\nlist-tubes\r\nlist-tubes-watched\r\n")
    keeper.expect(b"WATCHING 4\r\n" + yaml_list(b"default", b"t4", b"t2", b"t3") * 2)


def test_ignoring_the_first_watched_tube_moves_the_last_one_first(wire):
    wire.send(b"watch a\r\nwatch b\r\nwatch c\r\nignore default\r\nlist-tubes-watched\r\n")
    wire.expect(b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 4\r\nWATCHING 3\r\n" + yaml_list(b"c", b"a", b"b"))


def test_a_tube_nobody_uses_or_watches_and_without_jobs_disappears(wire):
    wire.send(b"use foo\r\nuse bar\r\nlist-tubes\r\nstats-tube foo\r\n")
    wire.expect(b"USING foo\r\nUSING bar\r\n" + yaml_list(b"default", b"bar") + b"NOT_FOUND\r\n")


def test_a_tube_lives_as_long_as_it_holds_jobs_and_is_then_forgotten(wire):
    wire.send(b"use keep\r\nput 0 0 60 1\r\nk\r\nuse default\r\n")
    wire.expect(b"USING keep\r\nINSERTED 1\r\nUSING default\r\n")
    assert wire.yaml(b"stats-tube keep")["total-jobs"] == "1"
    wire.send(b"delete 1\r\nstats-tube keep\r\nuse keep\r\n")
    wire.expect(b"DELETED\r\nNOT_FOUND\r\nUSING keep\r\n")
    tube = wire.yaml(b"stats-tube keep")  # a new tube: its counters start again
    assert (tube["total-jobs"], tube["cmd-delete"]) == ("0", "0")


def test_closing_a_connection_drops_the_tubes_only_it_used_or_watched(server):
    leaver, stayer = server.connect(), server.connect()
    leaver.send(b"use gone1\r\nwatch gone2\r\n")
    leaver.expect(b"USING gone1\r\nWATCHING 2\r\n")
    stayer.send(b"list-tubes\r\n")
    stayer.expect(yaml_list(b"default", b"gone1", b"gone2"))
    leaver.close()
    time.sleep(0.2)
    stayer.send(b"list-tubes\r\n")
    stayer.expect(yaml_list(b"default"))


def test_stats_tube_ignore_and_pause_tube_never_create_a_tube(wire):
    wire.send(b"stats-tube nope\r\nignore nope\r\npause-tube nope 1\r\nlist-tubes\r\n")
    wire.expect(b"NOT_FOUND\r\nWATCHING 1\r\nNOT_FOUND\r\n" + yaml_list(b"default"))


def test_the_default_tube_survives_without_users(server):
    wire = server.connect()
    wire.send(b"use other\r\nwatch other\r\nignore default\r\nlist-tubes\r\n")
    wire.expect(b"USING other\r\nWATCHING 2\r\nWATCHING 1\r\n" + yaml_list(b"default", b"other"))


# --------------------------------------------------------------------------- pause-tube


def test_pause_tube_shows_its_duration_and_truncated_time_left(wire):
    wire.send(b"pause-tube default 3\r\n")
    wire.expect(b"PAUSED\r\n")
    tube = wire.yaml(b"stats-tube default")
    assert (tube["cmd-pause-tube"], tube["pause"], tube["pause-time-left"]) == ("1", "3", "2")


def test_a_paused_tube_gives_no_job_to_reserve_until_the_pause_ends(server):
    producer, worker = server.connect(), server.connect()
    producer.send(b"put 10 0 60 1\r\nP\r\npause-tube default 2\r\n")
    producer.expect(b"INSERTED 1\r\nPAUSED\r\n")
    paused_at = time.monotonic()
    worker.send(b"reserve-with-timeout 1\r\n")
    worker.expect(b"TIMED_OUT\r\n", timeout=3)
    assert time.monotonic() - paused_at >= 0.9
    worker.send(b"reserve\r\n")
    worker.expect(b"RESERVED 1 1\r\nP\r\n", timeout=3)
    assert 1.8 <= time.monotonic() - paused_at < 4
    tube = producer.yaml(b"stats-tube default")
    assert (tube["pause"], tube["pause-time-left"]) == ("0", "0")


def test_pausing_for_zero_seconds_unpauses_and_wakes_the_waiters(server):
    producer, worker = server.connect(), server.connect()
    producer.send(b"put 0 0 60 0\r\n\r\npause-tube default 86400\r\n")
    producer.expect(b"INSERTED 1\r\nPAUSED\r\n")
    worker.send(b"reserve\r\n")
    worker.expect_nothing(0.3)
    start = time.monotonic()
    producer.send(b"pause-tube default 0\r\n")
    producer.expect(b"PAUSED\r\n")
    worker.expect(b"RESERVED 1 0\r\n\r\n")
    assert time.monotonic() - start < 1
    tube = producer.yaml(b"stats-tube default")
    assert (tube["pause"], tube["pause-time-left"], tube["cmd-pause-tube"]) == ("0", "0", "2")


def test_a_waiter_watching_a_paused_and_an_open_tube_gets_jobs_from_the_open_one(server):
    producer, worker = server.connect(), server.connect()
    producer.send(b"put 0 0 60 1\r\np\r\npause-tube default 100\r\nuse open\r\nput 5 0 60 1\r\no\r\n")
    producer.expect(b"INSERTED 1\r\nPAUSED\r\nUSING open\r\nINSERTED 2\r\n")
    worker.send(b"watch open\r\nreserve\r\nreserve-with-timeout 0\r\n")
    worker.expect(b"WATCHING 2\r\nRESERVED 2 1\r\no\r\nTIMED_OUT\r\n")


def test_a_paused_tube_accepts_puts_deletes_and_peeks(wire):
    wire.send(b"pause-tube default 100\r\nput 0 0 60 1\r\nx\r\npeek-ready\r\ndelete 1\r\n")
    wire.expect(b"PAUSED\r\nINSERTED 1\r\nFOUND 1 1\r\nx\r\nDELETED\r\n")


def test_a_pause_is_forgotten_with_its_tube(server):
    owner = server.connect()
    owner.send(b"watch t3\r\npause-tube t3 100\r\n")
    owner.expect(b"WATCHING 2\r\nPAUSED\r\n")
    assert owner.yaml(b"stats-tube t3")["pause"] == "100"
    owner.send(b"ignore t3\r\nstats-tube t3\r\nwatch t3\r\n")
    owner.expect(b"WATCHING 1\r\nNOT_FOUND\r\nWATCHING 2\r\n")
    tube = owner.yaml(b"stats-tube t3")
    assert (tube["pause"], tube["cmd-pause-tube"]) == ("0", "0")


@pytest.mark.parametrize(
    "line",
    [b"pause-tube default10", b"pause-tube default", b"pause-tube default -1", b"pause-tube default 1 ",
     b"pause-tube default 4294967296", b"pause-tube default x", b"pause-tube -x 5", b"pause-tube " + b"a" * 201 + b" 1",
     b"pause-tube default\t1"],
)
def test_a_malformed_pause_tube_is_a_bad_format(wire, line):
    wire.send(line + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")


def test_pause_tube_counts_itself_before_checking_the_name(wire):
    """§2.6: a name starting with '-' is rejected after cmd-pause-tube was incremented."""
    before = int(wire.yaml(b"stats")["cmd-pause-tube"])
    wire.send(b"pause-tube -x 5\r\n")
    wire.expect(b"BAD_FORMAT\r\n")
    assert int(wire.yaml(b"stats")["cmd-pause-tube"]) == before + 1
    assert wire.yaml(b"stats-tube default")["cmd-pause-tube"] == "0"
