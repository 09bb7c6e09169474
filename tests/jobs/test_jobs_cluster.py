"""Sessions, node epochs, exactly-once retries and rejected input follow the cluster rules.

Method: drive a Harness with explicit sids and seqs, including retried and malformed commands,
and check replies, the state digest (unchanged where nothing may change) and the invariants.
"""

from __future__ import annotations

from jobs_harness import S, Harness

from beanraft.jobs.commands import Op


def test_node_start_allocates_increasing_epochs():
    h = Harness(node="n1")
    assert h.epoch == 1
    assert h.start_node("n2") == 2
    assert h.start_node("n3") == 3


def test_open_needs_a_live_epoch():
    h = Harness()
    assert h.batch([(Op.OPEN, (7 << 32) | 1, 1)])[0] == [("GONE",)]
    assert h.batch([(Op.OPEN, 5, 1)])[0] == [("GONE",)]  # epoch 0 never exists
    assert h.m.sessions == {}


def test_sessions_of_one_epoch_may_open_in_any_order():
    h = Harness()
    late, early = (h.epoch << 32) | 9, (h.epoch << 32) | 3
    assert h.batch([(Op.OPEN, late, 1), (Op.OPEN, early, 1)])[0] == [("OK",), ("OK",)]
    assert h.m.sessions_of("node-a") == [early, late]


def test_commands_of_a_session_that_is_not_open_answer_gone():
    h = Harness()
    sid = (h.epoch << 32) | 1
    assert h.batch([(Op.PUT, sid, 1, 0, 0, S, b"x")])[0] == [("GONE",)]
    h.open()
    h.cmd(sid, Op.CLOSE)
    assert h.batch([(Op.USE, sid, 9, "t")])[0] == [("GONE",)]
    assert h.batch([(Op.CLOSE, sid, 10)])[0] == [("GONE",)]
    assert h.m.next_id == 1


def test_restarting_a_node_closes_its_old_sessions_and_frees_their_jobs_for_other_waiters():
    h = Harness(node="n1")
    worker = h.open()
    h.put(worker, ttr=100)
    h.cmd(worker, Op.RESERVE, 0)
    other_epoch = h.start_node("n2")
    waiter = h.open(other_epoch)
    h.cmd(waiter, Op.RESERVE, -1)
    _, events = h.batch([(Op.NODE_START, 0, 0, "n1")])
    assert events == [(waiter, ("RESERVED", 1, b"x"))]
    assert h.m.sessions_of("n1") == []
    assert h.m.sessions_of("n2") == [waiter]
    assert h.batch([(Op.TOUCH, worker, 99, 1)])[0] == [("GONE",)]
    assert h.batch([(Op.OPEN, (1 << 32) | 50, 1)])[0] == [("GONE",)]  # the old epoch is dead
    assert h.stats_job(1)["timeouts"] == 0


def test_dropping_a_node_closes_its_sessions_and_retires_its_epoch():
    h = Harness(node="n1")
    a, b = h.open(), h.open()
    h.put(a)
    h.cmd(b, Op.RESERVE, 0)
    h.cmd(a, Op.WATCH, "private")
    assert h.batch([(Op.DROP_NODE, 0, 0, "n1", h.epoch)])[0] == [("OK",)]
    assert h.m.sessions_of("n1") == []
    assert h.m.list_tubes() == ["default"]
    assert h.m.job_counts() == {"ready": 1, "reserved": 0, "delayed": 0, "buried": 0}
    assert h.batch([(Op.OPEN, (h.epoch << 32) | 77, 1)])[0] == [("GONE",)]
    assert h.batch([(Op.DROP_NODE, 0, 0, "never-seen", 1)])[0] == [("OK",)]


def test_a_drop_decided_before_the_node_registered_again_spares_its_new_sessions():
    h = Harness(node="n1")
    old_epoch = h.epoch
    [[reply], _] = h.batch([(Op.NODE_START, 0, 0, "n1")])
    new_epoch = reply[1]
    sid = (new_epoch << 32) | 1
    assert h.batch([(Op.OPEN, sid, 1)])[0] == [("OK",)]
    assert h.batch([(Op.DROP_NODE, 0, 0, "n1", old_epoch)])[0] == [("OK",)]
    assert h.m.sessions_of("n1") == [sid]


def test_a_retried_seq_returns_the_stored_reply_without_running_again():
    h = Harness()
    a = h.open()
    put = (Op.PUT, a, 2, 0, 0, S, b"once")
    assert h.batch([put, put])[0] == [("INSERTED", 1), ("INSERTED", 1)]
    digest = h.m.digest()
    assert h.batch([put])[0] == [("INSERTED", 1)]
    assert h.m.digest() == digest
    assert h.batch([(Op.OPEN, a, 1)])[0] == [("OK",)]  # a retried OPEN too
    assert h.batch([(Op.OPEN, a, 3)])[0] == [("ERROR", "session already open")]


def test_seq_zero_is_never_deduplicated():
    h = Harness()
    a = h.open()
    put = (Op.PUT, a, 0, 0, 0, S, b"x")
    assert h.batch([put, put])[0] == [("INSERTED", 1), ("INSERTED", 2)]


