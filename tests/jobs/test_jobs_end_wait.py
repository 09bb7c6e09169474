"""END_WAIT: a half-closed client's wait ends TIMED_OUT and its session goes on (rules 3).

beanstalkd 1.12 answers a reserve that waits when its client half-closes with TIMED_OUT, then
runs the commands the client sent behind it before it closes the connection. The node proposes
END_WAIT for such a client once the cluster applies rules 3; before that version the op does
not exist, and every replica must answer it as the code before it did: an unknown op that
changes nothing.
"""

from __future__ import annotations

import pytest
from jobs_harness import S, harness

from beanraft.jobs.commands import Op


@pytest.mark.parametrize("rules", [1, 2])
def test_before_rules_three_end_wait_is_an_unknown_op_that_changes_nothing(rules):
    h = harness(rules)
    worker = h.open()
    seq = h.next_seq(worker)
    (waiting,), _ = h.batch([(Op.RESERVE, worker, seq, -1)])
    assert waiting == ("WAITING",)
    before = h.m.digest()
    (reply,), events = h.batch([(Op.END_WAIT, worker, seq + 1)])
    assert reply == ("ERROR", "unknown op") and events == []
    assert h.m.digest() == before  # no reply cached, the wait untouched


def test_the_wait_ends_timed_out_and_the_session_goes_on():
    h = harness(3)
    worker = h.open()
    job = h.put(worker, ttr=2)
    assert h.cmd(worker, Op.RESERVE, -1)[0] == "RESERVED"
    seq = h.next_seq(worker)
    # Inside the margin of the job it holds, a new wait would be DEADLINE_SOON at its wake
    # time; a half-close answers TIMED_OUT all the same, as 1.12 does.
    (waiting,), _ = h.batch([(Op.RESERVE, worker, seq, 5 * S)])
    assert waiting == ("WAITING",)
    assert h.cmd(worker, Op.END_WAIT) == ("OK",)
    assert h.events[-1] == (worker, ("TIMED_OUT",))
    (retried,), _ = h.batch([(Op.RESERVE, worker, seq, 5 * S)])
    assert retried == ("TIMED_OUT",)  # a retried reserve learns the outcome
    assert h.stats_tube("default")["current-waiting"] == 0
    assert h.cmd(worker, Op.DELETE, job) == ("DELETED",)  # what it sent behind runs
    assert h.advance(10) == []  # no wake-up of the ended wait is left to fire


def test_a_session_no_longer_waiting_is_left_as_it_is():
    h = harness(3)
    worker, producer = h.open(), h.open()
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    job = h.put(producer)
    assert h.events[-1] == (worker, ("RESERVED", job, b"x"))
    events_before = len(h.events)
    assert h.cmd(worker, Op.END_WAIT) == ("OK",)
    assert len(h.events) == events_before
    assert h.stats_job(job)["state"] == "reserved"


def test_a_job_and_the_end_of_the_wait_in_one_batch_go_by_their_order():
    h = harness(3)
    worker, producer = h.open(), h.open()
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    _, events = h.batch([(Op.END_WAIT, worker, h.next_seq(worker)),
                         (Op.PUT, producer, h.next_seq(producer), 0, 0, 60 * S, b"late")])
    assert events == [(worker, ("TIMED_OUT",))]
    assert h.stats_tube("default")["current-jobs-ready"] == 1


def test_end_wait_of_a_closed_session_is_gone():
    h = harness(3)
    worker = h.open()
    assert h.cmd(worker, Op.CLOSE) == ("OK",)
    (reply,), _ = h.batch([(Op.END_WAIT, worker, 9)])
    assert reply == ("GONE",)
