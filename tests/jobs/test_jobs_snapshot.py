"""Replicas agree: same batches give the same replies, events and digest, across snapshots too.

Method: a seeded random workload (two nodes, several sessions, every command, uneven time steps)
is applied to independent machines, to a machine restored from a snapshot taken midway, and in
child processes with different hash seeds; snapshots are checked for canonical bytes, version
handling, corruption and speed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from jobs_harness import S, T0, Harness

from beanraft.jobs.commands import RULES_SUPPORTED, Op
from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine

TUBES = ["default", "a", "b", "c"]


def workload(seed: int, batches: int = 150, rules: int = 1) -> list[tuple[int, list]]:
    """A reproducible list of ``(now_ns, commands)`` batches exercising every command, under
    rules version ``rules`` from the first batch.

    It tracks what the machine will do with sessions — NODE_START number k returns epoch k and
    closes that node's sessions — so closed sessions are replaced by newly opened ones.
    """
    rng = random.Random(seed)
    now, out = T0, []
    epochs = {"n1": 1, "n2": 2}
    switch = [(Op.RULES, 0, 0, rules)] if rules > 1 else []
    out.append((now, switch + [(Op.NODE_START, 0, 0, "n1"), (Op.NODE_START, 0, 0, "n2")]))
    sessions = {}  # sid -> [node, seq]
    counter = 0
    for _ in range(batches):
        now += rng.choice([0, 0, 1, S // 3, S, 2 * S + 1])
        commands = []
        while len(sessions) < 5:
            counter += 1
            node = rng.choice(["n1", "n2"])
            sid = (epochs[node] << 32) | counter
            sessions[sid] = [node, 1]
            commands.append((Op.OPEN, sid, 1))
        for _ in range(rng.randint(0, 4)):
            sid = rng.choice(sorted(sessions))
            sessions[sid][1] += 1
            op, *args = _random_command(rng)
            commands.append((op, sid, sessions[sid][1], *args))
            if op == Op.CLOSE:
                del sessions[sid]
        if rng.random() < 0.03:
            node = rng.choice(["n1", "n2"])
            epochs[node] = max(epochs.values()) + 1
            commands.append((Op.NODE_START, 0, 0, node))
            sessions = {sid: v for sid, v in sessions.items() if v[0] != node}
        out.append((now, commands))
    return out


def _random_command(rng: random.Random) -> tuple:
    job = rng.randint(0, 40)
    pri = rng.choice([0, 7, 1024, 2**32 - 1])
    delay = rng.choice([0, 0, S, 3 * S])
    return rng.choice([
        (Op.PUT, pri, delay, rng.choice([0, S, 2 * S]), rng.randbytes(rng.randint(0, 5))),
        (Op.PUT, pri, 0, S, b"x"), (Op.RESERVE, rng.choice([-1, 0, S, 3 * S])),
        (Op.RESERVE, 0), (Op.USE, rng.choice(TUBES)), (Op.WATCH, rng.choice(TUBES)),
        (Op.IGNORE, rng.choice(TUBES)), (Op.RESERVE_JOB, job), (Op.DELETE, job),
        (Op.RELEASE, job, pri, delay), (Op.BURY, job, pri), (Op.TOUCH, job),
        (Op.KICK, rng.choice([1, 5])), (Op.KICK_JOB, job), (Op.BURN_ID,),
        (Op.PAUSE_TUBE, rng.choice(TUBES), rng.choice([0, S, 4 * S])), (Op.END_WAIT,),
        (Op.CLOSE,) if rng.random() < 0.3 else (Op.RESERVE, S),
    ])


def run(machine: Machine, batches: list) -> list:
    return [machine.apply_batch(now, commands) for now, commands in batches]


@pytest.mark.parametrize("rules", [1, RULES_SUPPORTED])
def test_the_same_batches_give_the_same_replies_events_and_digest_on_two_machines(rules):
    for seed in range(5):
        batches = workload(seed, rules=rules)
        first, second = Machine(), Machine()
        assert run(first, batches) == run(second, batches)
        assert first.digest() == second.digest()
        assert problems(first) == []


@pytest.mark.parametrize("rules", [1, RULES_SUPPORTED])
def test_a_machine_restored_midway_continues_exactly_like_the_original(rules):
    for seed in range(4):
        batches = workload(seed, rules=rules)
        for cut in (10, 80, 140):
            original = Machine()
            run(original, batches[:cut])
            restored = Machine.restore(original.snapshot())
            assert problems(restored) == []
            assert run(restored, batches[cut:]) == run(original, batches[cut:])
            assert restored.digest() == original.digest()


@pytest.mark.parametrize("rules", [1, RULES_SUPPORTED])
def test_extra_ticks_between_batches_change_nothing_but_when_events_are_reported(rules):
    # The leader may propose TICKs whenever it likes; only commands and their times matter.
    for seed in range(4):
        batches = workload(seed, rules=rules)
        rng = random.Random(seed)
        ticked, originals = [], []
        for (now, commands), (later, _) in zip(batches, batches[1:] + [batches[-1]], strict=True):
            originals.append(len(ticked))
            ticked.append((now, commands))
            for _ in range(rng.randint(0, 2)):
                ticked.append((rng.randint(now, later), [(Op.TICK, 0, 0)]))
        plain, busy = Machine(), Machine()
        plain_results, busy_results = run(plain, batches), run(busy, ticked)
        assert [busy_results[i][0] for i in originals] == [r for r, _ in plain_results]
        assert [e for _, es in busy_results for e in es] == \
            [e for _, es in plain_results for e in es]
        assert busy.digest() == plain.digest()


_CHILD = """
import sys
sys.path.insert(0, {path!r})
from test_jobs_snapshot import workload, run
from beanraft.jobs.machine import Machine
m = Machine()
run(m, workload(3))
print(m.digest())
"""


def test_the_digest_does_not_depend_on_the_process_hash_seed():
    here = os.path.dirname(os.path.abspath(__file__))
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        result = subprocess.run([sys.executable, "-c", _CHILD.format(path=here)], env=env,
                                capture_output=True, text=True, check=True, timeout=60)
        digests.add(result.stdout.strip())
    machine = Machine()
    run(machine, workload(3))
    assert digests == {machine.digest()}


def test_snapshots_are_canonical_whatever_garbage_the_heaps_hold():
    # Touching a reservation at the same instant leaves dead heap entries but no visible change;
    # a session that waited and closed leaves a dead wake timer and a used-up wait ticket.
    plain, busy = Harness(), Harness()
    for h in (plain, busy):
        a = h.open()
        h.put(a, ttr=30)
        h.cmd(a, Op.RESERVE, 0)
    a = (busy.epoch << 32) | 1
    busy.batch([(Op.TOUCH, a, 0, 1)] * 100)  # seq 0: no cached replies either
    b = busy.open()
    busy.cmd(b, Op.RESERVE, 5 * S)
    busy.cmd(b, Op.CLOSE)
    assert busy.m.snapshot() == plain.m.snapshot()
    restored = Machine.restore(busy.m.snapshot())
    assert restored.snapshot() == busy.m.snapshot()
    assert len(restored.timers) < len(busy.m.timers)


def test_restore_rejects_unknown_versions_and_damaged_snapshots():
    h = Harness()
    a = h.open()
    h.put(a)
    data = h.m.snapshot()
    assert data[0] == 3
    for bad in (b"", b"\x04" + data[1:], b"\x02" + data[1:], b"\x01" + data[1:], b"\x00",
                data[:-3], data + b"\x00", b"\x03\xc1", b"\x02" + b"\x93\x01\x02\x03",
                b"\x01" + b"\x93\x01\x02\x03", "text"):
        with pytest.raises(ValueError):
            Machine.restore(bad)


def test_restore_rejects_a_snapshot_whose_references_do_not_hold():
    import msgpack

    h = Harness()
    a = h.open()
    h.cmd(a, Op.USE, "t")
    h.put(a)
    body = list(msgpack.unpackb(h.m.snapshot()[1:], use_list=True))
    body[8] = []  # drop the sessions: tube t and the job's tube ref stay, the use ref goes
    body[6] = []  # and the epochs
    Machine.restore(b"\x03" + msgpack.packb(body, use_bin_type=True))  # still consistent
    for damage in (lambda b: b[10][0].__setitem__(1, "nope"),  # a job in a missing tube
                   lambda b: b[7].append(["idle", 0, 0, 0, 0, 0, []]),  # an unreferenced tube
                   lambda b: b[10][0].__setitem__(2, 7),  # no such job state
                   lambda b: b[10].append(list(b[10][0])),  # the same job twice
                   lambda b: b[12].append([(9 << 32) | 1, 5])):  # an unknown detached session
        damaged = msgpack.unpackb(msgpack.packb(body), use_list=True)
        damage(damaged)
        with pytest.raises(ValueError):
            Machine.restore(b"\x03" + msgpack.packb(damaged, use_bin_type=True))


def test_a_snapshot_of_100000_jobs_in_several_states_restores_to_an_equal_machine():
    # How long this takes is measured by tests/tools/scale.py, not asserted here: the machines
    # that run the suite are shared and noisy.
    machine = Machine()
    now = T0
    machine.apply_batch(now, [(Op.NODE_START, 0, 0, "n"), (Op.OPEN, (1 << 32) | 1, 1)])
    sid = (1 << 32) | 1
    machine.apply_batch(now, [(Op.PUT, sid, 0, i % 50, (i % 3) * S, 60 * S, b"body-%d" % i)
                              for i in range(100_000)])
    replies, _ = machine.apply_batch(now, [(Op.RESERVE, sid, 0, 0)] * 20_000)
    machine.apply_batch(now, [(Op.BURY, sid, 0, r[1], 1) for r in replies[:10_000]])
    data = machine.snapshot()
    restored = Machine.restore(data)
    assert restored.job_counts() == machine.job_counts()
    assert restored.snapshot() == data