def test_the_reply_cache_keeps_the_last_64_and_refuses_older_seqs():
    h = Harness()
    a = h.open()  # seq 1
    for seq in range(2, 102):
        assert h.batch([(Op.PUT, a, seq, 0, 0, S, b"x")])[0] == [("INSERTED", seq - 1)]
    assert h.batch([(Op.PUT, a, 38, 0, 0, S, b"x")])[0] == [("INSERTED", 37)]
    assert h.batch([(Op.PUT, a, 37, 0, 0, S, b"x")])[0][0][0] == "ERROR"
    assert h.m.next_id == 101
    # A seq above the forgotten ones that was never applied is applied, even out of order.
    assert h.batch([(Op.PUT, a, 200, 0, 0, S, b"x")])[0] == [("INSERTED", 101)]
    assert h.batch([(Op.PUT, a, 150, 0, 0, S, b"x")])[0] == [("INSERTED", 102)]


def test_seqs_applied_out_of_order_are_still_forgotten_lowest_first():
    # A batch proposed again after later ones applies its seqs out of order; the cache still
    # forgets the lowest seq first, on every replica alike (the harness checks that the cache
    # stays in ascending order after every batch).
    h = Harness()
    a = h.open()  # seq 1
    kept, floor = {1}, 0
    for seq in [3, 2, 70, *range(5, 64), 4, *range(64, 70)]:
        assert h.batch([(Op.PUT, a, seq, 0, 0, S, b"x")])[0][0][0] == "INSERTED"
        kept.add(seq)
        if len(kept) > 64:
            floor = max(floor, min(kept))
            kept.remove(min(kept))
        session = h.m.sessions[a]
        assert list(session.replies) == sorted(kept) and session.seq_floor == floor
    assert floor == 6
    assert h.batch([(Op.PUT, a, 4, 0, 0, S, b"x")])[0][0][0] == "ERROR"  # forgotten
    jobs = h.m.next_id
    assert h.batch([(Op.PUT, a, 7, 0, 0, S, b"x")])[0][0][0] == "INSERTED"  # from the cache
    assert h.m.next_id == jobs


def test_a_retried_waiting_reserve_returns_its_outcome_once_known():
    h = Harness()
    a, b = h.open(), h.open()
    reserve = (Op.RESERVE, a, 2, -1)
    assert h.batch([reserve])[0] == [("WAITING",)]
    assert h.batch([reserve])[0] == [("WAITING",)]
    h.put(b, body=b"late")
    assert h.events[-1] == (a, ("RESERVED", 1, b"late"))
    assert h.batch([reserve])[0] == [("RESERVED", 1, b"late")]
    assert h.stats_job(1)["reserves"] == 1


def test_a_waiting_session_may_only_close():
    h = Harness()
    a = h.open()
    h.cmd(a, Op.RESERVE, -1)
    digest = h.m.digest()
    reply = h.cmd(a, Op.PUT, 0, 0, S, b"x")
    assert reply[0] == "ERROR"
    assert h.m.digest() == digest
    assert h.cmd(a, Op.CLOSE) == ("TIMED_OUT",)


def test_malformed_commands_answer_error_and_change_nothing():
    h = Harness(max_job_size=10)
    a = h.open()
    digest = h.m.digest()
    bad = [
        None, (), (Op.PUT,), [Op.TICK, 0], (99, a, 5), (Op.PUT, a, 5, 0, 0, S),
        (Op.PUT, a, 5, -1, 0, S, b"x"), (Op.PUT, a, 5, 2**32, 0, S, b"x"),
        (Op.PUT, a, 5, 0, -1, S, b"x"), (Op.PUT, a, 5, 0, 0, S, "text"),
        (Op.PUT, a, 5, True, 0, S, b"x"), (Op.PUT, a, 5, 0, 0, S, b"x" * 11),
        (Op.USE, a, 5, ""), (Op.USE, a, 5, "-x"), (Op.USE, a, 5, "a" * 201),
        (Op.USE, a, 5, "a b"), (Op.WATCH, a, 5, b"t"), (Op.RESERVE, a, 5, -2),
        (Op.RESERVE, a, 5, 1.5), (Op.DELETE, a, 5, -1), (Op.KICK, a, 5, "1"),
        (Op.PAUSE_TUBE, a, 5, "default", -1), (Op.NODE_START, 0, 0, ""),
        (Op.NODE_START, 0, 0, "has space"), (Op.OPEN, -1, 0), (Op.OPEN, a, -1),
        (Op.PUT, a, 5, 0, 0, S, bytearray(b"x")),
    ]
    replies, events = h.batch(bad)
    assert all(reply[0] == "ERROR" for reply in replies), replies
    assert events == []
    assert h.m.digest() == digest
    assert h.put(a, body=b"x" * 10) == 1  # the rejected oversized body consumed no id


def test_a_batch_with_a_bad_clock_is_refused_whole():
    h = Harness()
    a = h.open()
    replies, _ = h.m.apply_batch(-5, [(Op.PUT, a, 9, 0, 0, S, b"x")])
    assert replies[0][0] == "ERROR"
    assert h.m.apply_batch(1.5, "not a list") == ([], [])
    assert h.m.job_counts()["ready"] == 0


def test_a_long_tube_name_of_200_characters_is_accepted():
    h = Harness()
    a = h.open()
    name = "a+/;.$_()-" * 20
    assert h.cmd(a, Op.USE, name) == ("USING", name)
    assert h.cmd(a, Op.PAUSE_TUBE, name, (2**32 - 1) * S) == ("PAUSED",)
