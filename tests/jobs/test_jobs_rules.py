"""Rules versions: RULES switches the whole state machine at one entry, and version 2 serves
waiting workers as beanstalkd 1.12 does where version 1 did not (machine.py, handlers.py).
Version 3 keeps all of that (test_jobs_rules_timers.py has what it adds).

Every case runs under each version: the log of a cluster that never switched must still
replay exactly as it did, and a switched one must give 1.12's answer.
"""

from __future__ import annotations

import msgpack
import pytest
from jobs_harness import S, Harness, harness

from beanraft.jobs import restore, snapshot
from beanraft.jobs.commands import MAX_RULES, RULES_SUPPORTED, Op
from beanraft.jobs.machine import Machine


def test_a_log_starts_at_rules_one_and_rules_never_goes_back():
    h = Harness()
    assert h.m.rules == 1
    replies, _ = h.batch([(Op.RULES, 0, 0, 2), (Op.RULES, 0, 0, 1), (Op.RULES, 0, 0, 2)])
    assert replies == [("RULES", 2)] * 3
    assert h.m.rules == 2 and h.m.rules_needed == 0


@pytest.mark.parametrize("bad", [0, -1, MAX_RULES + 1, "2", 2.0, True, None])
def test_a_malformed_rules_entry_changes_nothing(bad):
    h = Harness()
    before = h.m.digest()
    (reply,), _ = h.batch([(Op.RULES, 0, 0, bad)])
    assert reply[0] == "ERROR"
    assert h.m.digest() == before and h.m.rules_needed == 0


def test_a_version_this_code_cannot_apply_is_recorded_not_applied():
    h = Harness()
    (reply,), _ = h.batch([(Op.RULES, 0, 0, RULES_SUPPORTED + 1)])
    assert reply[0] == "ERROR" and "above" in reply[1]
    assert h.m.rules == 1 and h.m.rules_needed == RULES_SUPPORTED + 1


def _bury(h: Harness, sid: int, job: int, pri: int) -> None:
    assert h.cmd(sid, Op.RESERVE_JOB, job)[0] == "RESERVED"
    assert h.cmd(sid, Op.BURY, job, pri) == ("BURIED",)


@pytest.mark.parametrize("rules, served", [(1, 2), (2, 1), (3, 1)])
def test_kick_with_a_worker_waiting(rules, served):
    # 1.12 runs its queue after each job it kicks: the waiter gets the oldest buried job
    # (job 1), not the most urgent one kicked (job 2).
    h = harness(rules)
    producer, worker = h.open(), h.open()
    first, second = h.put(producer, pri=50), h.put(producer, pri=0)
    _bury(h, producer, first, 50)
    _bury(h, producer, second, 0)
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    (kicked,), events = h.batch([(Op.KICK, producer, h.next_seq(producer), 2)])
    assert kicked == ("KICKED", 2)
    assert events == [(worker, ("RESERVED", served, b"x"))]
    other = 3 - served
    assert h.stats_job(other)["state"] == "ready"


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_kick_of_delayed_jobs_with_a_worker_waiting(rules):
    # Delayed jobs are kicked earliest deadline first; under 1.12's order the waiter gets the
    # first one kicked even when a later one is more urgent.
    h = harness(rules)
    producer, worker = h.open(), h.open()
    late_urgent = h.put(producer, pri=0, delay=50)
    early = h.put(producer, pri=9, delay=30)
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    (kicked,), events = h.batch([(Op.KICK, producer, h.next_seq(producer), 2)])
    assert kicked == ("KICKED", 2)
    assert events == [(worker, ("RESERVED", early if rules >= 2 else late_urgent, b"x"))]


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_a_closing_session_hands_back_its_jobs_in_the_order_it_reserved_them(rules):
    h = harness(rules)
    holder, worker = h.open(), h.open()
    jobs = [h.put(holder, pri=pri) for pri in (5, 0, 3)]
    for job in (jobs[2], jobs[0], jobs[1]):  # reserved: 3, then 1, then 2
        assert h.cmd(holder, Op.RESERVE_JOB, job)[0] == "RESERVED"
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    (closed,), events = h.batch([(Op.CLOSE, holder, 0)])
    assert closed == ("OK",)
    # 1.12 gives the waiter the job reserved first (3); rules 1 gave the most urgent (2).
    assert events == [(worker, ("RESERVED", jobs[2] if rules >= 2 else jobs[1], b"x"))]


