"""Rules version 3: timers that end at the same time end in the order they were set.

beanstalkd 1.12 reads a nanosecond clock for every command, so two delays, TTRs or pauses of
equal length set by commands of one packet end in the order set. A BeanRaft batch shares one
time; under rules 1 and 2 such ties fell to the job id or tube name, under 3 to the order the
timers were set (state.py, ``order``). Each case runs under every version: a log that never
switched must replay as it always did. Snapshots of a rules 3 state (format 5) keep each order,
and a replica restored from a snapshot taken before the switch ends like one that replayed it.
"""

from __future__ import annotations

import msgpack
import pytest
from jobs_harness import S, Harness, harness

from beanraft.jobs import restore
from beanraft.jobs.commands import Op
from beanraft.jobs.machine import Machine
from beanraft.jobs.state import T_DELAY

ORDER_SET = 3  # the first rules version whose timers end in the order they were set


def step(h: Harness, sid: int, op: Op, *args) -> tuple:
    """One command of ``sid``, to be sent in a batch with others."""
    return (op, sid, h.next_seq(sid), *args)


def first_of_two(h: Harness, sid: int) -> tuple[int, int]:
    """Two jobs put by ``sid``, both reserved by it, in separate batches (ids 1 and 2)."""
    first, second = h.put(sid, ttr=1), h.put(sid, ttr=1)
    for job in (first, second):
        assert h.cmd(sid, Op.RESERVE_JOB, job)[0] == "RESERVED"
    return first, second


def handed_out_when_ttrs_end(rules: int, batch) -> tuple[int, int, list, tuple]:
    """Two jobs put with a TTR of 1 s, then ``batch(h, holder, first, second)``, the steps of one
    batch that reserve (and touch) them; a worker waits until their TTRs end. Returns both ids,
    the batch's replies and what the worker was handed first."""
    h = harness(rules)
    holder, worker = h.open(), h.open()
    first, second = h.put(holder, ttr=1), h.put(holder, ttr=1)
    replies, _ = h.batch(batch(h, holder, first, second))
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    events = h.advance(1, ns=1)
    assert events[0][0] == worker
    return first, second, [reply[0] for reply in replies], events[0][1]


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_ttrs_set_alike_in_one_batch_end_in_the_order_set(rules):
    def batch(h, holder, first, second):
        return [step(h, holder, Op.RESERVE_JOB, second), step(h, holder, Op.RESERVE_JOB, first)]

    first, second, replies, handed = handed_out_when_ttrs_end(rules, batch)
    assert replies == ["RESERVED", "RESERVED"]
    assert handed == ("RESERVED", second if rules >= ORDER_SET else first, b"x")


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_a_touch_sets_the_ttr_again_behind_every_ttr_set_before_it(rules):
    def batch(h, holder, first, second):
        return [step(h, holder, Op.RESERVE_JOB, first), step(h, holder, Op.RESERVE_JOB, second),
                step(h, holder, Op.TOUCH, first)]

    first, second, replies, handed = handed_out_when_ttrs_end(rules, batch)
    assert replies == ["RESERVED", "RESERVED", "TOUCHED"]
    assert handed == ("RESERVED", second if rules >= ORDER_SET else first, b"x")


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_delays_set_alike_in_one_batch_end_in_the_order_set(rules):
    h = harness(rules)
    holder, worker = h.open(), h.open()
    first, second = first_of_two(h, holder)
    replies, _ = h.batch([step(h, holder, Op.RELEASE, second, 0, S),
                          step(h, holder, Op.RELEASE, first, 0, S)])
    assert replies == [("RELEASED",), ("RELEASED",)]
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    events = h.advance(1)
    assert events == [(worker, ("RESERVED", second if rules >= ORDER_SET else first, b"x"))]


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_peek_delayed_and_kick_take_the_delay_set_first_among_equal_ones(rules):
    h = harness(rules)
    holder = h.open()
    first, second = first_of_two(h, holder)
    h.batch([step(h, holder, Op.RELEASE, second, 0, 5 * S),
             step(h, holder, Op.RELEASE, first, 0, 5 * S)])
    expected = second if rules >= ORDER_SET else first
    assert h.m.peek_delayed(holder) == ("FOUND", expected, b"x")
    assert h.cmd(holder, Op.KICK, 1) == ("KICKED", 1)
    assert h.stats_job(expected)["state"] == "ready"
    assert h.stats_job(first + second - expected)["state"] == "delayed"


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_pauses_set_alike_in_one_batch_end_in_the_order_set(rules):
    # The waiter is served as each pause ends: b's job when b's pause ends first, though a's
    # job is the more urgent.
    h = harness(rules)
    producer, worker = h.open(), h.open()
    assert h.cmd(producer, Op.USE, "a")[0] == "USING"
    in_a = h.put(producer, pri=0)
    assert h.cmd(producer, Op.USE, "b")[0] == "USING"
    in_b = h.put(producer, pri=5)
    h.batch([step(h, producer, Op.PAUSE_TUBE, "b", S), step(h, producer, Op.PAUSE_TUBE, "a", S)])
    for tube in ("a", "b"):
        assert h.cmd(worker, Op.WATCH, tube)[0] == "WATCHING"
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    events = h.advance(1)
    assert events == [(worker, ("RESERVED", in_b if rules >= ORDER_SET else in_a, b"x"))]


