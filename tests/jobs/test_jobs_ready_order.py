"""A tube's ready jobs, split between the sorted FIFO of ``fresh`` entries and the heap, are
taken in (pri, id) order, and dead entries in either stay bounded (state.py's docstring)."""

from __future__ import annotations

import random

from jobs_harness import Harness

from beanraft.jobs.commands import Op


def reserve(h: Harness, sid: int) -> int | None:
    reply = h.cmd(sid, Op.RESERVE, 0)
    return reply[1] if reply[0] == "RESERVED" else None


def test_jobs_of_one_priority_go_through_the_fifo_and_a_more_urgent_one_overtakes_them():
    h = Harness()
    p, w = h.open(), h.open()
    ids = [h.put(p, pri=10) for _ in range(5)]
    tube = h.m.tubes["default"]
    assert [entry[1] for entry in tube.fresh] == ids and tube.ready == []
    urgent = h.put(p, pri=1)  # below the FIFO's tail: the heap takes it
    assert [entry[1] for entry in tube.ready] == [urgent]
    assert reserve(h, w) == urgent
    assert reserve(h, w) == ids[0]
    assert h.cmd(w, Op.RELEASE, ids[0], 10, 0) == ("RELEASED",)  # an old id back: the heap
    assert reserve(h, w) == ids[0]
    assert [reserve(h, w) for _ in ids[1:]] == ids[1:]
    assert reserve(h, w) is None


def test_the_fifo_is_filtered_once_dead_entries_outnumber_its_ready_jobs_twice():
    # Ready jobs deleted by id leave their entries behind the FIFO's head; the next append past
    # twice the tube's ready jobs plus 32 entries filters them out, keeping the order.
    h = Harness()
    p, w = h.open(), h.open()
    ids = [h.put(p, pri=7) for _ in range(300)]
    tube = h.m.tubes["default"]
    kept = ids[:10]
    for job_id in ids[10:]:
        assert h.cmd(p, Op.DELETE, job_id) == ("DELETED",)
    assert len(tube.fresh) == 300 and tube.ready_ct == 10  # nothing filters without an append
    kept.append(h.put(p, pri=7))
    assert [entry[1] for entry in tube.fresh] == kept and tube.ready == []
    for _ in range(200):  # deletes and puts interleaved: the FIFO never outgrows its bound
        assert h.cmd(p, Op.DELETE, kept.pop()) == ("DELETED",)
        kept.append(h.put(p, pri=7))
        assert len(tube.fresh) <= 2 * tube.ready_ct + 32 + 1
    assert [reserve(h, w) for _ in kept] == kept and reserve(h, w) is None


def test_random_walk_takes_jobs_in_pri_id_order_and_keeps_dead_entries_bounded():
    rng = random.Random(20261207)
    h = Harness()
    producer, worker = h.open(), h.open()
    ready: set[tuple[int, int]] = set()  # (pri, id) of the ready jobs: the reference
    held: dict[int, int] = {}  # reserved id -> pri
    pri_of: dict[int, int] = {}
    tube = h.m.tubes["default"]
    for step in range(4000):
        roll = rng.random()
        if roll < 0.45:
            pri = rng.choice([1024, 1024, 1024, 1024, 5, 2000])
            job_id = h.put(producer, pri=pri)
            pri_of[job_id] = pri
            ready.add((pri, job_id))
        elif roll < 0.75:
            job_id = reserve(h, worker)
            expected = min(ready) if ready else None
            assert (None if job_id is None else (pri_of[job_id], job_id)) == expected, step
            if job_id is not None:
                ready.discard(expected)
                held[job_id] = pri_of[job_id]
        elif roll < 0.85 and held:
            job_id = rng.choice(list(held))
            pri = rng.choice([held[job_id], 1024, 3])
            assert h.cmd(worker, Op.RELEASE, job_id, pri, 0) == ("RELEASED",)
            del held[job_id]
            pri_of[job_id] = pri
            ready.add((pri, job_id))
        elif ready:  # delete a ready job by id: a dead entry left in the middle
            pri, job_id = rng.choice(sorted(ready))
            assert h.cmd(producer, Op.DELETE, job_id) == ("DELETED",)
            ready.discard((pri, job_id))
        # Harness.batch checked the invariants: the FIFO sorted, every ready job live once.
        assert len(tube.fresh) + len(tube.ready) <= 2 * (2 * len(ready) + 32) + 2, step
    while ready:
        expected = min(ready)
        job_id = reserve(h, worker)
        assert job_id is not None and (pri_of[job_id], job_id) == expected
        ready.discard(expected)
    assert reserve(h, worker) is None
