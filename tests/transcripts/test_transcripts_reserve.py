"""Transcripts of reserving: reserve, reserve-with-timeout, reserve-job, DEADLINE_SOON, TTR expiry,
and what closing or half-closing a connection does to its jobs (§1.4, §4.3, §4.4, §4.18, §5, T6–T8, T13, T15).

Method: several connections to one fresh server; timings are asserted only as lower bounds or
generous upper bounds. beanstalkd 1.12 sometimes fails to expire a TTR while its holder is silent
(§13), so a test that wants the reference answer pokes the server with a harmless command after
the deadline -- on the holder's own connection: measured, a command on another connection left
1.12 stuck in about 1 run of 3, one on the holder's connection fixed it every time (32 of 32).
"""

import time

import pytest

POKE = b"list-tube-used\r\n"


def elapsed_s(start: float) -> float:
    return time.monotonic() - start


def poke(holder) -> None:
    """A harmless command on the holder's connection re-arms its timer in beanstalkd 1.12 (§13)."""
    holder.send(POKE)
    holder.expect(b"USING default\r\n")


# --------------------------------------------------------------------------- which job


def test_reserve_takes_the_lowest_priority_and_then_the_lowest_id(wire):
    wire.send(b"put 5 0 60 1\r\na\r\nput 1 0 60 1\r\nb\r\nput 1 0 60 1\r\nc\r\nput 9 0 60 1\r\nd\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\n")
    wire.send(b"reserve\r\nreserve\r\nreserve\r\nreserve\r\n")
    wire.expect(b"RESERVED 2 1\r\nb\r\nRESERVED 3 1\r\nc\r\nRESERVED 1 1\r\na\r\nRESERVED 4 1\r\nd\r\n")


def test_reserve_takes_the_most_urgent_job_across_all_watched_tubes(wire):
    wire.send(b"use abc\r\nput 999999 0 60 0\r\n\r\nuse def\r\nput 99 0 60 0\r\n\r\n")
    wire.expect(b"USING abc\r\nINSERTED 1\r\nUSING def\r\nINSERTED 2\r\n")
    wire.send(b"watch abc\r\nwatch def\r\nreserve\r\n")
    wire.expect(b"WATCHING 2\r\nWATCHING 3\r\nRESERVED 2 0\r\n\r\n")


def test_reserve_never_takes_a_job_from_a_tube_it_does_not_watch(wire):
    wire.send(b"use other\r\nput 0 0 60 1\r\no\r\nreserve-with-timeout 0\r\n")
    wire.expect(b"USING other\r\nINSERTED 1\r\nTIMED_OUT\r\n")


def test_reserve_does_not_take_delayed_or_buried_jobs(wire):
    wire.send(b"put 0 100 60 1\r\nd\r\nput 0 0 60 1\r\nb\r\nreserve\r\nbury 2 0\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 2 1\r\nb\r\nBURIED\r\n")
    wire.send(b"reserve-with-timeout 0\r\n")
    wire.expect(b"TIMED_OUT\r\n")


