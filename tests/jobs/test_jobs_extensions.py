"""Goal: the state machine's extensions — session tokens, RESUME and keyed puts — do what
jobs/extensions.py says, deterministically, and survive snapshots.

Method: examples through the ``Harness`` (which checks every invariant after each batch); then
hypothesis drives random mixes of keyed puts, deletes, resumes, closes and clock steps through
two machines, one of them snapshotted and restored at a random point, and compares their replies,
events and digests with each other and the keyed puts' replies with a deliberately dumb model
(a list of [key, id, expiry] rows scanned linearly).
"""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from jobs_harness import S, T0, Harness

from beanraft.jobs.commands import Op
from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine

WINDOW = 600 * S
CAP = 1000


def put_key(h: Harness, sid: int, key: str, window: int = WINDOW, cap: int = CAP,
            body: bytes = b"x", ttr: int = 60 * S) -> tuple:
    return h.cmd(sid, Op.PUT_KEY, key, window, cap, 0, 0, ttr, body)


# --------------------------------------------------------------------------- session tokens


def test_a_session_keeps_the_first_token_it_was_given():
    h = Harness()
    a = h.open()
    assert h.cmd(a, Op.SESSION_ID, "tok-a") == ("SESSION", "tok-a")
    assert h.cmd(a, Op.SESSION_ID, "tok-b") == ("SESSION", "tok-a")
    assert h.m.tokens == {"tok-a": a}


def test_a_token_cannot_name_two_sessions():
    h = Harness()
    a, b = h.open(), h.open()
    h.cmd(a, Op.SESSION_ID, "tok")
    assert h.cmd(b, Op.SESSION_ID, "tok")[0] == "ERROR"
    assert h.m.sessions[b].token is None


def test_a_token_is_forgotten_when_its_session_ends_in_any_way():
    h = Harness()
    a, b = h.open(), h.open()
    h.cmd(a, Op.SESSION_ID, "tok-a")
    h.cmd(b, Op.SESSION_ID, "tok-b")
    h.cmd(a, Op.CLOSE)
    assert h.m.tokens == {"tok-b": b}
    h.start_node("node-a")  # the node restarted: its sessions end
    assert h.m.tokens == {}
    c = h.open(epoch=h.start_node("node-b"))
    assert h.cmd(c, Op.RESUME, "tok-b") == ("NOT_FOUND",)


def test_malformed_tokens_are_refused_without_a_change():
    h = Harness()
    a = h.open()
    for token in ("", "a b", "x" * 65, 5, "é"):
        assert h.cmd(a, Op.SESSION_ID, token)[0] == "ERROR"
    assert h.m.tokens == {}


# --------------------------------------------------------------------------- resume


def test_resume_moves_the_reservations_with_their_deadlines_and_ends_the_old_session():
    h = Harness()
    old, new = h.open(), h.open()
    h.cmd(old, Op.SESSION_ID, "tok")
    first, second, third = h.put(old, ttr=10), h.put(old, ttr=20), h.put(old)
    h.cmd(old, Op.RESERVE, 0)
    h.cmd(old, Op.RESERVE, 0)
    h.advance(4)
    before = [h.stats_job(j)["time-left"] for j in (first, second)]
    replies, events = h.batch([(Op.RESUME, new, h.next_seq(new), "tok")])
    assert replies == [("RESUMED", [first, second])]
    assert events == [(old, ("GONE",))]
    assert [h.stats_job(j)["time-left"] for j in (first, second)] == before
    assert [h.stats_job(j)["reserves"] for j in (first, second)] == [1, 1]
    assert old not in h.m.sessions and h.m.tokens == {"tok": new}
    assert h.cmd(old, Op.DELETE, first) == ("GONE",)
    assert h.cmd(new, Op.DELETE, first) == ("DELETED",)
    assert h.cmd(new, Op.SESSION_ID, "other") == ("SESSION", "tok")
    # The TTR ends when it would have: six seconds after the resume, not twenty.
    assert h.stats_job(second)["state"] == "reserved"
    h.advance(16, ns=1)
    assert h.stats_job(second)["state"] == "ready"
    assert h.stats_job(second)["timeouts"] == 1
    assert h.stats_job(third)["state"] == "ready"


