"""Transcripts of the commands that move one job between states: delete, release, bury, touch,
kick, kick-job and the peeks (§3.1, §4.5–§4.8, §4.11–§4.13, T8, T14, T16, T17).

Method: exact bytes against a fresh server; a job's state and counters are read back with
`stats-job`, whose exact bytes are covered in test_transcripts_stats.py.
"""

import time

import pytest


def state_of(wire, job_id: int) -> str:
    return wire.yaml(b"stats-job %d" % job_id)["state"]


# --------------------------------------------------------------------------- delete


def test_delete_removes_a_job_in_any_state_it_may_reach(wire):
    wire.send(b"put 0 0 60 1\r\nr\r\nput 0 50 60 1\r\nd\r\nput 0 0 60 1\r\nb\r\nput 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\n")
    wire.send(b"reserve-job 3\r\nbury 3 0\r\nreserve-job 4\r\n")
    wire.expect(b"RESERVED 3 1\r\nb\r\nBURIED\r\nRESERVED 4 1\r\nx\r\n")
    for job_id in (1, 2, 3, 4):  # ready, delayed, buried, reserved by this connection
        wire.send(b"delete %d\r\n" % job_id)
        wire.expect(b"DELETED\r\n")
    for job_id in (1, 2, 3, 4):
        wire.send(b"delete %d\r\npeek %d\r\n" % (job_id, job_id))
        wire.expect(b"NOT_FOUND\r\nNOT_FOUND\r\n")
    stats = wire.yaml(b"stats")
    assert [stats[f"current-jobs-{s}"] for s in ("ready", "delayed", "buried", "reserved")] == ["0"] * 4


def test_delete_of_a_job_in_another_tube_works_without_using_it(wire):
    wire.send(b"use far\r\nput 0 0 60 1\r\nf\r\nuse default\r\ndelete 1\r\n")
    wire.expect(b"USING far\r\nINSERTED 1\r\nUSING default\r\nDELETED\r\n")


def test_delete_of_a_job_reserved_by_another_connection_is_not_found(server):
    holder, other = server.connect(), server.connect()
    holder.send(b"put 0 0 60 0\r\n\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 0\r\n\r\n")
    other.send(b"delete 1\r\n")
    other.expect(b"NOT_FOUND\r\n")
    holder.send(b"delete 1\r\n")
    holder.expect(b"DELETED\r\n")


# --------------------------------------------------------------------------- release


def test_release_of_a_job_not_reserved_is_not_found(wire):
    wire.send(b"release 1 1 1\r\nput 0 0 60 1\r\nx\r\nrelease 1 0 0\r\n")
    wire.expect(b"NOT_FOUND\r\nINSERTED 1\r\nNOT_FOUND\r\n")


def test_a_released_job_goes_back_in_front_of_newer_jobs_of_equal_priority(server):
    producer, worker = server.connect(), server.connect()
    producer.send(b"put 100 0 60 1\r\n1\r\nput 100 0 60 1\r\n2\r\nput 100 0 60 1\r\n3\r\n")
    producer.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    worker.send(b"reserve\r\nrelease 1 100 0\r\nreserve\r\n")
    worker.expect(b"RESERVED 1 1\r\n1\r\nRELEASED\r\nRESERVED 1 1\r\n1\r\n")


def test_release_sets_the_priority_counts_and_may_delay(server):
    producer, worker = server.connect(), server.connect()
    producer.send(b"put 100 0 60 1\r\n1\r\nput 100 0 60 1\r\n2\r\n")
    producer.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    worker.send(b"reserve\r\nrelease 1 5 3\r\n")
    worker.expect(b"RESERVED 1 1\r\n1\r\nRELEASED\r\n")
    stats = producer.yaml(b"stats-job 1")
    assert (stats["state"], stats["pri"], stats["delay"], stats["releases"]) == ("delayed", "5", "3", "1")
    worker.send(b"reserve\r\nrelease 2 200 0\r\n")  # the delayed job 1 is not reservable
    worker.expect(b"RESERVED 2 1\r\n2\r\nRELEASED\r\n")
    stats = producer.yaml(b"stats-job 2")
    assert (stats["state"], stats["pri"], stats["delay"], stats["releases"]) == ("ready", "200", "0", "1")


def test_a_job_released_with_a_delay_becomes_ready_after_it(server):
    worker, observer = server.connect(), server.connect()
    worker.send(b"put 0 0 60 1\r\nx\r\nreserve\r\nrelease 1 0 1\r\n")
    worker.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\nRELEASED\r\n")
    start = time.monotonic()
    worker.send(b"reserve-with-timeout 3\r\n")
    worker.expect(b"RESERVED 1 1\r\nx\r\n", timeout=3)
    assert 0.9 <= time.monotonic() - start < 3
    assert observer.yaml(b"stats-job 1")["delay"] == "1"


