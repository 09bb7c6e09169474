"""Goal: the admin commands of the state machine — PURGE_TUBE, MOVE_JOB, MOVE_BURIED and the
list_jobs query — do what jobs/admin.py says: reserved jobs are never purged or moved, moved
jobs keep id, priority, TTR, body, state and deadline, tubes are created and destroyed as with
put and delete, and a restored snapshot gives the same answers.

Method: examples through the ``Harness``, which checks every invariant of the machine (gauges,
heaps, timers) after each batch.
"""

from __future__ import annotations

from jobs_harness import Harness

from beanraft.jobs.commands import Op
from beanraft.jobs.machine import Machine


def filled() -> tuple[Harness, int, dict[str, list[int]]]:
    """Tube t with two ready, one delayed (10 s), two buried and one reserved job."""
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "t")
    h.cmd(a, Op.WATCH, "t")
    h.cmd(a, Op.IGNORE, "default")
    ids = {"ready": [h.put(a, b"r1", pri=5), h.put(a, b"r2", pri=1)],
           "delayed": [h.put(a, b"d", delay=10)]}
    buried = [h.put(a, b"b1"), h.put(a, b"b2")]
    reserved = h.put(a, b"held", pri=0)
    # reserve the three most urgent (pri 0: the buried-to-be and the held one) in id order
    for job_id in buried + [reserved]:
        assert h.cmd(a, Op.RESERVE_JOB, job_id)[0] == "RESERVED"
    for job_id in buried:
        assert h.cmd(a, Op.BURY, job_id, 7) == ("BURIED",)
    ids["buried"], ids["reserved"] = buried, [reserved]
    return h, a, ids


def states(h: Harness, tube: str) -> dict[str, list[int]]:
    records = h.m.list_jobs(tube, "all", 0, 1000, h.now) or []
    out: dict[str, list[int]] = {}
    for record in records:
        fields = dict(record)
        out.setdefault(fields["state"], []).append(fields["id"])
    return out


def test_purge_deletes_the_jobs_of_one_state_and_answers_the_count():
    h, a, ids = filled()
    assert h.cmd(a, Op.PURGE_TUBE, "t", "buried") == ("PURGED", 2)
    assert states(h, "t") == {"ready": ids["ready"], "delayed": ids["delayed"],
                              "reserved": ids["reserved"]}
    assert h.stats_tube("t")["cmd-delete"] == 2
    assert h.cmd(a, Op.PURGE_TUBE, "t", "buried") == ("PURGED", 0)


def test_purge_all_never_touches_a_reserved_job():
    h, a, ids = filled()
    assert h.cmd(a, Op.PURGE_TUBE, "t", "all") == ("PURGED", 5)
    assert states(h, "t") == {"reserved": ids["reserved"]}
    assert h.cmd(a, Op.DELETE, ids["reserved"][0]) == ("DELETED",)


def test_purging_the_last_jobs_of_an_unreferenced_tube_destroys_it():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "gone")
    h.put(a), h.put(a, delay=5)
    h.cmd(a, Op.USE, "default")
    assert h.cmd(a, Op.PURGE_TUBE, "gone", "all") == ("PURGED", 2)
    assert "gone" not in h.m.tubes
    assert h.cmd(a, Op.PURGE_TUBE, "gone", "all") == ("NOT_FOUND",)


def test_a_purged_delayed_job_never_fires_its_timer():
    h, a, ids = filled()
    assert h.cmd(a, Op.PURGE_TUBE, "t", "delayed") == ("PURGED", 1)
    h.advance(20)
    assert states(h, "t").get("ready") == ids["ready"]


def test_move_job_keeps_id_priority_ttr_body_and_a_delayed_jobs_deadline():
    h, a, ids = filled()
    delayed = ids["delayed"][0]
    h.advance(4)  # 6 s of its 10 s delay left: a move must not restart the delay
    before = h.stats_job(delayed)
    assert h.cmd(a, Op.MOVE_JOB, delayed, "other") == ("MOVED", 1)
    after = h.stats_job(delayed)
    assert after["tube"] == "other" and after["state"] == "delayed"
    for field in ("id", "pri", "ttr", "time-left", "delay", "age", "reserves"):
        assert after[field] == before[field], field
    assert h.m.peek(delayed) == ("FOUND", delayed, b"d")
    h.advance(5)
    assert h.stats_job(delayed)["state"] == "delayed"
    h.advance(1)
    assert h.stats_job(delayed)["state"] == "ready"
    assert h.stats_tube("other")["total-jobs"] == 0  # moved, not put