def test_a_resumed_session_can_be_resumed_again_under_the_same_token():
    h = Harness()
    a, b = h.open(), h.open()
    h.cmd(a, Op.SESSION_ID, "tok")
    job = h.put(a)
    h.cmd(a, Op.RESERVE, 0)
    h.cmd(b, Op.SESSION_ID, "tok-b")
    assert h.cmd(b, Op.RESUME, "tok") == ("RESUMED", [job])
    assert h.m.tokens == {"tok": b}  # b's own token is forgotten
    c = h.open(epoch=h.start_node("node-b"))
    assert h.cmd(c, Op.RESUME, "tok-b") == ("NOT_FOUND",)
    assert h.cmd(c, Op.RESUME, "tok") == ("RESUMED", [job])
    assert h.cmd(c, Op.RESUME, "tok") == ("RESUMED", [job])  # its own token: nothing changes


def test_resume_merges_with_what_the_resuming_session_already_holds_and_keeps_its_tubes():
    h = Harness()
    old, new = h.open(), h.open()
    h.cmd(old, Op.SESSION_ID, "tok")
    h.cmd(old, Op.WATCH, "t")
    mine = h.put(new)
    h.cmd(new, Op.RESERVE, 0)
    h.cmd(new, Op.USE, "u")
    h.cmd(old, Op.USE, "t")
    theirs = h.put(old)
    h.cmd(old, Op.RESERVE, 0)
    assert h.cmd(new, Op.RESUME, "tok") == ("RESUMED", [mine, theirs])
    assert h.m.list_tube_used(new) == "u"
    assert h.m.list_tubes_watched(new) == ["default"]


def test_resuming_a_session_that_waits_in_reserve_ends_its_wait_without_a_reply():
    h = Harness()
    old, new, producer = h.open(), h.open(), h.open()
    h.cmd(old, Op.SESSION_ID, "tok")
    assert h.cmd(old, Op.RESERVE, -1) == ("WAITING",)
    _, events = h.batch([(Op.RESUME, new, h.next_seq(new), "tok")])
    assert events == [(old, ("GONE",))]
    job = h.put(producer)
    assert h.stats_job(job)["state"] == "ready"  # nobody waits for it any more
    assert h.m.waiting == {}


def test_a_lost_reserved_reply_is_reported_by_resume():
    # The job was reserved to the session whose node died before the reply left it.
    h = Harness()
    old, new = h.open(), h.open(epoch=h.start_node("node-b"))
    h.cmd(old, Op.SESSION_ID, "tok")
    job = h.put(old)
    assert h.cmd(old, Op.RESERVE, 0)[0] == "RESERVED"
    assert h.cmd(new, Op.RESUME, "tok") == ("RESUMED", [job])


def test_a_session_that_is_not_resumed_within_the_grace_releases_its_jobs_as_before():
    h = Harness()
    old = h.open()
    epoch_a = h.epoch
    h.cmd(old, Op.SESSION_ID, "tok")
    job = h.put(old)
    h.cmd(old, Op.RESERVE, 0)
    h.batch([(Op.DROP_NODE, 0, 0, "node-a", epoch_a)])
    assert h.stats_job(job)["state"] == "ready"
    new = h.open(epoch=h.start_node("node-b"))
    assert h.cmd(new, Op.RESUME, "tok") == ("NOT_FOUND",)


# --------------------------------------------------------------------------- keyed puts


def test_a_key_committed_again_within_the_window_answers_the_first_id_and_creates_nothing():
    h = Harness()
    a, b = h.open(), h.open()
    assert put_key(h, a, "k1", body=b"first") == ("INSERTED", 1)
    assert put_key(h, b, "k1", body=b"second") == ("INSERTED", 1)
    assert put_key(h, a, "k2") == ("INSERTED", 2)
    assert h.m.total_jobs == 2 and h.m.peek(1) == ("FOUND", 1, b"first")
    assert h.cmd(a, Op.DELETE, 1) == ("DELETED",)
    assert put_key(h, b, "k1") == ("INSERTED", 1)
    assert h.m.peek(1) == ("NOT_FOUND",) and h.m.total_jobs == 2


