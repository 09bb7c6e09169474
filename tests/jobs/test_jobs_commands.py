"""Each command of the job state machine behaves like beanstalkd 1.12 (reference §4, §12).

Method: the verified transcripts of the reference are replayed as commands on a Harness, whose
clock is just a number, so timed behaviour (TTR, delays, pauses) needs no sleeping.
"""

from __future__ import annotations

from jobs_harness import S, Harness

from beanraft.jobs.commands import Op


def test_t1_ttr_zero_becomes_one_second_and_stats_show_the_1_12_fields_in_order():
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.PUT, 0, 0, 0, b"hello") == ("INSERTED", 1)
    assert h.m.stats_job(1, h.now) == [
        ("id", 1), ("tube", "default"), ("state", "ready"), ("pri", 0), ("age", 0),
        ("delay", 0), ("ttr", 1), ("time-left", 0), ("file", 0), ("reserves", 0),
        ("timeouts", 0), ("releases", 0), ("buries", 0), ("kicks", 0)]
    assert h.m.stats_tube("default", h.now) == [
        ("name", "default"), ("current-jobs-urgent", 1), ("current-jobs-ready", 1),
        ("current-jobs-reserved", 0), ("current-jobs-delayed", 0), ("current-jobs-buried", 0),
        ("total-jobs", 1), ("current-using", 1), ("current-watching", 1),
        ("current-waiting", 0), ("cmd-delete", 0), ("cmd-pause-tube", 0), ("pause", 0),
        ("pause-time-left", 0)]
    assert h.cmd(a, Op.USE, "foo") == ("USING", "foo")
    assert h.cmd(a, Op.WATCH, "bar") == ("WATCHING", 2)
    assert h.m.list_tubes() == ["default", "foo", "bar"]
    assert h.m.list_tubes_watched(a) == ["default", "bar"]
    assert h.m.list_tube_used(a) == "foo"
    assert h.m.peek_ready(a) == ("NOT_FOUND",)


def test_put_with_a_delay_makes_a_delayed_job_and_counts_total_jobs_globally_and_per_tube():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "t")
    job = h.put(a, pri=2000, delay=5, ttr=3)
    assert h.stats_job(job)["state"] == "delayed"
    assert h.stats_job(job)["time-left"] == 5
    assert h.stats_tube("t")["total-jobs"] == 1
    assert h.stats_tube("t")["current-jobs-urgent"] == 0
    assert h.m.stats_global()["total-jobs"] == 1
    assert h.m.peek_delayed(a) == ("FOUND", job, b"x")


def test_ready_jobs_come_out_by_priority_then_id_and_a_released_job_goes_back_in_front():
    # T8: three jobs of equal priority; the released job 1 is reserved again before 2 and 3.
    h = Harness()
    a, b = h.open(), h.open()
    assert [h.put(a, body=str(n).encode(), pri=100) for n in (1, 2, 3)] == [1, 2, 3]
    assert h.cmd(b, Op.RESERVE, -1) == ("RESERVED", 1, b"1")
    assert h.cmd(b, Op.RELEASE, 1, 100, 0) == ("RELEASED",)
    assert h.cmd(b, Op.RESERVE, -1) == ("RESERVED", 1, b"1")
    assert h.cmd(b, Op.RELEASE, 1, 5, 3 * S) == ("RELEASED",)
    h.now += S // 10
    stats = h.stats_job(1)
    assert (stats["state"], stats["pri"], stats["delay"], stats["time-left"]) == \
        ("delayed", 5, 3, 2)
    assert (stats["reserves"], stats["releases"]) == (2, 2)


def test_reserve_picks_the_most_urgent_job_across_all_watched_tubes():
    # testserv multi_tube: pri 999999 in abc, pri 99 in def; a worker watching both gets def's.
    h = Harness()
    a, w = h.open(), h.open()
    h.cmd(a, Op.USE, "abc")
    h.put(a, pri=999999)
    h.cmd(a, Op.USE, "def")
    h.put(a, pri=99, body=b"")
    h.cmd(w, Op.WATCH, "abc")
    h.cmd(w, Op.WATCH, "def")
    assert h.cmd(w, Op.RESERVE, 0) == ("RESERVED", 2, b"")


