"""Goal: IMPORT_JOB creates a job directly in the state it names (ready, delayed or buried)
in one command, so a buried job is never reservable, and a key the dedup table remembers
creates nothing the second time (``EXISTS``), across a snapshot too.

Method: examples through the ``Harness``, which checks every invariant after each batch; a
worker blocked in reserve on the tube shows whether an imported job was ever ready.
"""

from __future__ import annotations

from jobs_harness import S, Harness

from beanraft.jobs.commands import Op
from beanraft.jobs.machine import Machine

WINDOW, CAP = 600 * S, 1000


def imported(h: Harness, sid: int, key: str, state: str, pri: int = 5, delay: int = 0,
             ttr: int = 7, body: bytes = b"x") -> tuple:
    return h.cmd(sid, Op.IMPORT_JOB, key, WINDOW, CAP, state, pri, delay * S, ttr * S, body)


def test_imported_jobs_are_created_in_their_state_in_the_used_tube():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "mail")
    ready = imported(h, a, "binlog:1.1", "ready", pri=3, ttr=9, body=b"r")
    delayed = imported(h, a, "binlog:2.1", "delayed", delay=30)
    buried = imported(h, a, "binlog:3.1", "buried", pri=70)
    assert ready == ("INSERTED", 1) and delayed == ("INSERTED", 2) and buried == ("INSERTED", 3)
    assert {k: h.stats_job(1)[k] for k in ("tube", "state", "pri", "ttr")} == \
        {"tube": "mail", "state": "ready", "pri": 3, "ttr": 9}
    assert h.stats_job(2)["state"] == "delayed" and h.stats_job(2)["time-left"] == 30
    assert h.stats_job(3)["state"] == "buried" and h.stats_job(3)["pri"] == 70
    tube = h.stats_tube("mail")
    assert (tube["current-jobs-ready"], tube["current-jobs-delayed"],
            tube["current-jobs-buried"], tube["total-jobs"]) == (1, 1, 1, 3)
    h.advance(30)
    assert h.stats_job(2)["state"] == "ready"


def test_a_waiting_worker_never_gets_an_imported_buried_job():
    h = Harness()
    worker, importer = h.open(), h.open()
    h.cmd(worker, Op.WATCH, "t")
    assert h.cmd(worker, Op.RESERVE, -1) == ("WAITING",)
    h.cmd(importer, Op.USE, "t")
    (reply,), events = h.batch([(Op.IMPORT_JOB, importer, h.next_seq(importer), "k:1", WINDOW,
                                 CAP, "buried", 0, 0, S, b"b")])
    assert reply == ("INSERTED", 1) and events == []
    assert h.stats_job(1)["state"] == "buried" and h.stats_job(1)["reserves"] == 0
    assert h.cmd(importer, Op.KICK, 1) == ("KICKED", 1)
    assert h.stats_job(1)["state"] == "reserved"  # handed to the waiting worker once kicked


def test_a_remembered_key_creates_nothing_even_after_a_snapshot_or_a_delete():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "t")
    assert imported(h, a, "binlog:9.5", "buried") == ("INSERTED", 1)
    assert imported(h, a, "binlog:9.5", "ready", body=b"other") == ("EXISTS", 1)
    assert h.cmd(a, Op.KICK_JOB, 1) == ("KICKED",)
    assert h.cmd(a, Op.DELETE, 1) in (("DELETED",), ("NOT_FOUND",))
    copy = Machine.restore(h.m.snapshot())
    assert copy.snapshot() == h.m.snapshot()
    h.m = copy
    assert imported(h, a, "binlog:9.5", "ready") == ("EXISTS", 1)
    assert h.stats_tube("t") is None or h.stats_tube("t")["total-jobs"] == 1


def test_import_job_with_a_malformed_state_or_an_oversized_body_changes_nothing():
    h = Harness(max_job_size=4)
    a = h.open()
    before = h.m.snapshot()
    assert imported(h, a, "k", "reserved")[0] == "ERROR"
    assert imported(h, a, "k", "ready", body=b"12345") == ("ERROR", "JOB_TOO_BIG")
    assert h.m.snapshot() == before