def _timers_of_every_kind() -> tuple[Harness, dict]:
    """A rules 3 state with delays, TTRs and pauses set alike in one batch, out of id order."""
    h = harness(ORDER_SET)
    holder = h.open()
    jobs = [h.put(holder, ttr=2) for _ in range(4)]
    for job in jobs:
        assert h.cmd(holder, Op.RESERVE_JOB, job)[0] == "RESERVED"
    assert h.cmd(holder, Op.USE, "q")[0] == "USING"
    h.put(holder)
    h.batch([step(h, holder, Op.RELEASE, jobs[3], 0, S), step(h, holder, Op.RELEASE, jobs[2], 0, S),
             step(h, holder, Op.TOUCH, jobs[1]), step(h, holder, Op.TOUCH, jobs[0]),
             step(h, holder, Op.PAUSE_TUBE, "q", S), step(h, holder, Op.PAUSE_TUBE, "default", S)])
    return h, {"holder": holder, "jobs": jobs}


def test_a_rules_three_snapshot_is_format_five_and_keeps_every_timers_order():
    h, _ = _timers_of_every_kind()
    data = h.m.snapshot()
    assert data[0] == 5 and len(msgpack.unpackb(data[1:])) == 18
    restored = Machine.restore(data)
    assert restored.rules == ORDER_SET and restored.timers_set == h.m.timers_set
    assert restored.digest() == h.m.digest()
    # Both go on alike, timer for timer: the restored heap holds the same orders.
    assert sorted(entry[:4] for entry in restored.timers if restored._live_timer(entry)) == \
        sorted(entry[:4] for entry in h.m.timers if h.m._live_timer(entry))
    for now in range(h.now, h.now + 4 * S, S // 4):
        tick = [(Op.TICK, 0, 0)]
        assert restored.apply_batch(now, tick) == h.m.apply_batch(now, tick)
    assert restored.digest() == h.m.digest()


def test_a_rules_two_state_still_snapshots_as_format_four():
    h = harness(2)
    holder = h.open()
    first, second = first_of_two(h, holder)
    h.batch([step(h, holder, Op.RELEASE, second, 0, S), step(h, holder, Op.RELEASE, first, 0, S)])
    assert h.m.snapshot()[0] == 4
    assert h.m.timers_set == 0


def _rewrite(data: bytes, field: int, value) -> bytes:
    body = msgpack.unpackb(data[1:], raw=False)
    body[field] = value
    return data[:1] + msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize("field, value", [
    (15, -1), (15, "3"), (15, 1),            # timers_set below the orders it must cover
    (16, [[1, 2], [1, 3]]),                   # one job, two orders
    (16, [[5, 1]]),                           # the ready job of tube q holds no timer
    (16, [[99, 1]]),                          # no such job
    (16, [[1, 0]]),                           # an order of 0 is left out, never written
    (17, [["nope", 1]]),                      # no such tube
    (17, [["q", 999]]),                       # after the last timer set
])
def test_a_snapshot_whose_timer_orders_do_not_hold_is_refused(field, value):
    h, _ = _timers_of_every_kind()
    with pytest.raises(ValueError):
        Machine.restore(_rewrite(h.m.snapshot(), field, value))


def test_formats_and_rules_versions_must_agree():
    h, _ = _timers_of_every_kind()
    as_rules_two = _rewrite(h.m.snapshot(), 13, 2)
    with pytest.raises(ValueError, match="cannot hold rules version 2"):
        Machine.restore(as_rules_two)
    four = harness(2).m.snapshot()
    with pytest.raises(ValueError, match="cannot hold rules version 3"):
        Machine.restore(_rewrite(four, 13, 3))


@pytest.mark.parametrize("before", [1, 2])
def test_replay_and_snapshot_agree_across_the_switch_to_three(before):
    # Timers set before the switch keep order 0 on both replicas (the snapshot of rules 1 or 2
    # keeps none) and end, at equal times, before those set after it, among themselves by key.
    h = harness(before)
    holder, worker = h.open(), h.open()
    jobs = [h.put(holder, ttr=1) for _ in range(4)]
    for job in jobs:
        assert h.cmd(holder, Op.RESERVE_JOB, job)[0] == "RESERVED"
    h.batch([step(h, holder, Op.RELEASE, jobs[1], 0, S),
             step(h, holder, Op.RELEASE, jobs[0], 0, S)])
    taken = h.m.snapshot()
    rest = [(Op.RULES, 0, 0, ORDER_SET), step(h, holder, Op.RELEASE, jobs[3], 0, S),
            step(h, holder, Op.RELEASE, jobs[2], 0, S), step(h, worker, Op.RESERVE, -1)]
    replica = Machine.restore(taken)
    assert replica.apply_batch(h.now, rest) == h.m.apply_batch(h.now, rest)
    assert replica.digest() == h.m.digest() and replica.snapshot()[0] == 5
    tick = [(Op.TICK, 0, 0)]
    replies, events = h.m.apply_batch(h.now + S, tick)
    assert replica.apply_batch(h.now + S, tick) == (replies, events)
    assert events[0] == (worker, ("RESERVED", jobs[0], b"x"))  # set before the switch: by id
    assert replica.digest() == h.m.digest()


def test_a_restore_for_a_new_cluster_keeps_the_timers_order():
    h = harness(ORDER_SET)
    holder = h.open()
    first, second = first_of_two(h, holder)
    h.batch([step(h, holder, Op.RELEASE, second, 0, 30 * S),
             step(h, holder, Op.RELEASE, first, 0, 30 * S)])
    later = h.now + 3600 * S
    shifted, summary = restore.for_new_cluster(h.m.snapshot(), later)
    restored = Machine.restore(shifted)
    assert restored.rules == ORDER_SET and shifted[0] == 5
    delays = sorted(entry for entry in restored.timers
                    if entry[1] == T_DELAY and restored._live_timer(entry))
    assert [entry[3] for entry in delays] == [second, first]
    assert delays[0][0] == delays[1][0] > later