@pytest.mark.parametrize("rules, zero", [(1, ("TIMED_OUT",)), (2, ("DEADLINE_SOON",)),
                                         (3, ("DEADLINE_SOON",))])
def test_reserve_with_timeout_zero_inside_the_margin_with_a_ready_job_in_a_paused_tube(
        rules, zero):
    h = harness(rules)
    holder, producer = h.open(), h.open()
    h.put(holder, ttr=1)
    assert h.cmd(holder, Op.RESERVE, -1)[0] == "RESERVED"
    assert h.cmd(producer, Op.USE, "p")[0] == "USING"
    h.put(producer)
    assert h.cmd(producer, Op.PAUSE_TUBE, "p", 100 * S) == ("PAUSED",)
    assert h.cmd(holder, Op.WATCH, "p") == ("WATCHING", 2)
    assert h.cmd(holder, Op.RESERVE, 0) == zero
    assert h.cmd(holder, Op.RESERVE, 5 * S) == ("DEADLINE_SOON",)  # the same on both


def test_outside_the_margin_a_reserve_with_timeout_zero_times_out_under_both_rules():
    for rules in (1, 2, 3):
        h = harness(rules)
        holder, producer = h.open(), h.open()
        h.put(holder, ttr=60)
        assert h.cmd(holder, Op.RESERVE, -1)[0] == "RESERVED"
        assert h.cmd(producer, Op.USE, "p")[0] == "USING"
        h.put(producer)
        assert h.cmd(producer, Op.PAUSE_TUBE, "p", 100 * S) == ("PAUSED",)
        assert h.cmd(holder, Op.WATCH, "p") == ("WATCHING", 2)
        assert h.cmd(holder, Op.RESERVE, 0) == ("TIMED_OUT",)


def _holding_three(rules: int) -> tuple[Harness, int, list[int]]:
    h = harness(rules)
    holder = h.open()
    jobs = [h.put(holder, pri=pri) for pri in (5, 0, 3)]
    for job in (jobs[2], jobs[0], jobs[1]):
        assert h.cmd(holder, Op.RESERVE_JOB, job)[0] == "RESERVED"
    return h, holder, jobs


def test_a_rules_one_state_still_snapshots_as_version_three():
    # Nodes of the previous version read version 3 only; a cluster stays at rules 1 until
    # every member runs this code, so what they may be sent must stay version 3.
    h, _, _ = _holding_three(1)
    data = h.m.snapshot()
    assert data[0] == 3 and len(msgpack.unpackb(data[1:])) == 13


def test_a_rules_two_snapshot_keeps_the_rules_and_each_sessions_reservation_order():
    h, holder, jobs = _holding_three(2)
    data = h.m.snapshot()
    assert data[0] == 4
    restored = Machine.restore(data)
    assert restored.rules == 2
    assert list(restored.sessions[holder].reserved) == [jobs[2], jobs[0], jobs[1]]
    assert restored.digest() == h.m.digest()
    worker = (h.epoch << 32) | 99
    h.m = restored
    assert h.cmd(worker, Op.OPEN) == ("OK",)
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    _, events = h.batch([(Op.CLOSE, holder, 0)])
    assert events == [(worker, ("RESERVED", jobs[2], b"x"))]


def _rewrite(data: bytes, field: int, value) -> bytes:
    body = msgpack.unpackb(data[1:], raw=False)
    body[field] = value
    return data[:1] + msgpack.packb(body, use_bin_type=True)


def test_a_snapshot_of_rules_this_code_cannot_apply_is_refused_with_the_reason():
    h, _, _ = _holding_three(2)
    data = _rewrite(h.m.snapshot(), 13, RULES_SUPPORTED + 1)
    with pytest.raises(ValueError, match="run a newer version"):
        Machine.restore(data)