def test_reserve_with_timeout_zero_on_an_empty_tube_times_out_at_once():
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.RESERVE, 0) == ("TIMED_OUT",)
    assert not h.m.is_waiting(a)


def test_reserve_waits_and_the_next_put_hands_the_job_to_the_waiter_as_an_event():
    h = Harness()
    a, b = h.open(), h.open()
    assert h.cmd(a, Op.RESERVE, -1) == ("WAITING",)
    assert h.m.is_waiting(a)
    assert h.stats_tube("default")["current-waiting"] == 1
    assert h.m.stats_global()["current-waiting"] == 1
    replies, events = h.batch([(Op.PUT, b, h.next_seq(b), 0, 0, S, b"A")])
    assert replies == [("INSERTED", 1)]
    assert events == [(a, ("RESERVED", 1, b"A"))]
    assert h.stats_job(1)["state"] == "reserved"
    assert not h.m.is_waiting(a)


def test_t7_a_second_reserve_while_holding_a_job_answers_deadline_soon_inside_the_margin():
    h = Harness()
    a, b = h.open(), h.open()
    h.put(a, ttr=2)
    assert h.cmd(a, Op.RESERVE, -1) == ("RESERVED", 1, b"x")
    assert h.cmd(a, Op.RESERVE, -1) == ("WAITING",)
    assert h.m.next_deadline_ns() == h.now + S  # deadline - 1 s
    assert h.advance(ns=S - 1) == []
    assert h.advance(ns=1) == [(a, ("DEADLINE_SOON",))]
    assert h.cmd(a, Op.RESERVE, 0) == ("DEADLINE_SOON",)
    assert h.cmd(a, Op.RESERVE, 10 * S) == ("DEADLINE_SOON",)
    h.advance(1.1)
    stats = h.stats_job(1)
    assert (stats["state"], stats["age"], stats["ttr"], stats["reserves"], stats["timeouts"]) == \
        ("ready", 2, 2, 1, 1)
    assert h.m.stats_global()["job-timeouts"] == 1
    # T7b: the former holder may still delete the job once its TTR has expired.
    assert h.cmd(a, Op.DELETE, 1) == ("DELETED",)
    h.put(a, body=b"y", ttr=1)
    assert h.cmd(a, Op.RESERVE, -1) == ("RESERVED", 2, b"y")
    assert h.cmd(a, Op.RESERVE, 0) == ("DEADLINE_SOON",)
    h.put(b, body=b"z", ttr=1)
    assert h.cmd(a, Op.RESERVE, 0) == ("RESERVED", 3, b"z")  # a ready job beats DEADLINE_SOON


def test_t7_a_wait_while_holding_a_ttr5_job_times_out_then_ends_at_the_safety_margin():
    h = Harness()
    a = h.open()
    h.put(a, ttr=5)
    h.cmd(a, Op.RESERVE, -1)
    assert h.cmd(a, Op.RESERVE, 2 * S) == ("WAITING",)
    assert h.advance(2) == [(a, ("TIMED_OUT",))]
    h.advance(0.3)
    assert h.cmd(a, Op.RESERVE, 5 * S) == ("WAITING",)
    assert h.advance(1.7) == [(a, ("DEADLINE_SOON",))]
    assert h.cmd(a, Op.TOUCH, 1) == ("TOUCHED",)
    assert h.stats_job(1)["time-left"] == 5
    h.now += S // 2
    assert h.stats_job(1)["time-left"] == 4