def test_a_key_is_forgotten_once_its_window_has_passed_and_a_duplicate_does_not_extend_it():
    h = Harness()
    a = h.open()
    assert put_key(h, a, "k", window=10 * S) == ("INSERTED", 1)
    h.advance(9)
    assert put_key(h, a, "k", window=10 * S) == ("INSERTED", 1)
    h.advance(0, ns=S - 1)
    assert put_key(h, a, "k", window=10 * S) == ("INSERTED", 1)  # 1 ns before the end
    h.advance(0, ns=1)
    assert put_key(h, a, "k", window=10 * S) == ("INSERTED", 2)
    assert list(h.m.dedup) == ["k"]


def test_expired_keys_are_reclaimed_oldest_first_at_the_next_keyed_put():
    h = Harness()
    a = h.open()
    for index in range(5):
        put_key(h, a, f"k{index}", window=10 * S)
        h.advance(1)
    h.advance(7)  # at +12 s, k0..k2 (committed at +0, +1, +2 s) have expired
    assert len(h.m.dedup) == 5
    put_key(h, a, "new", window=10 * S)
    assert list(h.m.dedup) == ["k3", "k4", "new"]


def test_the_cap_forgets_the_oldest_keys_first():
    h = Harness()
    a = h.open()
    for index in range(5):
        put_key(h, a, f"k{index}", cap=3)
    assert list(h.m.dedup) == ["k2", "k3", "k4"]
    assert put_key(h, a, "k0", cap=3) == ("INSERTED", 6)  # forgotten: a new job
    assert put_key(h, a, "k3", cap=3) == ("INSERTED", 4)
    assert list(h.m.dedup) == ["k3", "k4", "k0"]


def test_window_and_cap_travel_in_the_command_so_mixed_settings_still_agree():
    h = Harness()
    a = h.open()
    put_key(h, a, "long", window=100 * S)
    put_key(h, a, "short", window=2 * S)
    h.advance(3)
    put_key(h, a, "other", window=100 * S)
    assert "short" in h.m.dedup  # behind an unexpired key: kept until reclaimed...
    assert put_key(h, a, "short", window=100 * S) == ("INSERTED", 4)  # ...but never answered
    assert list(h.m.dedup) == ["long", "other", "short"]


def test_malformed_keyed_puts_are_refused_without_a_change():
    h = Harness(max_job_size=4)
    a = h.open()
    for key in ("", "a b", "k/1", "k" * 65, 7):
        assert put_key(h, a, key)[0] == "ERROR"
    assert h.cmd(a, Op.PUT_KEY, "k", -1, 5, 0, 0, S, b"x")[0] == "ERROR"
    assert h.cmd(a, Op.PUT_KEY, "k", S, 2**32, 0, 0, S, b"x")[0] == "ERROR"
    assert put_key(h, a, "k", body=b"12345") == ("ERROR", "JOB_TOO_BIG")
    assert h.m.dedup == {} and h.m.next_id == 1


# --------------------------------------------------------------------------- snapshots


def busy_harness() -> Harness:
    h = Harness()
    a, b = h.open(), h.open()
    h.cmd(a, Op.SESSION_ID, "tok-a")
    for index in range(4):
        put_key(h, b, f"key:{index}", window=(index + 1) * 10 * S)
    h.cmd(a, Op.RESERVE, 0)
    h.advance(15)
    return h


def test_a_snapshot_keeps_tokens_and_keys_and_the_restored_machine_behaves_the_same():
    h = busy_harness()
    restored = Machine.restore(h.m.snapshot())
    assert problems(restored) == []
    assert restored.snapshot() == h.m.snapshot()
    assert restored.tokens == h.m.tokens and restored.dedup == h.m.dedup
    c = (h.epoch << 32) | 99
    batch = [(Op.OPEN, c, 1), (Op.PUT_KEY, c, 2, "key:3", S, 10, 0, 0, S, b"y"),
             (Op.PUT_KEY, c, 3, "key:0", S, 10, 0, 0, S, b"y"), (Op.RESUME, c, 4, "tok-a")]
    assert restored.apply_batch(h.now, batch) == h.m.apply_batch(h.now, batch)
    assert restored.digest() == h.m.digest()