# --------------------------------------------------------------------------- bury


def test_only_a_job_reserved_by_this_connection_can_be_buried(wire):
    wire.send(b"put 0 0 60 1\r\nx\r\nbury 1 0\r\nbury 2 0\r\n")
    wire.expect(b"INSERTED 1\r\nNOT_FOUND\r\nNOT_FOUND\r\n")


def test_bury_sets_the_priority_and_peek_buried_shows_the_oldest_buried_job(wire):
    wire.send(b"put 1 0 60 1\r\na\r\nput 2 0 60 1\r\nb\r\nreserve-job 2\r\nbury 2 77\r\nreserve\r\nbury 1 5\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 2 1\r\nb\r\nBURIED\r\nRESERVED 1 1\r\na\r\nBURIED\r\n")
    wire.send(b"peek-buried\r\n")  # FIFO by burial time, not by priority or id
    wire.expect(b"FOUND 2 1\r\nb\r\n")
    stats = wire.yaml(b"stats-job 2")
    assert (stats["state"], stats["pri"], stats["buries"]) == ("buried", "77", "1")
    tube = wire.yaml(b"stats-tube default")
    assert (tube["current-jobs-buried"], tube["current-jobs-ready"]) == ("2", "0")


# --------------------------------------------------------------------------- touch


def test_touch_is_for_the_holder_only(server):
    holder, other = server.connect(), server.connect()
    holder.send(b"touch 1\r\ntouch 100000000000000\r\nput 0 0 60 1\r\nx\r\ntouch 1\r\nreserve\r\ntouch 1\r\n")
    holder.expect(b"NOT_FOUND\r\nNOT_FOUND\r\nINSERTED 1\r\nNOT_FOUND\r\nRESERVED 1 1\r\nx\r\nTOUCHED\r\n")
    other.send(b"touch 1\r\n")
    other.expect(b"NOT_FOUND\r\n")


