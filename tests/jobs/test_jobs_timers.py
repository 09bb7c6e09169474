"""Timers fire exactly when due, in time order, whatever the spacing of the ticks (§5, §13).

Method: put the machine in a state with pending timers, then move the virtual clock to one
nanosecond before and exactly at each boundary, or jump far past several timers in one tick.
"""

from __future__ import annotations

from jobs_harness import S, Harness

from beanraft.jobs.commands import Op


def test_a_delayed_job_becomes_ready_exactly_at_its_deadline():
    h = Harness()
    a = h.open()
    job = h.put(a, delay=1)
    assert h.m.next_deadline_ns() == h.now + S
    h.advance(ns=S - 1)
    assert h.stats_job(job)["state"] == "delayed"
    h.advance(ns=1)
    assert h.stats_job(job)["state"] == "ready"
    assert h.stats_job(job)["delay"] == 1  # the delay stays visible after the job is ready
    assert h.m.next_deadline_ns() is None


def test_ttr_expiry_is_strict_and_never_missed_even_when_a_tick_lands_on_the_deadline():
    # §13: beanstalkd 1.12 loses about half of these; the machine must expire every one.
    h = Harness()
    a = h.open()
    h.put(a, ttr=3)
    h.cmd(a, Op.RESERVE, 0)
    deadline = h.now + 3 * S
    assert h.m.next_deadline_ns() == deadline + 1
    h.advance(ns=3 * S)  # exactly at the deadline: not yet expired (deadline < now is strict)
    assert h.stats_job(1)["state"] == "reserved"
    assert h.stats_job(1)["time-left"] == 0
    h.advance(ns=1)
    stats = h.stats_job(1)
    assert (stats["state"], stats["timeouts"]) == ("ready", 1)
    assert h.m.stats_global()["job-timeouts"] == 1


def test_an_empty_batch_fires_due_timers_as_well_as_a_tick():
    h = Harness()
    a = h.open()
    h.put(a, delay=1)
    replies, _ = h.batch([], now=h.now + S)
    assert replies == []
    assert h.m.job_counts()["ready"] == 1


def test_time_never_goes_backwards():
    h = Harness()
    a = h.open()
    job = h.put(a, delay=1)
    h.batch([], now=h.now + 2 * S)
    later = h.m.now_ns
    h.batch([(Op.TICK, 0, 0)], now=h.now - 10 * S)
    assert h.m.now_ns == later
    assert h.cmd(a, Op.RELEASE, job, 0, 0) == ("NOT_FOUND",)
    h.put(a, delay=1)  # the deadline counts from the machine's clock, not the batch's stamp
    assert dict(h.m.stats_job(2, later))["time-left"] == 1


def test_a_late_tick_replays_timers_in_time_order_so_a_job_ready_before_the_timeout_is_served():
    h = Harness()
    a, w = h.open(), h.open()
    h.put(a, delay=3)
    assert h.cmd(w, Op.RESERVE, 5 * S) == ("WAITING",)
    assert h.advance(10) == [(w, ("RESERVED", 1, b"x"))]


def test_a_late_tick_times_the_waiter_out_first_when_its_timeout_came_before_the_job():
    h = Harness()
    a, w = h.open(), h.open()
    h.put(a, delay=7)
    h.cmd(w, Op.RESERVE, 5 * S)
    assert h.advance(10) == [(w, ("TIMED_OUT",))]
    assert h.m.job_counts()["ready"] == 1


def test_timers_due_at_the_same_nanosecond_fire_delays_before_waiter_timeouts():
    h = Harness()
    a, w = h.open(), h.open()
    h.put(a, delay=2)
    h.cmd(w, Op.RESERVE, 2 * S)
    assert h.advance(2) == [(w, ("RESERVED", 1, b"x"))]


def test_a_waiter_gets_the_job_whose_ttr_expired_in_another_session():
    h = Harness()
    a, holder, w = h.open(), h.open(), h.open()
    h.put(a, ttr=2)
    h.cmd(holder, Op.RESERVE, 0)
    h.cmd(w, Op.RESERVE, -1)
    assert h.advance(ns=2 * S + 1) == [(w, ("RESERVED", 1, b"x"))]
    stats = h.stats_job(1)
    assert (stats["reserves"], stats["timeouts"]) == (2, 1)
    assert h.cmd(holder, Op.DELETE, 1) == ("NOT_FOUND",)  # now reserved by someone else