def test_t7c_other_sessions_cannot_touch_a_reservation_and_close_releases_it():
    h = Harness()
    a, b = h.open(), h.open()
    h.put(a)
    h.cmd(a, Op.RESERVE, -1)
    for op, args in [(Op.DELETE, (1,)), (Op.RELEASE, (1, 0, 0)), (Op.BURY, (1, 0)),
                     (Op.TOUCH, (1,)), (Op.RESERVE_JOB, (1,)), (Op.KICK_JOB, (1,))]:
        assert h.cmd(b, op, *args) == ("NOT_FOUND",), op
    assert h.cmd(a, Op.TOUCH, 1) == ("TOUCHED",)
    assert h.cmd(a, Op.RELEASE, 1, 7, 0) == ("RELEASED",)
    assert h.cmd(a, Op.TOUCH, 1) == ("NOT_FOUND",)
    job = h.put(b, ttr=100)
    assert h.cmd(a, Op.RESERVE_JOB, job) == ("RESERVED", job, b"x")
    assert h.cmd(a, Op.CLOSE) == ("OK",)
    stats = h.stats_job(job)
    assert (stats["state"], stats["reserves"], stats["timeouts"], stats["releases"]) == \
        ("ready", 1, 0, 0)


def test_close_hands_released_jobs_to_a_waiting_session_at_once():
    # testserv close_releases_job
    h = Harness()
    producer, consumer = h.open(), h.open()
    h.put(producer, ttr=100)
    h.cmd(consumer, Op.RESERVE, -1)
    assert h.cmd(producer, Op.RESERVE, S) == ("WAITING",)
    replies, events = h.batch([(Op.CLOSE, consumer, h.next_seq(consumer))])
    assert replies == [("OK",)]
    assert events == [(producer, ("RESERVED", 1, b"x"))]


def test_closing_a_waiting_session_answers_timed_out():
    # T8: a half-closed waiter gets TIMED_OUT.
    h = Harness()
    c = h.open()
    h.cmd(c, Op.WATCH, "empty")
    assert h.cmd(c, Op.RESERVE, -1) == ("WAITING",)
    assert h.cmd(c, Op.CLOSE) == ("TIMED_OUT",)
    assert h.m.stats_global()["current-waiting"] == 0
    assert h.m.list_tubes() == ["default"]


def test_waiting_sessions_are_served_oldest_first():
    # A deliberate deviation from T13 (beanstalkd's rotation served W0, W1, W3, W2).
    h = Harness()
    producer = h.open()
    waiters = [h.open() for _ in range(4)]
    for w in waiters:
        h.cmd(w, Op.RESERVE, -1)
    _, events = h.batch([(Op.PUT, producer, h.next_seq(producer), 0, 0, S, b"j")] * 1 +
                        [(Op.PUT, producer, 0, 0, 0, S, b"j")] * 3)
    assert events == [(w, ("RESERVED", i, b"j")) for i, w in enumerate(waiters, start=1)]


def test_reserve_job_takes_any_unreserved_job_and_release_sends_it_to_ready():
    # testserv reserve_job_ready / _delayed / _buried / _already_reserved
    h = Harness()
    a = h.open()
    h.put(a)
    delayed = h.put(a, delay=100)
    assert h.cmd(a, Op.RESERVE_JOB, 99) == ("NOT_FOUND",)
    assert h.cmd(a, Op.RESERVE_JOB, delayed) == ("RESERVED", delayed, b"x")
    assert h.cmd(a, Op.RESERVE_JOB, delayed) == ("NOT_FOUND",)
    assert h.cmd(a, Op.RELEASE, 1, 0, 0) == ("NOT_FOUND",)
    assert h.cmd(a, Op.RELEASE, delayed, 0, 0) == ("RELEASED",)
    assert h.stats_job(delayed)["state"] == "ready"
    h.cmd(a, Op.RESERVE_JOB, 1)
    h.cmd(a, Op.BURY, 1, 0)
    assert h.cmd(a, Op.RESERVE_JOB, 1) == ("RESERVED", 1, b"x")
    assert h.cmd(a, Op.RELEASE, 1, 0, 0) == ("RELEASED",)
    assert h.stats_job(1)["state"] == "ready"


def test_reserve_job_ignores_pause_and_a_reserved_delayed_job_expires_to_ready():
    # T9 and testserv reserve_job_ttr_deadline_soon
    h = Harness()
    a = h.open()
    job = h.put(a, delay=50, ttr=1)
    h.cmd(a, Op.PAUSE_TUBE, "default", 100 * S)
    assert h.cmd(a, Op.RESERVE_JOB, job) == ("RESERVED", job, b"x")
    assert h.cmd(a, Op.RESERVE, S) == ("DEADLINE_SOON",)
    h.advance(ns=S + 1)
    assert h.stats_job(job)["state"] == "ready"


