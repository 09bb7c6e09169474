"""Goal: the client's record of the jobs it holds stays bounded for a worker that drops its jobs
(their TTR runs out on the server, and no reply ever tells the client), keeps the jobs a worker
touches, and forgets a job whose touch is answered NOT_FOUND.

Method: the sans-I/O core is driven by hand with the server's replies written out (the helpers
of ``test_client_core``): a worker reserves job after job and never deletes one, and the record
is inspected; then the documented cost of the bound, a forgotten job that the session still
holds, is played through a failover.
"""

from __future__ import annotations

from test_client_core import fail_over, make_job, resumed, session_core

from beanraft import protocol as p
from beanraft.client import ops
from beanraft.client.bookkeeping import MAX_HELD_JOBS, HeldJobs
from beanraft.client.core import Core


def reserve(core: Core, job_id: int, now: float = 0.5) -> None:
    """A reserve answered with ``job_id``; the application then drops the job."""
    op = ops.reserve(None, now, make_job)
    core.submit(op, now)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\n"
    core.receive_data(b"RESERVED %d 1\r\nx\r\n" % job_id, now)
    assert op.outcome().id == job_id


def touch(core: Core, job_id: int, reply: bytes) -> None:
    op = ops.touch(job_id)
    core.submit(op, 0.5)
    assert core.data_to_send() == b"touch %d\r\n" % job_id
    core.receive_data(reply, 0.5)
    assert op.done


def test_a_worker_that_drops_every_job_remembers_at_most_max_held_jobs():
    core = session_core()
    for job_id in range(1, MAX_HELD_JOBS + 101):
        reserve(core, job_id)
    assert len(core.held) == MAX_HELD_JOBS
    assert 100 not in core.held and 101 in core.held and MAX_HELD_JOBS + 100 in core.held


def test_the_job_reserved_or_touched_longest_ago_is_forgotten_first():
    core = session_core()
    core.held = HeldJobs(3)
    for job_id in (1, 2, 3):
        reserve(core, job_id)
    touch(core, 1, b"TOUCHED\r\n")
    reserve(core, 4)
    assert list(core.held) == [3, 1, 4]  # 2 was reserved longest ago and never touched


def test_a_touch_answered_not_found_forgets_the_job():
    core = session_core()
    reserve(core, 7)
    touch(core, 7, b"NOT_FOUND\r\n")  # its TTR ran out: the session no longer holds it
    assert 7 not in core.held and not core.held


def test_a_job_forgotten_while_still_held_goes_to_the_next_reserve_after_a_failover():
    # The documented cost of the bound: one extra delivery of that job, after a failover only.
    core = session_core()
    core.held = HeldJobs(2)
    for job_id in (1, 2, 3):
        reserve(core, job_id)
    assert list(core.held) == [2, 3]
    core.submit(ops.stats("stats", p.Stats()), 0.6)  # in flight when the node is lost
    core.data_to_send()
    assert fail_over(core, resumed(1, 2, 3)) == b"stats\r\n"
    again = ops.reserve(None, 1.2, make_job)
    core.submit(again, 1.2)
    assert core.data_to_send() == b"peek 1\r\n"  # job 1, which the application already has