def test_a_version_1_snapshot_still_restores_without_tokens_or_keys():
    h = Harness()
    a = h.open()
    h.put(a)
    h.cmd(a, Op.RESERVE, 0)
    body = list(msgpack.unpackb(h.m.snapshot()[1:], use_list=True))
    assert body.pop() == []  # no detached session
    restored = Machine.restore(b"\x02" + msgpack.packb(body, use_bin_type=True))
    assert restored.digest() == h.m.digest()
    assert body.pop() == []  # no keys
    for record in body[8]:
        assert record.pop() is None  # no token
    restored = Machine.restore(b"\x01" + msgpack.packb(body, use_bin_type=True))
    assert restored.digest() == h.m.digest()


# --------------------------------------------------------------------------- detached sessions


def register(h: Harness, node: str, grace_s: float) -> int:
    (reply,), _ = h.batch([(Op.REGISTER, 0, 0, node, int(grace_s * S))])
    assert reply[0] == "EPOCH"
    return reply[1]


def test_a_restarted_nodes_resumable_sessions_outlive_it_for_the_grace_then_end():
    h = Harness()
    worker, plain, waiter = h.open(), h.open(), h.open()
    h.cmd(worker, Op.SESSION_ID, "tok-w")
    h.cmd(waiter, Op.SESSION_ID, "tok-x")
    held, other = h.put(worker, ttr=100), h.put(worker, ttr=100)
    assert h.cmd(worker, Op.RESERVE, 0)[1] == held
    assert h.cmd(plain, Op.RESERVE, 0)[1] == other
    assert h.cmd(waiter, Op.RESERVE, -1) == ("WAITING",)
    epoch = register(h, "node-a", grace_s=5)  # the node came back before anyone resumed
    assert h.stats_job(held)["state"] == "reserved"  # kept for the grace...
    assert h.stats_job(other)["state"] == "ready"  # ...a session without a token has no one
    assert h.cmd(worker, Op.DELETE, held) == ("GONE",)  # no connection carries it any more
    assert not h.m.waiting  # the detached waiter's reserve is dropped
    assert h.m.snapshot() == Machine.restore(h.m.snapshot()).snapshot()
    h.advance(4.9)
    c = h.open(epoch=epoch)
    assert h.cmd(c, Op.RESUME, "tok-w") == ("RESUMED", [held])
    assert h.stats_job(held)["reserves"] == 1 and h.stats_job(held)["time-left"] == 95
    h.advance(1)  # past the grace: the session nobody resumed ends, the resumed one stays
    assert h.m.tokens == {"tok-w": c} and worker not in h.m.sessions and not h.m.detached
    assert h.cmd(c, Op.DELETE, held) == ("DELETED",)


def test_a_detached_session_not_resumed_releases_its_jobs_at_the_end_of_its_grace():
    h = Harness()
    worker = h.open()
    h.cmd(worker, Op.SESSION_ID, "tok-w")
    job = h.put(worker, ttr=100)
    h.cmd(worker, Op.RESERVE, 0)
    epoch = register(h, "node-a", grace_s=2)
    restored = Machine.restore(h.m.snapshot())
    h.advance(ns=2 * S - 1)
    assert h.stats_job(job)["state"] == "reserved"
    h.advance(ns=1)  # the grace is over
    assert h.stats_job(job)["state"] == "ready" and h.m.tokens == {}
    c = h.open(epoch=epoch)
    assert h.cmd(c, Op.RESUME, "tok-w") == ("NOT_FOUND",)
    restored.apply_batch(h.now, [(Op.TICK, 0, 0)])  # the timer survived the snapshot
    assert dict(restored.stats_job(job, h.now))["state"] == "ready" and not restored.detached


# --------------------------------------------------------------------------- properties