def test_delete_finds_ready_buried_and_delayed_jobs_and_counts_successes_per_tube():
    # T17 and testserv stats_tube
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "tubea")
    ready, delayed = h.put(a), h.put(a, delay=50)
    assert h.cmd(a, Op.DELETE, delayed) == ("DELETED",)
    assert h.cmd(a, Op.DELETE, delayed) == ("NOT_FOUND",)
    assert h.cmd(a, Op.DELETE, ready) == ("DELETED",)
    assert h.cmd(a, Op.DELETE, 0) == ("NOT_FOUND",)
    tube = h.stats_tube("tubea")
    assert (tube["cmd-delete"], tube["current-using"], tube["current-watching"]) == (2, 1, 0)
    assert h.stats_tube("default")["current-watching"] == 1
    assert h.m.peek(ready) == ("NOT_FOUND",)


def test_deleting_the_last_job_of_an_unused_tube_destroys_the_tube():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "t")
    job = h.put(a)
    h.cmd(a, Op.USE, "default")
    assert h.m.list_tubes() == ["default", "t"]
    h.cmd(a, Op.DELETE, job)
    assert h.m.list_tubes() == ["default"]
    assert h.m.stats_tube("t", h.now) is None


def test_bury_needs_a_reservation_and_buried_jobs_are_kicked_oldest_first():
    # testserv peek_buried_kick and T14
    h = Harness()
    a = h.open()
    ids = [h.put(a, body=b) for b in (b"p", b"q", b"r")]
    assert h.cmd(a, Op.BURY, ids[0], 0) == ("NOT_FOUND",)
    for job in ids:
        h.cmd(a, Op.RESERVE, 0)
        assert h.cmd(a, Op.BURY, job, 7) == ("BURIED",)
    delayed = h.put(a, delay=9)
    assert h.m.peek_buried(a) == ("FOUND", ids[0], b"p")
    assert h.cmd(a, Op.KICK, 1) == ("KICKED", 1)
    assert h.m.peek_buried(a) == ("FOUND", ids[1], b"q")
    assert h.cmd(a, Op.KICK, 5) == ("KICKED", 2)  # buried only, the delayed job stays
    assert h.stats_job(delayed)["state"] == "delayed"
    assert h.cmd(a, Op.KICK, 2**32 - 1) == ("KICKED", 1)
    assert h.cmd(a, Op.KICK, 1) == ("KICKED", 0)
    stats = h.stats_job(ids[0])
    assert (stats["state"], stats["pri"], stats["buries"], stats["kicks"]) == ("ready", 7, 1, 1)


def test_kick_takes_delayed_jobs_by_deadline_and_peek_delayed_shows_the_soonest():
    # T14: put delay 5 then delay 3; peek-delayed shows the delay-3 job.
    h = Harness()
    a = h.open()
    later, sooner = h.put(a, body=b"d", delay=5), h.put(a, body=b"e", delay=3)
    assert h.m.peek_delayed(a) == ("FOUND", sooner, b"e")
    assert h.cmd(a, Op.KICK, 1) == ("KICKED", 1)
    assert h.stats_job(sooner)["state"] == "ready"
    assert h.stats_job(later)["state"] == "delayed"


def test_t16_burned_ids_are_never_used_and_kick_job_needs_a_buried_or_delayed_job():
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.BURN_ID) == ("OK",)
    assert h.put(a) == 2
    assert h.cmd(a, Op.KICK_JOB, 2) == ("NOT_FOUND",)
    assert h.cmd(a, Op.KICK_JOB, 3) == ("NOT_FOUND",)
    job = h.put(a, body=b"z", delay=7)
    assert h.cmd(a, Op.KICK_JOB, job) == ("KICKED",)
    assert h.cmd(a, Op.KICK_JOB, job) == ("NOT_FOUND",)
    stats = h.stats_job(job)
    assert (stats["state"], stats["delay"], stats["kicks"]) == ("ready", 7, 1)