def test_a_moved_ready_job_is_reserved_from_its_new_tube():
    h, a, ids = filled()
    w = h.open()
    h.cmd(w, Op.WATCH, "dest")
    h.cmd(w, Op.IGNORE, "default")
    assert h.cmd(w, Op.RESERVE, -1) == ("WAITING",)
    assert h.cmd(a, Op.MOVE_JOB, ids["ready"][0], "dest") == ("MOVED", 1)
    assert h.events[-1] == (w, ("RESERVED", ids["ready"][0], b"r1"))


def test_move_job_refuses_a_reserved_or_missing_job_and_ignores_its_own_tube():
    h, a, ids = filled()
    assert h.cmd(a, Op.MOVE_JOB, ids["reserved"][0], "x") == ("NOT_FOUND",)
    assert h.cmd(a, Op.MOVE_JOB, 999, "x") == ("NOT_FOUND",)
    assert h.cmd(a, Op.MOVE_JOB, ids["ready"][0], "t") == ("MOVED", 0)
    assert "x" not in h.m.tubes


def test_move_buried_keeps_the_burial_order_and_appends_to_the_target():
    h, a, ids = filled()
    b = h.open()
    h.cmd(b, Op.USE, "dest")
    older = h.put(b, b"o")
    assert h.cmd(b, Op.RESERVE_JOB, older)[0] == "RESERVED"
    assert h.cmd(b, Op.BURY, older, 0) == ("BURIED",)
    assert h.cmd(a, Op.MOVE_BURIED, "t", "dest") == ("MOVED", 2)
    assert list(h.m.tubes["dest"].buried) == [older] + ids["buried"]
    assert h.m.peek_buried(b) == ("FOUND", older, b"o")
    assert h.cmd(a, Op.MOVE_BURIED, "t", "dest") == ("MOVED", 0)
    assert h.cmd(a, Op.MOVE_BURIED, "nosuch", "dest") == ("NOT_FOUND",)
    assert h.stats_job(ids["buried"][0])["pri"] == 7


def test_moving_the_last_job_out_of_an_unreferenced_tube_destroys_it():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "src")
    job = h.put(a)
    h.cmd(a, Op.USE, "default")
    assert h.cmd(a, Op.MOVE_JOB, job, "dst") == ("MOVED", 1)
    assert "src" not in h.m.tubes and "dst" in h.m.tubes


def test_list_jobs_pages_in_id_order_and_shows_age_and_size():
    h, a, ids = filled()
    h.advance(3)
    everything = sorted(sum(ids.values(), []))
    page1 = h.m.list_jobs("t", "all", 0, 4, h.now)
    page2 = h.m.list_jobs("t", "all", 4, 4, h.now)
    assert [dict(r)["id"] for r in page1 + page2] == everything
    assert dict(page1[0]) == {"id": ids["ready"][0], "state": "ready", "pri": 5, "age": 3,
                              "size": 2}
    assert [dict(r)["id"] for r in h.m.list_jobs("t", "reserved", 0, 10, h.now)] == ids["reserved"]
    assert h.m.list_jobs("t", "ready", 2, 10, h.now) == []
    assert h.m.list_jobs("nosuch", "all", 0, 10, h.now) is None


def test_a_restored_snapshot_answers_the_admin_commands_alike():
    h, a, ids = filled()
    copy = Machine.restore(h.m.snapshot())
    command = (Op.MOVE_BURIED, a, 100, "t", "u")
    purge = (Op.PURGE_TUBE, a, 101, "t", "all")
    replies, _ = h.m.apply_batch(h.now, [command, purge])
    copied, _ = copy.apply_batch(h.now, [command, purge])
    assert replies == copied == [("MOVED", 2), ("PURGED", 3)]
    assert h.m.digest() == copy.digest()


def test_malformed_admin_commands_change_nothing():
    h, a, _ = filled()
    digest = h.m.digest()
    for command in ((Op.PURGE_TUBE, "t", "reserved"), (Op.PURGE_TUBE, "-t", "all"),
                    (Op.MOVE_JOB, -1, "x"), (Op.MOVE_JOB, 1, ""), (Op.MOVE_BURIED, "t")):
        assert h.cmd(a, *command)[0] == "ERROR"
    assert h.m.digest() == digest