def test_a_reservation_order_naming_other_jobs_is_refused():
    h, holder, jobs = _holding_three(2)
    data = _rewrite(h.m.snapshot(), 14, [[holder, [jobs[0], jobs[1]]]])
    with pytest.raises(ValueError, match="reservation order"):
        Machine.restore(data)


def test_replay_and_snapshot_agree_across_the_switch():
    # Two replicas: one applies the whole log, the other restores a snapshot taken before the
    # switch and applies the rest. They must end in the same state.
    # The live replica holds the jobs in the order they were reserved (3, 1, 2), the restored
    # one in id order: the switch must leave both with the same order.
    h, holder, jobs = _holding_three(1)
    before = h.m.snapshot()
    worker = (h.epoch << 32) | 99
    rest = [(Op.RULES, 0, 0, 2), (Op.OPEN, worker, 0), (Op.RESERVE, worker, 0, -1),
            (Op.CLOSE, holder, 0)]
    replica = Machine.restore(before)
    _, events = h.batch(rest)
    _, replica_events = replica.apply_batch(h.now, rest)
    assert events == replica_events == [(worker, ("RESERVED", jobs[0], b"x"))]
    assert replica.digest() == h.m.digest() and replica.rules == 2
    assert snapshot.dump(replica)[0] == 4


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_a_touched_job_keeps_its_place_in_the_order_a_close_hands_jobs_back(rules):
    # 1.12 changes only the deadline of a touched job, not its place in the connection's list
    # of reserved jobs: the waiter still gets the job reserved first (rules 1: the most urgent).
    h, holder, jobs = _holding_three(rules)
    worker = h.open()
    assert h.cmd(holder, Op.TOUCH, jobs[2]) == ("TOUCHED",)
    assert list(h.m.sessions[holder].reserved) == [jobs[2], jobs[0], jobs[1]]
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    _, events = h.batch([(Op.CLOSE, holder, 0)])
    assert events == [(worker, ("RESERVED", jobs[2] if rules >= 2 else jobs[1], b"x"))]


def _holder_and_waiter(rules: int) -> tuple[Harness, int, int, int]:
    """A session holding one job, and a later session of the same node waiting in reserve."""
    h = harness(rules)
    holder, waiter = h.open(), h.open()
    job = h.put(holder)
    assert h.cmd(holder, Op.RESERVE, -1)[0] == "RESERVED"
    assert h.cmd(waiter, Op.SESSION_ID, "t" * 32)[0] == "SESSION"
    assert h.cmd(waiter, Op.RESERVE, -1) == ("WAITING",)
    return h, holder, waiter, job


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_a_node_start_hands_no_job_to_a_waiter_it_closes_too(rules):
    h, _, _, job = _holder_and_waiter(rules)
    (reply,), events = h.batch([(Op.NODE_START, 0, 0, "node-a")])
    assert reply[0] == "EPOCH" and events == []
    assert h.stats_job(job)["state"] == "ready" and h.stats_job(job)["reserves"] == 1


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_a_session_detached_by_register_is_not_handed_the_job_of_one_it_closes(rules):
    # The waiter holds a token, so REGISTER detaches it; its connection is gone, so nothing it
    # waited for may reach it: the holder's job goes back to ready, not to the detached session.
    h, _, waiter, job = _holder_and_waiter(rules)
    (reply,), events = h.batch([(Op.REGISTER, 0, 0, "node-a", 30 * S)])
    assert reply[0] == "EPOCH" and events == []
    assert h.m.sessions[waiter].reserved == {} and waiter in h.m.detached
    assert h.stats_job(job)["state"] == "ready" and h.stats_job(job)["reserves"] == 1


@pytest.mark.parametrize("rules", [1, 2, 3])
def test_a_restore_for_a_new_cluster_counts_no_reserve_for_the_sessions_it_ends(rules):
    h, _, _, job = _holder_and_waiter(rules)
    shifted, summary = restore.for_new_cluster(h.m.snapshot(), h.now)
    restored = Machine.restore(shifted)
    assert summary["reserved_released"] == 1 and summary["ready"] == 1
    assert dict(restored.stats_job(job, h.now))["reserves"] == 1