def test_a_late_tick_answers_deadline_soon_and_still_expires_the_job():
    h = Harness()
    a = h.open()
    h.put(a, ttr=2)
    h.cmd(a, Op.RESERVE, 0)
    h.cmd(a, Op.RESERVE, -1)
    assert h.advance(5) == [(a, ("DEADLINE_SOON",))]
    stats = h.stats_job(1)
    assert (stats["state"], stats["timeouts"]) == ("ready", 1)


def test_a_late_tick_gives_exactly_the_outcome_of_ticks_at_every_deadline():
    # A holds J (ttr 2) and waits; B waits; K (less urgent) becomes ready at 1.5 s. Ticking at
    # every deadline: A gets DEADLINE_SOON at 1 s, B gets K at 1.5 s, J expires after 2 s.
    # One tick at 3 s must replay that, not hand B the job J that was still reserved at 1.5 s.
    def scenario(ticks: list[int]) -> Harness:
        h = Harness()
        a, b = h.open(), h.open()
        h.put(a, body=b"J", pri=0, ttr=2)
        h.cmd(a, Op.RESERVE, 0)
        h.put(a, body=b"K", pri=5, delay=1.5)
        h.cmd(a, Op.RESERVE, -1)
        h.cmd(b, Op.RESERVE, -1)
        start = h.now
        for tick in ticks:
            h.batch([(Op.TICK, 0, 0)], now=start + tick)
        assert h.events == [(a, ("DEADLINE_SOON",)), (b, ("RESERVED", 2, b"K"))]
        assert (h.stats_job(1)["state"], h.stats_job(1)["timeouts"]) == ("ready", 1)
        return h

    exact = scenario([S, 3 * S // 2, 2 * S + 1, 3 * S])
    late = scenario([3 * S])
    assert late.m.digest() == exact.m.digest()


def test_the_wake_time_is_the_sooner_of_the_timeout_and_the_safety_margin():
    h = Harness()
    a = h.open()
    h.put(a, ttr=10)
    h.cmd(a, Op.RESERVE, 0)
    h.cmd(a, Op.RESERVE, 3 * S)
    assert h.m.next_deadline_ns() == h.now + 3 * S
    assert h.advance(3) == [(a, ("TIMED_OUT",))]
    h.cmd(a, Op.RESERVE, 30 * S)
    assert h.m.next_deadline_ns() == h.now + 6 * S  # deadline (7 s away) minus 1 s
    assert h.advance(6) == [(a, ("DEADLINE_SOON",))]


def test_inside_the_margin_with_only_paused_ready_jobs_reserve_answers_deadline_soon_at_once():
    # beanstalkd would wait and answer DEADLINE_SOON on its very next tick.
    h = Harness()
    a = h.open()
    h.put(a, ttr=1)
    h.cmd(a, Op.RESERVE, 0)
    h.put(a)
    h.cmd(a, Op.PAUSE_TUBE, "default", 10 * S)
    assert h.cmd(a, Op.RESERVE, 5 * S) == ("DEADLINE_SOON",)
    assert not h.m.is_waiting(a)


def test_a_reserve_that_waits_forever_without_reservations_arms_no_timer():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.RESERVE, -1)
    assert h.m.next_deadline_ns() is None
    assert h.advance(10**6) == []
    assert h.m.is_waiting(a)


def test_next_deadline_reports_the_earliest_timer_of_any_kind():
    h = Harness()
    a, w = h.open(), h.open()
    h.cmd(a, Op.PAUSE_TUBE, "default", 4 * S)
    assert h.m.next_deadline_ns() == h.now + 4 * S
    h.cmd(w, Op.RESERVE, 3 * S)
    assert h.m.next_deadline_ns() == h.now + 3 * S
    h.put(a, delay=2)
    assert h.m.next_deadline_ns() == h.now + 2 * S
    h.put(a, ttr=1)
    h.cmd(a, Op.RESERVE_JOB, 2)
    assert h.m.next_deadline_ns() == h.now + S + 1
    h.cmd(a, Op.DELETE, 2)
    h.cmd(a, Op.DELETE, 1)
    assert h.m.next_deadline_ns() == h.now + 3 * S


def test_queries_do_not_change_the_state_digest():
    h = Harness()
    a = h.open()
    for n in range(50):
        h.put(a, pri=n % 7, delay=n % 3)
        h.cmd(a, Op.RESERVE, 0)
        h.cmd(a, Op.RELEASE, n + 1, 3, 0)
    before = h.m.digest()
    h.m.peek_ready(a), h.m.peek_delayed(a), h.m.next_deadline_ns(), h.m.stats_tube("default", 0)
    assert h.m.digest() == before