KEYS = ["a", "b", "c", "d", "e"]
steps = st.lists(st.one_of(
    st.tuples(st.just("put_key"), st.integers(0, 2), st.sampled_from(KEYS),
              st.sampled_from([S, 5 * S, 60 * S]), st.integers(0, 4)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.integers(1, 12)),
    st.tuples(st.just("reserve"), st.integers(0, 2)),
    st.tuples(st.just("session_id"), st.integers(0, 2)),
    st.tuples(st.just("resume"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("close"), st.integers(0, 2)),
    st.tuples(st.just("wait"), st.sampled_from([0, 1, S, 3 * S])),
), max_size=40)


def to_batches(program: list) -> list[tuple[int, list]]:
    """Turns the drawn steps into (now, commands) batches over three session slots.

    A slot whose session ends (CLOSE, or taken over by a RESUME) gets a fresh session at once.
    """
    now, seqs, out = T0, {}, [(T0, [(Op.NODE_START, 0, 0, "n")])]
    slots: list[int] = []
    held: dict[int, str] = {}  # sid -> the token its session holds

    def fresh(slot: int) -> tuple:
        sid = (1 << 32) | (len(seqs) + 1)
        seqs[sid] = 1
        if slot == len(slots):
            slots.append(sid)
        slots[slot] = sid
        return (Op.OPEN, sid, 1)

    out.append((now, [fresh(slot) for slot in range(3)]))
    for step in program:
        if step[0] == "wait":
            now += step[1]
            out.append((now, [(Op.TICK, 0, 0)]))
            continue
        slot, kind = step[1], step[0]
        sid = slots[slot]
        seqs[sid] += 1
        seq = seqs[sid]
        if kind == "close":
            held.pop(sid, None)
            commands = [(Op.CLOSE, sid, seq), fresh(slot)]
        elif kind == "put_key":
            commands = [(Op.PUT_KEY, sid, seq, step[2], step[3], step[4], 0, 0, S, b"b")]
        elif kind == "delete":
            commands = [(Op.DELETE, sid, seq, step[2])]
        elif kind == "reserve":
            commands = [(Op.RESERVE, sid, seq, 0)]
        elif kind == "session_id":
            held.setdefault(sid, f"t{sid}")
            commands = [(Op.SESSION_ID, sid, seq, f"t{sid}")]
        else:
            target = slots[step[2]]
            token = held.get(target, f"t{target}")
            commands = [(Op.RESUME, sid, seq, token)]
            if target in held and target != sid:
                held.pop(target)
                held[sid] = token
                commands.append(fresh(step[2]))
        out.append((now, commands))
    return out


def model_replies(batches: list) -> list[tuple]:
    """What every PUT_KEY must answer, from a list of [key, id, expiry] rows kept oldest first."""
    rows, next_id, answers = [], 1, []
    for now, commands in batches:
        for command in commands:
            if command[0] != Op.PUT_KEY:
                continue
            key, window, cap = command[3:6]
            rows = [row for row in rows if row[2] > now]
            found = [row for row in rows if row[0] == key]
            if found:
                answers.append(("INSERTED", found[0][1]))
                continue
            rows.append([key, next_id, now + window])
            answers.append(("INSERTED", next_id))
            next_id += 1
            rows = rows[max(0, len(rows) - cap):]
    return answers


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(0, 60))
def test_random_programs_agree_across_machines_snapshots_and_the_model(program, cut_at):
    batches = to_batches(program)
    cut = min(cut_at, len(batches))
    one, two = Machine(), Machine()
    first = [one.apply_batch(now, commands) for now, commands in batches]
    for now, commands in batches[:cut]:
        two.apply_batch(now, commands)
    two = Machine.restore(two.snapshot())
    second = first[:cut] + [two.apply_batch(now, commands) for now, commands in batches[cut:]]
    assert first == second
    assert one.digest() == two.digest()
    assert problems(one) == [] and problems(two) == []
    keyed = [reply for (now, commands), (replies, _) in zip(batches, first)
             for command, reply in zip(commands, replies) if command[0] == Op.PUT_KEY]
    assert keyed == model_replies(batches)


def test_a_restore_for_a_new_cluster_ends_detached_sessions_too():
    from beanraft.jobs.restore import for_new_cluster

    h = Harness()
    worker = h.open()
    h.cmd(worker, Op.SESSION_ID, "tok-w")
    job = h.put(worker)
    h.cmd(worker, Op.RESERVE, 0)
    register(h, "node-a", grace_s=5)
    data, summary = for_new_cluster(h.m.snapshot(), h.now + 3600 * S)
    after = Machine.restore(data)
    assert problems(after) == []
    assert not after.sessions and not after.detached and not after.tokens
    assert after.jobs[job].state == "ready" and summary["reserved_released"] == 1