def test_t9_a_paused_tube_gives_no_job_to_reserve_until_the_pause_ends():
    h = Harness()
    a, b = h.open(), h.open()
    h.put(a, body=b"P", pri=10)
    assert h.cmd(a, Op.PAUSE_TUBE, "default", 3 * S) == ("PAUSED",)
    h.now += 1
    tube = h.stats_tube("default")
    assert (tube["cmd-pause-tube"], tube["pause"], tube["pause-time-left"]) == (1, 3, 2)
    assert h.m.peek_ready(a) == ("FOUND", 1, b"P")  # peek ignores the pause
    assert h.cmd(b, Op.RESERVE, S) == ("WAITING",)
    assert h.advance(1) == [(b, ("TIMED_OUT",))]
    assert h.cmd(b, Op.RESERVE, -1) == ("WAITING",)
    assert h.advance(ns=2 * S - 2) == []
    assert h.advance(ns=1) == [(b, ("RESERVED", 1, b"P"))]
    assert h.stats_tube("default")["pause"] == 0


def test_pause_tube_zero_unpauses_at_once_and_serves_waiters():
    # testserv unpause_tube: paused 86400 s, a waiting reserve, then pause-tube default 0.
    # beanstalkd's 1 ns pause has passed by its next command; here it ends within the command.
    h = Harness()
    a, b = h.open(), h.open()
    h.put(a, body=b"")
    h.cmd(a, Op.PAUSE_TUBE, "default", 86400 * S)
    h.cmd(b, Op.RESERVE, -1)
    h.events.clear()
    assert h.cmd(a, Op.PAUSE_TUBE, "default", 0) == ("PAUSED",)
    assert h.events == [(b, ("RESERVED", 1, b""))]
    tube = h.stats_tube("default")
    assert (tube["pause"], tube["pause-time-left"], tube["cmd-pause-tube"]) == (0, 0, 2)


def test_pause_tube_zero_lets_the_next_reserve_in_the_same_batch_take_a_job():
    h = Harness()
    a = h.open()
    h.put(a, body=b"j")
    h.cmd(a, Op.PAUSE_TUBE, "default", 0)
    assert h.cmd(a, Op.RESERVE, 0) == ("RESERVED", 1, b"j")


def test_pause_tube_never_creates_a_tube_and_a_destroyed_tube_loses_its_pause():
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.PAUSE_TUBE, "nope", S) == ("NOT_FOUND",)
    assert h.m.list_tubes() == ["default"]
    h.cmd(a, Op.WATCH, "t3")
    assert h.cmd(a, Op.PAUSE_TUBE, "t3", 100 * S) == ("PAUSED",)
    assert h.cmd(a, Op.IGNORE, "t3") == ("WATCHING", 1)
    assert h.m.stats_tube("t3", h.now) is None
    h.cmd(a, Op.WATCH, "t3")
    assert h.stats_tube("t3")["pause"] == 0


def test_t9_destroying_a_tube_swap_removes_it_from_the_tube_list():
    h = Harness()
    a = h.open()
    for name in ("t1", "t2", "t3", "t4"):
        h.cmd(a, Op.WATCH, name)
    assert h.m.list_tubes() == ["default", "t1", "t2", "t3", "t4"]
    assert h.cmd(a, Op.IGNORE, "t1") == ("WATCHING", 4)
    assert h.m.list_tubes() == ["default", "t4", "t2", "t3"]
    assert h.m.list_tubes_watched(a) == ["default", "t4", "t2", "t3"]