def test_touch_gives_the_job_its_whole_ttr_again(wire):
    wire.send(b"put 0 0 2 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    time.sleep(1.2)
    wire.send(b"touch 1\r\n")
    wire.expect(b"TOUCHED\r\n")
    assert wire.yaml(b"stats-job 1")["time-left"] == "1"  # 1.99… s truncated
    wire.send(b"reserve-with-timeout 0\r\n")  # a full second before the safety margin again
    wire.expect(b"TIMED_OUT\r\n")


# --------------------------------------------------------------------------- kick


def put_buried(wire, count: int, first_id: int) -> None:
    """Puts `count` jobs and buries them in id order (they must be the only ready ones)."""
    for job_id in range(first_id, first_id + count):
        wire.send(b"put 0 0 60 1\r\nr\r\nreserve\r\nbury %d 0\r\n" % job_id)
        wire.expect(b"INSERTED %d\r\nRESERVED %d 1\r\nr\r\nBURIED\r\n" % (job_id, job_id))


def test_kick_moves_buried_jobs_first_and_delayed_ones_only_when_none_is_buried(wire):
    put_buried(wire, 3, 1)
    wire.send(b"put 0 100 60 1\r\nd\r\n")
    wire.expect(b"INSERTED 4\r\n")
    wire.send(b"kick 5abc\r\n")  # strtoul: trailing text ignored
    wire.expect(b"KICKED 3\r\n")
    wire.send(b"kick -1\r\n")  # wraps to "everything"
    wire.expect(b"KICKED 1\r\n")
    wire.send(b"kick 10\r\n")
    wire.expect(b"KICKED 0\r\n")
    for job_id in (1, 2, 3, 4):
        stats = wire.yaml(b"stats-job %d" % job_id)
        assert (stats["state"], stats["kicks"]) == ("ready", "1")


def test_kick_takes_buried_jobs_oldest_first_and_truncates_its_bound_to_32_bits(wire):
    put_buried(wire, 2, 1)
    wire.send(b"kick 4294967297\r\n")
    wire.expect(b"KICKED 1\r\n")
    wire.send(b"peek-buried\r\n")
    wire.expect(b"FOUND 2 1\r\nr\r\n")
    wire.send(b"kick 4294967296\r\n")
    wire.expect(b"KICKED 0\r\n")
    wire.send(b"kick +1\r\n")
    wire.expect(b"KICKED 1\r\n")


def test_kick_with_a_worker_waiting(server):
    # 1.12 runs its queue after every job it kicks: the waiter gets the first job kicked (the
    # oldest buried), not the most urgent one (rules version 2; version 1 gave that one).
    producer, worker = server.connect(), server.connect()
    producer.send(b"use k\r\nput 50 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nreserve-job 1\r\n"
                  b"bury 1 50\r\nreserve-job 2\r\nbury 2 0\r\n")
    producer.expect(b"USING k\r\nINSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nBURIED\r\n"
                    b"RESERVED 2 1\r\nb\r\nBURIED\r\n")
    worker.send(b"watch k\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    producer.send(b"kick 2\r\n")
    producer.expect(b"KICKED 2\r\n")
    worker.expect(b"RESERVED 1 1\r\na\r\n")


def test_a_closed_connection_hands_its_jobs_to_a_waiting_worker_in_the_order_it_reserved_them(
        server):
    # 1.12 puts a closed connection's jobs back one at a time, in the order it reserved them,
    # and runs its queue after each: the waiter gets the job reserved first (3), not the most
    # urgent (2). Rules version 2; version 1 gave the most urgent.
    holder, worker = server.connect(), server.connect()
    holder.send(b"use c\r\nput 5 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nput 3 0 60 1\r\nc\r\n"
                b"reserve-job 3\r\nreserve-job 1\r\nreserve-job 2\r\n")
    holder.expect(b"USING c\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nRESERVED 3 1\r\nc\r\n"
                  b"RESERVED 1 1\r\na\r\nRESERVED 2 1\r\nb\r\n")
    worker.send(b"watch c\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    worker.expect_nothing(0.1)
    holder.close()
    worker.expect(b"RESERVED 3 1\r\nc\r\n")
    assert [state_of(worker, n) for n in (1, 2, 3)] == ["ready", "ready", "reserved"]


def test_a_touched_job_keeps_its_place_among_the_jobs_a_closed_connection_hands_back(server):
    # A touch gives a job a new deadline and nothing else: 1.12 leaves it where it was in the
    # connection's list of reserved jobs, so the waiter still gets the job reserved first (1).
    holder, worker = server.connect(), server.connect()
    holder.send(b"use c\r\nput 5 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nreserve-job 1\r\n"
                b"reserve-job 2\r\ntouch 1\r\n")
    holder.expect(b"USING c\r\nINSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\n"
                  b"RESERVED 2 1\r\nb\r\nTOUCHED\r\n")
    worker.send(b"watch c\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    worker.expect_nothing(0.1)
    holder.close()
    worker.expect(b"RESERVED 1 1\r\na\r\n")


def test_kick_takes_delayed_jobs_earliest_deadline_first(wire):
    wire.send(b"put 0 50 60 1\r\na\r\nput 0 30 60 1\r\nb\r\nput 0 40 60 1\r\nc\r\nkick 2\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nKICKED 2\r\n")
    assert [state_of(wire, n) for n in (1, 2, 3)] == ["delayed", "ready", "ready"]


@pytest.mark.parametrize("line", [b"kick abc", b"kick ", b"kick 99999999999999999999", b"kick -"])
def test_kick_without_a_number_is_a_bad_format(wire, line):
    wire.send(line + b"\r\n")
    wire.expect(b"BAD_FORMAT\r\n")


def test_kick_acts_on_the_used_tube_only_and_works_while_it_is_paused(wire):
    wire.send(b"use t\r\nput 0 100 60 1\r\nt\r\nuse default\r\nput 0 100 60 1\r\nd\r\n")
    wire.expect(b"USING t\r\nINSERTED 1\r\nUSING default\r\nINSERTED 2\r\n")
    wire.send(b"pause-tube default 100\r\nkick 10\r\n")
    wire.expect(b"PAUSED\r\nKICKED 1\r\n")
    assert [state_of(wire, n) for n in (1, 2)] == ["delayed", "ready"]


def test_kick_on_an_empty_tube_kicks_nothing(wire):
    wire.send(b"kick 1\r\n")
    wire.expect(b"KICKED 0\r\n")


# --------------------------------------------------------------------------- kick-job


def test_kick_job_moves_a_buried_job_once(wire):
    put_buried(wire, 1, 1)
    wire.send(b"kick-job 100\r\nkick-job 1\r\nkick-job 1\r\n")
    wire.expect(b"NOT_FOUND\r\nKICKED\r\nNOT_FOUND\r\n")
    stats = wire.yaml(b"stats-job 1")
    assert (stats["state"], stats["kicks"], stats["buries"]) == ("ready", "1", "1")


def test_kick_job_moves_a_delayed_job_and_keeps_its_delay(wire):
    wire.send(b"put 0 0 5 1\r\nx\r\nkick-job 1\r\nput 0 7 5 1\r\nz\r\nkick-job 2\r\nkick-job 2\r\n")
    wire.expect(b"INSERTED 1\r\nNOT_FOUND\r\nINSERTED 2\r\nKICKED\r\nNOT_FOUND\r\n")
    stats = wire.yaml(b"stats-job 2")
    assert (stats["state"], stats["delay"], stats["kicks"]) == ("ready", "7", "1")


def test_kick_job_works_in_any_tube_and_on_paused_tubes(wire):
    wire.send(b"use elsewhere\r\nput 0 100 60 1\r\ne\r\npause-tube elsewhere 100\r\nuse default\r\nkick-job 1\r\n")
    wire.expect(b"USING elsewhere\r\nINSERTED 1\r\nPAUSED\r\nUSING default\r\nKICKED\r\n")


def test_kick_job_of_a_reserved_job_is_not_found_even_for_its_holder(wire):
    wire.send(b"put 0 0 60 1\r\nx\r\nreserve\r\nkick-job 1\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\nNOT_FOUND\r\n")


# --------------------------------------------------------------------------- peeks


def test_every_peek_on_an_empty_server_is_not_found(wire):
    wire.send(b"peek 1\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\n")
    wire.expect(b"NOT_FOUND\r\n" * 4)


def test_peek_finds_a_job_in_any_state_and_tube_without_changing_it(server):
    holder, peeker = server.connect(), server.connect()
    holder.send(b"use hidden\r\nput 0 0 60 3\r\nabc\r\nreserve-job 1\r\n")
    holder.expect(b"USING hidden\r\nINSERTED 1\r\nRESERVED 1 3\r\nabc\r\n")
    peeker.send(b"peek 1\r\n")
    peeker.expect(b"FOUND 1 3\r\nabc\r\n")
    stats = peeker.yaml(b"stats-job 1")
    assert (stats["state"], stats["reserves"]) == ("reserved", "1")


def test_peek_ready_shows_the_most_urgent_ready_job_of_the_used_tube(wire):
    wire.send(b"put 9 0 60 1\r\na\r\nput 3 0 60 1\r\nb\r\nput 3 0 60 1\r\nc\r\nuse other\r\nput 0 0 60 1\r\no\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nUSING other\r\nINSERTED 4\r\n")
    wire.send(b"peek-ready\r\nuse default\r\npeek-ready\r\npeek-ready\r\n")
    wire.expect(b"FOUND 4 1\r\no\r\nUSING default\r\nFOUND 2 1\r\nb\r\nFOUND 2 1\r\nb\r\n")


def test_peek_ready_ignores_a_pause(wire):
    wire.send(b"put 10 0 60 1\r\nP\r\npause-tube default 100\r\npeek-ready\r\n")
    wire.expect(b"INSERTED 1\r\nPAUSED\r\nFOUND 1 1\r\nP\r\n")


def test_peek_delayed_shows_the_job_with_the_earliest_deadline(wire):
    wire.send(b"put 0 99 9 1\r\na\r\nput 0 5 9 1\r\nd\r\nput 0 3 9 1\r\ne\r\npeek-delayed\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nFOUND 3 1\r\ne\r\n")
    wire.send(b"delete 3\r\npeek-delayed\r\ndelete 2\r\ndelete 1\r\npeek-delayed\r\n")
    wire.expect(b"DELETED\r\nFOUND 2 1\r\nd\r\nDELETED\r\nDELETED\r\nNOT_FOUND\r\n")


def test_peek_buried_and_peek_delayed_look_at_the_used_tube_only(wire):
    put_buried(wire, 1, 1)
    wire.send(b"put 0 100 60 1\r\nd\r\nuse other\r\npeek-buried\r\npeek-delayed\r\npeek-ready\r\n")
    wire.expect(b"INSERTED 2\r\nUSING other\r\nNOT_FOUND\r\nNOT_FOUND\r\nNOT_FOUND\r\n")


# --------------------------------------------------------------------------- delayed to ready


def test_a_delayed_job_becomes_ready_when_its_delay_ends(wire):
    wire.send(b"put 0 1 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\n")
    tube = wire.yaml(b"stats-tube default")
    assert (tube["current-jobs-ready"], tube["current-jobs-delayed"], tube["total-jobs"]) == ("0", "1", "1")
    time.sleep(1.1)
    tube = wire.yaml(b"stats-tube default")
    assert (tube["current-jobs-ready"], tube["current-jobs-delayed"], tube["total-jobs"]) == ("1", "0", "1")
    wire.send(b"reserve-with-timeout 0\r\n")
    wire.expect(b"RESERVED 1 1\r\nx\r\n")


def test_a_waiting_reserve_gets_a_delayed_job_when_its_delay_ends(wire):
    wire.send(b"put 0 1 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\n")
    start = time.monotonic()
    wire.send(b"reserve\r\n")
    wire.expect(b"RESERVED 1 1\r\nx\r\n", timeout=3)
    assert 0.9 <= time.monotonic() - start < 3