def test_a_reserved_job_counts_a_reservation_and_has_its_ttr_left(wire):
    wire.send(b"put 0 0 100 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    stats = wire.yaml(b"stats-job 1")
    assert (stats["state"], stats["reserves"], stats["time-left"]) == ("reserved", "1", "99")
    tube = wire.yaml(b"stats-tube default")
    assert (tube["current-jobs-reserved"], tube["current-jobs-ready"]) == ("1", "0")


# --------------------------------------------------------------------------- reserve-with-timeout


def test_reserve_with_timeout_zero_answers_at_once(wire):
    start = time.monotonic()
    wire.send(b"reserve-with-timeout 0\r\n")
    wire.expect(b"TIMED_OUT\r\n")
    assert elapsed_s(start) < 0.5


@pytest.mark.parametrize("argument", [b"abc", b"", b"  0", b"0abc"])
def test_reserve_with_timeout_reads_a_non_number_as_zero(wire, argument):
    """1.12 parses the timeout with strtol and checks only for overflow (1.13 is stricter)."""
    start = time.monotonic()
    wire.send(b"reserve-with-timeout " + argument + b"\r\n")
    wire.expect(b"TIMED_OUT\r\n")
    assert elapsed_s(start) < 0.5


def test_reserve_with_timeout_ignores_text_after_the_number(wire):
    start = time.monotonic()
    wire.send(b"reserve-with-timeout 1xyz\r\n")
    wire.expect(b"TIMED_OUT\r\n", timeout=3)
    assert elapsed_s(start) >= 0.9


def test_reserve_with_timeout_of_an_overflowing_number_is_a_bad_format(wire):
    wire.send(b"reserve-with-timeout 99999999999999999999\r\n")
    wire.expect(b"BAD_FORMAT\r\n")


def test_reserve_with_a_negative_timeout_after_int_truncation_waits_forever(server):
    arguments = [b"-1", b"4294967295", b"2147483648"]
    workers = [server.connect() for _ in arguments]
    for worker, argument in zip(workers, arguments):
        worker.send(b"reserve-with-timeout " + argument + b"\r\n")
    time.sleep(1.1)
    for worker in workers:
        worker.expect_nothing(0.05)
    producer = server.connect()
    producer.send(b"put 0 0 60 1\r\nA\r\n" * 3)
    producer.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    replies = set()
    for worker in workers:
        replies.add(worker.read_line())
        worker.expect(b"A\r\n")
    assert replies == {b"RESERVED 1 1", b"RESERVED 2 1", b"RESERVED 3 1"}


def test_reserve_with_timeout_waits_about_its_timeout_while_others_watch(server):
    watcher, worker = server.connect(), server.connect()
    watcher.send(b"watch default\r\n")
    watcher.expect(b"WATCHING 1\r\n")
    start = time.monotonic()
    worker.send(b"reserve-with-timeout 1\r\n")
    worker.expect(b"TIMED_OUT\r\n", timeout=3)
    assert 0.9 <= elapsed_s(start) < 3


def test_a_job_put_while_waiting_is_reserved_before_the_timeout(server):
    worker, producer = server.connect(), server.connect()
    start = time.monotonic()
    worker.send(b"reserve-with-timeout 4\r\n")
    time.sleep(0.3)
    producer.send(b"put 0 0 60 2\r\nok\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.expect(b"RESERVED 1 2\r\nok\r\n")
    assert elapsed_s(start) < 2


def test_a_waiter_is_woken_only_by_a_job_in_a_tube_it_watches(server):
    worker, producer = server.connect(), server.connect()
    worker.send(b"watch a\r\nwatch b\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 2\r\n")
    producer.send(b"put 0 0 60 1\r\nd\r\nuse c\r\nput 0 0 60 1\r\nc\r\n")
    producer.expect(b"INSERTED 1\r\nUSING c\r\nINSERTED 2\r\n")
    worker.expect_nothing(0.3)
    producer.send(b"use b\r\nput 0 0 60 1\r\nb\r\n")
    producer.expect(b"USING b\r\nINSERTED 3\r\n")
    worker.expect(b"RESERVED 3 1\r\nb\r\n")


def test_every_waiter_gets_exactly_one_of_as_many_jobs(server):
    """T13: 1.12 does not serve waiters in strict FIFO order, so only the sets are compared."""
    waiters = [server.connect() for _ in range(4)]
    for waiter in waiters:
        waiter.send(b"watch wq\r\nreserve\r\n")
        waiter.expect(b"WATCHING 2\r\n")
    producer = server.connect()
    producer.send(b"use wq\r\n" + b"".join(b"put 0 0 60 1\r\n%d\r\n" % n for n in range(4)))
    producer.expect(b"USING wq\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\n")
    got = set()
    for waiter in waiters:
        line = waiter.read_line()
        assert line.startswith(b"RESERVED "), line
        job_id = int(line.split()[1])
        waiter.expect(b"%d\r\n" % (job_id - 1))
        got.add(job_id)
    assert got == {1, 2, 3, 4}


def test_a_waiting_connection_is_counted_as_waiting_and_as_a_worker(server):
    worker, observer = server.connect(), server.connect()
    worker.send(b"reserve\r\n")
    time.sleep(0.2)
    tube = observer.yaml(b"stats-tube default")
    stats = observer.yaml(b"stats")
    assert (tube["current-waiting"], stats["current-waiting"], stats["current-workers"]) == ("1", "1", "1")
    observer.send(b"put 0 0 60 0\r\n\r\n")
    observer.expect(b"INSERTED 1\r\n")
    worker.expect(b"RESERVED 1 0\r\n\r\n")
    stats = observer.yaml(b"stats")
    assert (stats["current-waiting"], stats["current-workers"]) == ("0", "1")


# --------------------------------------------------------------------------- §1.4 blocking input


def test_commands_pipelined_behind_a_blocking_reserve_wait_for_its_reply(server):
    worker, producer = server.connect(), server.connect()
    worker.send(b"reserve\r\nlist-tube-used\r\n")
    worker.expect_nothing()
    producer.send(b"put 0 0 60 1\r\nx\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.expect(b"RESERVED 1 1\r\nx\r\nUSING default\r\n")


def test_pipelined_blocking_reserves_that_run_the_queue_dry_wait_in_order(server):
    """A worker pipelines blocking reserves and a put: the reserves the queue cannot serve wait
    one after another for the next jobs, and the put behind them runs only after they return
    (BeanRaft pipelines such reserves as reserves that never wait and owes the misses)."""
    worker, producer = server.connect(), server.connect()
    producer.send(b"put 0 0 60 1\r\nx\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.send(b"reserve-with-timeout 9\r\nreserve\r\nreserve-with-timeout 9\r\nput 0 0 60 1\r\nz\r\n")
    worker.expect(b"RESERVED 1 1\r\nx\r\n")
    worker.expect_nothing(0.3)
    producer.send(b"put 0 0 60 1\r\ny\r\n")
    producer.expect(b"INSERTED 2\r\n")
    worker.expect(b"RESERVED 2 1\r\ny\r\n")
    worker.expect_nothing(0.2)
    producer.send(b"put 0 0 60 1\r\nw\r\n")
    producer.expect(b"INSERTED 3\r\n")
    worker.expect(b"RESERVED 3 1\r\nw\r\nINSERTED 4\r\n")


def test_half_closing_a_waiting_reserve_times_it_out_and_closes_the_connection(server):
    worker = server.connect()
    worker.send(b"watch empty\r\nignore default\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    worker.send(b"reserve\r\n")
    worker.expect_nothing(0.2)
    worker.shutdown_write()
    assert worker.recv_until_closed() == b"TIMED_OUT\r\n"


def test_half_closing_a_waiting_reserve_with_timeout_also_times_it_out(server):
    worker = server.connect()
    worker.send(b"reserve-with-timeout 100\r\n")
    worker.expect_nothing(0.2)
    worker.shutdown_write()
    assert worker.recv_until_closed() == b"TIMED_OUT\r\n"


def test_a_half_closed_waiter_runs_the_commands_it_sent_behind_its_reserve(server):
    # 1.12 answers the waiting reserve TIMED_OUT and goes on with the commands behind it (the
    # second reserve waits and times out again) before it closes; BeanRaft does the same from
    # rules version 3 (END_WAIT): the delete is run, and job 1 is gone.
    wire = server.connect()
    wire.send(b"put 0 0 60 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    wire.send(b"reserve-with-timeout 5\r\ndelete 1\r\nreserve\r\nlist-tube-used\r\n")
    wire.expect_nothing(0.2)
    wire.shutdown_write()
    assert wire.recv_until_closed(timeout=4) == \
        b"TIMED_OUT\r\nDELETED\r\nTIMED_OUT\r\nUSING default\r\n"
    other = server.connect()
    other.send(b"peek 1\r\n")
    other.expect(b"NOT_FOUND\r\n")


def test_a_half_closed_waiter_reserves_the_job_it_put_behind_its_reserve(server):
    wire = server.connect()
    wire.send(b"watch t\r\nuse t\r\nignore default\r\n")
    wire.expect(b"WATCHING 2\r\nUSING t\r\nWATCHING 1\r\n")
    wire.send(b"reserve\r\nput 3 0 60 2\r\nhi\r\nreserve\r\nstats-tube t\r\n")
    wire.expect_nothing(0.2)
    wire.shutdown_write()
    replies = wire.recv_until_closed(timeout=4)
    head, _, stats = replies.partition(b"OK ")
    assert head == b"TIMED_OUT\r\nINSERTED 1\r\nRESERVED 1 2\r\nhi\r\n"
    assert b"current-jobs-reserved: 1\n" in stats and b"current-waiting: 0\n" in stats
    other = server.connect()  # the session's close gave its job back
    other.send(b"stats-job 1\r\n")
    size = int(other.read_line().split()[1])
    assert b"state: ready\n" in other.read_exactly(size + 2)


# --------------------------------------------------------------------------- DEADLINE_SOON, TTR


def test_with_ttr_one_a_second_reserve_is_deadline_soon_at_once(wire):
    wire.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    start = time.monotonic()
    wire.send(b"reserve\r\n")
    wire.expect(b"DEADLINE_SOON\r\n")
    wire.send(b"reserve-with-timeout 1\r\n")
    wire.expect(b"DEADLINE_SOON\r\n")
    assert elapsed_s(start) < 0.5
    assert wire.yaml(b"stats-job 1")["state"] == "reserved"
    wire.send(b"release 1 0 0\r\n")
    wire.expect(b"RELEASED\r\n")
    assert wire.yaml(b"stats-job 1")["state"] == "ready"


def test_with_ttr_two_a_second_reserve_is_deadline_soon_one_second_before_the_deadline(wire):
    wire.send(b"put 0 0 2 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    start = time.monotonic()
    wire.send(b"reserve\r\n")
    wire.expect(b"DEADLINE_SOON\r\n", timeout=3)
    assert 0.8 <= elapsed_s(start) < 1.9
    # Inside the safety margin every reserve answers at once, whatever its timeout.
    start = time.monotonic()
    wire.send(b"reserve-with-timeout 0\r\nreserve-with-timeout 10\r\n")
    wire.expect(b"DEADLINE_SOON\r\nDEADLINE_SOON\r\n")
    assert elapsed_s(start) < 0.5


def test_a_ready_job_beats_deadline_soon(server):
    holder, producer = server.connect(), server.connect()
    holder.send(b"put 0 0 1 1\r\ny\r\nreserve\r\nreserve-with-timeout 0\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\ny\r\nDEADLINE_SOON\r\n")
    producer.send(b"put 0 0 1 1\r\nz\r\n")
    producer.expect(b"INSERTED 2\r\n")
    holder.send(b"reserve-with-timeout 0\r\n")
    holder.expect(b"RESERVED 2 1\r\nz\r\n")


def test_inside_the_margin_a_ready_job_in_a_paused_tube_and_timeout_zero(server):
    # The paused tube's job skips the first DEADLINE_SOON check (1.12 ignores pause there) and
    # no job can be reserved. 1.12's wait then ticks at once and tests the margin before the
    # timeout: DEADLINE_SOON, for timeout 0 too (rules version 2; version 1 answered TIMED_OUT).
    holder, producer = server.connect(), server.connect()
    holder.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    producer.send(b"use p\r\nput 0 0 60 1\r\ny\r\npause-tube p 100\r\n")
    producer.expect(b"USING p\r\nINSERTED 2\r\nPAUSED\r\n")
    holder.send(b"watch p\r\nreserve-with-timeout 0\r\nreserve-with-timeout 5\r\n")
    holder.expect(b"WATCHING 2\r\nDEADLINE_SOON\r\nDEADLINE_SOON\r\n")


def test_a_long_wait_is_cut_short_by_deadline_soon_and_touch_restarts_the_ttr(wire):
    wire.send(b"put 0 0 3 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    reserved_at = time.monotonic()
    wire.send(b"reserve-with-timeout 1\r\n")
    wire.expect(b"TIMED_OUT\r\n", timeout=3)
    assert elapsed_s(reserved_at) >= 0.9
    wire.send(b"reserve-with-timeout 5\r\n")  # the safety margin starts 2 s after the reserve
    wire.expect(b"DEADLINE_SOON\r\n", timeout=3)
    assert 1.8 <= elapsed_s(reserved_at) < 2.9
    wire.send(b"touch 1\r\n")
    wire.expect(b"TOUCHED\r\n")
    stats = wire.yaml(b"stats-job 1")
    assert (stats["state"], stats["time-left"], stats["timeouts"]) == ("reserved", "2", "0")
    wire.send(b"reserve-with-timeout 0\r\n")  # no longer within a second of the deadline
    wire.expect(b"TIMED_OUT\r\n")


def test_a_job_whose_silent_holder_misses_the_ttr_goes_back_to_ready(server):
    holder, other = server.connect(), server.connect()
    holder.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    time.sleep(1.3)
    poke(holder)
    stats = other.yaml(b"stats-job 1")
    assert (stats["state"], stats["reserves"], stats["timeouts"], stats["releases"]) == ("ready", "1", "1", "0")
    assert other.yaml(b"stats")["job-timeouts"] == "1"
    other.send(b"reserve-with-timeout 0\r\n")
    other.expect(b"RESERVED 1 1\r\nx\r\n")
    holder.send(b"delete 1\r\n")  # now reserved by the other connection
    holder.expect(b"NOT_FOUND\r\n")


def test_the_former_holder_can_still_delete_a_job_whose_ttr_expired(server):
    holder = server.connect()
    holder.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    time.sleep(1.3)
    poke(holder)
    holder.send(b"touch 1\r\n")
    holder.expect(b"NOT_FOUND\r\n")
    holder.send(b"delete 1\r\n")
    holder.expect(b"DELETED\r\n")


def test_a_waiting_reserve_gets_the_job_when_its_holder_misses_the_ttr(server, request):
    if server.kind == "beanstalkd":
        # Measured: 1.12 kept the job reserved in about 1 run of 4 (§13); the poked variant
        # below is the deterministic reference answer.
        request.applymarker(pytest.mark.xfail(reason="beanstalkd 1.12 can lose a TTR expiry (§13)",
                                              strict=False))
    holder, waiter = server.connect(), server.connect()
    holder.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    start = time.monotonic()
    waiter.send(b"reserve-with-timeout 4\r\n")
    waiter.expect(b"RESERVED 1 1\r\nx\r\n", timeout=3)
    assert 0.7 <= elapsed_s(start) < 3


def test_a_waiting_reserve_gets_the_job_once_the_silent_holder_is_poked_after_the_ttr(server):
    holder, waiter = server.connect(), server.connect()
    holder.send(b"put 0 0 1 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    waiter.send(b"reserve-with-timeout 4\r\n")
    time.sleep(1.3)
    poke(holder)
    waiter.expect(b"RESERVED 1 1\r\nx\r\n")
    assert waiter.yaml(b"stats-job 1")["timeouts"] == "1"


# --------------------------------------------------------------------------- reserve-job


def test_reserve_job_reserves_a_ready_job_out_of_order(wire):
    wire.send(b"put 0 0 60 1\r\na\r\nput 9 0 60 1\r\nb\r\nreserve-job 2\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 2 1\r\nb\r\n")
    wire.send(b"reserve-job 3\r\nrelease 1 0 0\r\nrelease 2 0 0\r\n")
    wire.expect(b"NOT_FOUND\r\nNOT_FOUND\r\nRELEASED\r\n")


def test_reserve_job_of_a_job_already_reserved_even_by_itself_is_not_found(server):
    holder, other = server.connect(), server.connect()
    holder.send(b"put 0 0 60 1\r\nq\r\nreserve-job 1\r\nreserve-job 1\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nq\r\nNOT_FOUND\r\n")
    other.send(b"reserve-job 1\r\n")
    other.expect(b"NOT_FOUND\r\n")


def test_reserve_job_takes_a_delayed_job_and_its_release_makes_it_ready(wire):
    wire.send(b"put 0 100 60 1\r\nd\r\nreserve-job 1\r\nrelease 1 0 0\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nd\r\nRELEASED\r\n")
    stats = wire.yaml(b"stats-job 1")
    assert (stats["state"], stats["reserves"], stats["releases"]) == ("ready", "1", "1")


def test_reserve_job_takes_buried_jobs_and_their_release_makes_them_ready(wire):
    wire.send(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nreserve\r\nbury 1 0\r\nreserve\r\nbury 2 0\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nBURIED\r\nRESERVED 2 1\r\nb\r\nBURIED\r\n")
    wire.send(b"reserve-job 2\r\nreserve-job 1\r\nrelease 2 0 0\r\nrelease 1 0 0\r\n")
    wire.expect(b"RESERVED 2 1\r\nb\r\nRESERVED 1 1\r\na\r\nRELEASED\r\nRELEASED\r\n")
    assert wire.yaml(b"stats-job 1")["state"] == "ready"
    assert wire.yaml(b"stats-job 2")["state"] == "ready"
    assert wire.yaml(b"stats-tube default")["current-jobs-buried"] == "0"


def test_reserve_job_ignores_the_watch_list_and_pauses(wire):
    wire.send(b"use elsewhere\r\nput 0 0 60 1\r\ne\r\npause-tube elsewhere 100\r\nreserve-job 1\r\n")
    wire.expect(b"USING elsewhere\r\nINSERTED 1\r\nPAUSED\r\nRESERVED 1 1\r\ne\r\n")


def test_reserve_job_of_a_ttr_one_job_gives_deadline_soon_and_expires_to_ready(server):
    holder, other = server.connect(), server.connect()
    holder.send(b"put 0 100 1 1\r\nd\r\nreserve-job 1\r\nreserve-with-timeout 1\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nd\r\nDEADLINE_SOON\r\n")
    assert other.yaml(b"stats-job 1")["state"] == "reserved"
    time.sleep(1.3)
    poke(holder)
    stats = other.yaml(b"stats-job 1")
    assert (stats["state"], stats["timeouts"]) == ("ready", "1")


# --------------------------------------------------------------------------- connections


def test_only_the_holder_may_act_on_a_reserved_job(server):
    holder, other = server.connect(), server.connect()
    holder.send(b"put 0 0 60 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    for command in (b"delete 1", b"release 1 0 0", b"bury 1 0", b"touch 1", b"reserve-job 1", b"kick-job 1"):
        other.send(command + b"\r\n")
        other.expect(b"NOT_FOUND\r\n")
    other.send(b"peek 1\r\n")  # peeking is allowed
    other.expect(b"FOUND 1 1\r\nx\r\n")
    holder.send(b"touch 1\r\nrelease 1 7 0\r\ntouch 1\r\n")
    holder.expect(b"TOUCHED\r\nRELEASED\r\nNOT_FOUND\r\n")
    assert other.yaml(b"stats-job 1")["pri"] == "7"


@pytest.mark.parametrize("how", ["quit", "close", "quit-prefix"])
def test_ending_a_connection_releases_its_reserved_jobs_to_ready(server, how):
    holder, other = server.connect(), server.connect()
    holder.send(b"put 3 0 100 1\r\nx\r\nput 4 0 100 1\r\ny\r\nreserve\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\nx\r\nRESERVED 2 1\r\ny\r\n")
    if how == "close":
        holder.close()
    else:
        holder.send(b"quit\r\n" if how == "quit" else b"quitting\r\n")
        assert holder.recv_until_closed() == b""
    time.sleep(0.2)
    for job_id, pri in ((1, "3"), (2, "4")):
        stats = other.yaml(b"stats-job %d" % job_id)
        assert (stats["state"], stats["pri"], stats["reserves"], stats["timeouts"], stats["releases"]) == (
            "ready", pri, "1", "0", "0")
    other.send(b"reserve-with-timeout 1\r\n")
    other.expect(b"RESERVED 1 1\r\nx\r\n")


def test_a_waiting_reserve_gets_the_jobs_a_closing_connection_held(server):
    holder, waiter = server.connect(), server.connect()
    holder.send(b"put 0 0 100 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    waiter.send(b"reserve-with-timeout 3\r\n")
    waiter.expect_nothing(0.2)
    start = time.monotonic()
    holder.close()
    waiter.expect(b"RESERVED 1 1\r\nx\r\n")
    assert elapsed_s(start) < 1