def test_close_empties_the_watch_list_first_entry_first_then_from_the_back():
    # beanstalkd's ms_clear swap-removes index 0 until the list is empty, then the used tube
    # goes. With watch list [r, q, p] and used tube u the tubes die in the order r, p, q, u,
    # which leaves the survivors as [default, y, z]; any other order would give [.., z, y].
    h = Harness()
    c, keep = h.open(), h.open()
    for name in ("p", "q", "r"):
        h.cmd(keep, Op.WATCH, name)
    h.cmd(c, Op.WATCH, "r")
    h.cmd(c, Op.IGNORE, "default")
    h.cmd(c, Op.WATCH, "q")
    h.cmd(c, Op.WATCH, "p")
    h.cmd(c, Op.USE, "u")
    for name in ("y", "z"):
        h.cmd(keep, Op.WATCH, name)
    for name in ("p", "q", "r"):
        h.cmd(keep, Op.IGNORE, name)
    assert h.m.list_tubes_watched(c) == ["r", "q", "p"]
    assert h.m.list_tubes() == ["default", "p", "q", "r", "u", "y", "z"]
    assert h.cmd(c, Op.CLOSE) == ("OK",)
    assert h.m.list_tubes() == ["default", "y", "z"]


def test_watch_counts_and_ignore_never_drops_the_last_watched_tube():
    # testserv list_tube and T17
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.WATCH, "w") == ("WATCHING", 2)
    assert h.cmd(a, Op.WATCH, "w") == ("WATCHING", 2)
    assert h.cmd(a, Op.IGNORE, "nonexist") == ("WATCHING", 2)
    assert h.m.list_tubes() == ["default", "w"]
    assert h.cmd(a, Op.IGNORE, "default") == ("WATCHING", 1)
    assert h.cmd(a, Op.IGNORE, "w") == ("NOT_IGNORED",)
    assert h.m.list_tubes_watched(a) == ["w"]


def test_use_moves_the_session_and_destroys_an_unused_previous_tube():
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.USE, "a") == ("USING", "a")
    assert h.cmd(a, Op.USE, "a") == ("USING", "a")
    assert h.cmd(a, Op.USE, "b") == ("USING", "b")
    assert h.m.list_tubes() == ["default", "b"]
    assert h.stats_tube("default")["current-using"] == 0


def test_touch_restarts_the_full_ttr_from_now():
    h = Harness()
    a = h.open()
    h.put(a, ttr=10)
    h.cmd(a, Op.RESERVE, 0)
    h.advance(8)
    assert h.cmd(a, Op.TOUCH, 1) == ("TOUCHED",)
    h.advance(ns=10 * S)
    assert h.stats_job(1)["state"] == "reserved"
    h.advance(ns=1)
    assert h.stats_job(1)["state"] == "ready"


def test_peeks_look_only_at_the_used_tube_and_peek_by_id_at_any_job():
    h = Harness()
    a, b = h.open(), h.open()
    h.cmd(a, Op.USE, "other")
    job = h.put(a, body=b"\x00\r\n\xff")
    assert h.m.peek(job) == ("FOUND", job, b"\x00\r\n\xff")
    assert h.m.peek_ready(a) == ("FOUND", job, b"\x00\r\n\xff")
    assert h.m.peek_ready(b) == ("NOT_FOUND",)
    assert h.m.peek_delayed(a) == h.m.peek_buried(a) == ("NOT_FOUND",)
    assert h.m.peek(0) == ("NOT_FOUND",)
    assert h.m.peek_ready(12345) == ("GONE",)
    assert h.m.stats_job(99, h.now) is None


def test_stats_global_counts_jobs_by_state_tubes_and_waiters():
    h = Harness()
    a, b = h.open(), h.open()
    h.put(a, pri=5)
    h.put(a, pri=5000)
    h.put(a, delay=1)
    h.cmd(b, Op.RESERVE, 0)
    h.cmd(b, Op.WATCH, "x")
    h.cmd(b, Op.IGNORE, "default")
    h.cmd(b, Op.RESERVE, -1)
    assert h.m.stats_global() == {
        "current-jobs-urgent": 0, "current-jobs-ready": 1, "current-jobs-reserved": 1,
        "current-jobs-delayed": 1, "current-jobs-buried": 0, "job-timeouts": 0,
        "total-jobs": 3, "current-tubes": 2, "current-waiting": 1}
    assert h.m.job_counts() == {"ready": 1, "reserved": 1, "delayed": 1, "buried": 0}
