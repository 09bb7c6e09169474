"""Each known pysyncobj 0.3.17 defect is reproduced on plain pysyncobj, then shown not to happen in BeanRaft.

Method: the upstream half drives a bare pysyncobj ``Counter`` (tests/replication/upstream.py)
with real files on disk; the BeanRaft half drives ``RaftNode`` + ``GroupCommit`` with the real
job state machine the same way. The defects come from the research notes
(shared/reference/pysyncobj-notes.md §0, §2, §3).
"""

from __future__ import annotations

import asyncio
import os

import pysyncobj.journal as pso_journal
import pytest
from upstream import (
    apply_increments, destroy, free_port, tick_until, upstream_counter, wait_leader,
)

from lone_node import Harness

from beanraft.jobs.commands import Op
from beanraft.replication.journal import DurableJournal
from beanraft.replication.raft import JOURNAL_NAME, SNAPSHOT_NAME, RaftConfig, RaftNode

def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------ defect 1: the journal never fsyncs


def test_upstream_journal_acknowledges_entries_without_any_fsync(tmp_path, monkeypatch):
    syncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    monkeypatch.setattr(os, "fdatasync", lambda fd: syncs.append(fd))
    monkeypatch.setattr(pso_journal.ResizableFile, "flush", lambda self: syncs.append("msync"))
    obj = upstream_counter(free_port(), journal=str(tmp_path / "j"), dump=str(tmp_path / "d"))
    try:
        wait_leader(obj)
        results = apply_increments(obj, 20)
    finally:
        obj.destroy()
    assert [err for _res, err in results] == [0] * 20
    assert syncs == []  # twenty acknowledged writes, nothing ever forced to disk


def test_beanraft_fsyncs_the_journal_before_every_reply(tmp_path):
    async def scenario():
        async with Harness(str(tmp_path)) as h:
            journal: DurableJournal = h.raft._journal
            syncs = []
            sync = journal.sync

            def counting_sync():
                syncs.append(journal._dirty)
                sync()

            journal.sync = counting_sync
            for _ in range(20):
                await h.put(1)
                assert not journal._dirty, "a reply went out before its entry was fsynced"
            return syncs

    syncs = run(scenario())
    assert syncs.count(True) >= 20


# ------------------------------- defect 2: a crash between snapshot and journal rewrite loses data


def _crash_window_journal(path: str, before: list, after: list, factory) -> None:
    """Write the journal a crash would leave: every old entry plus the newer ones, unrewritten."""
    os.remove(path)
    journal = factory(path)
    for entry in before + [e for e in after if e[1] > before[-1][1]]:
        journal.add(*entry)
    journal._destroy()


def test_upstream_loses_acknowledged_entries_when_a_crash_lands_between_snapshot_and_rewrite(tmp_path):
    journal, dump = str(tmp_path / "journal"), str(tmp_path / "dump")
    port = free_port()
    obj = upstream_counter(port, journal=journal, dump=dump)
    wait_leader(obj)
    apply_increments(obj, 100)
    old_entries = [obj._SyncObj__raftLog[i] for i in range(len(obj._SyncObj__raftLog))]
    destroy(obj)

    obj = upstream_counter(port, journal=journal, dump=dump)
    wait_leader(obj)
    assert tick_until(obj, lambda: obj.value == 100)
    obj.forceLogCompaction()
    assert tick_until(obj, lambda: os.path.exists(dump) and len(obj._SyncObj__raftLog) < 10)
    acked = apply_increments(obj, 50)
    assert [err for _r, err in acked] == [0] * 50 and obj.value == 150
    new_entries = [obj._SyncObj__raftLog[i] for i in range(len(obj._SyncObj__raftLog))]
    destroy(obj)

    _crash_window_journal(journal, old_entries, new_entries, pso_journal.FileJournal)
    obj = upstream_counter(port, journal=journal, dump=dump)
    try:
        wait_leader(obj)
        tick_until(obj, lambda: obj.value >= 150, timeout=2)
        assert obj.value == 100  # the 50 acknowledged increments after the snapshot are gone
    finally:
        destroy(obj)


def test_beanraft_keeps_every_acknowledged_entry_when_a_crash_lands_between_snapshot_and_rewrite(tmp_path):
    journal = str(tmp_path / JOURNAL_NAME)

    async def first():
        async with Harness(str(tmp_path)) as h:
            await h.put(100)
            log = h.raft._journal
            return [log[i] for i in range(len(log))]

    async def second():
        async with Harness(str(tmp_path)) as h:
            assert h.ready_jobs() == 100
            h.raft._sync.forceLogCompaction()
            for _ in range(200):
                if os.path.exists(str(tmp_path / SNAPSHOT_NAME)) and len(h.raft._journal) < 10:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("no compaction")
            await h.put(50)
            log = h.raft._journal
            return [log[i] for i in range(len(log))]

    async def third():
        async with Harness(str(tmp_path)) as h:
            for _ in range(100):
                if h.ready_jobs() >= 150:
                    break
                await asyncio.sleep(0.02)
            return h.ready_jobs()

    old_entries = run(first())
    new_entries = run(second())
    _crash_window_journal(journal, old_entries, new_entries, lambda p: DurableJournal(p))
    assert run(third()) == 150


# ------------------------------------ defect 3: journalFile without fullDumpFile wedges a restart


def test_upstream_journal_without_dump_file_comes_back_empty_after_compaction(tmp_path):
    journal = str(tmp_path / "journal")
    port = free_port()
    obj = upstream_counter(port, journal=journal)
    wait_leader(obj)
    apply_increments(obj, 30)
    obj.forceLogCompaction()
    tick_until(obj, lambda: len(obj._SyncObj__raftLog) < 5)
    destroy(obj)
    obj = upstream_counter(port, journal=journal)
    try:
        tick_until(obj, lambda: obj.value == 30, timeout=2)
        assert obj.value == 0  # 30 committed increments, a restarted node holding none of them
    finally:
        destroy(obj)


def test_beanraft_always_pairs_the_journal_with_a_snapshot_and_restarts_whole(tmp_path):
    async def fill():
        async with Harness(str(tmp_path)) as h:
            await h.put(30)
            h.raft._sync.forceLogCompaction()
            for _ in range(200):
                if len(h.raft._journal) < 5:
                    break
                await asyncio.sleep(0.02)
            await h.put(5)

    async def count():
        async with Harness(str(tmp_path)) as h:
            for _ in range(100):
                if h.ready_jobs() == 35:
                    break
                await asyncio.sleep(0.02)
            return h.ready_jobs()

    run(fill())
    assert run(count()) == 35


# -------------------------------------- defect 4: a raising apply or callback stalls or re-applies


def test_upstream_raising_state_machine_method_stalls_every_later_command(tmp_path):
    obj = upstream_counter(free_port(), fail_on=3)
    try:
        wait_leader(obj)
        results = apply_increments(obj, 5, timeout=0.3)
        tick_until(obj, lambda: False, timeout=0.3)
        assert obj.value == 2
        assert [r for r in results if r[1] == 0] == [(1, 0), (2, 0)]
        assert obj.calls > 5  # the poisoned entry is re-applied on every tick
    finally:
        destroy(obj)


def test_upstream_raising_callback_applies_the_command_twice(tmp_path):
    obj = upstream_counter(free_port())
    try:
        wait_leader(obj)
        seen = []

        def bad_callback(res, err):
            seen.append(res)
            if len(seen) == 1:
                raise RuntimeError("callback raised")

        obj.inc(1, callback=bad_callback)
        tick_until(obj, lambda: len(seen) >= 2, timeout=2)
        assert obj.value == 2  # one increment, applied twice
    finally:
        destroy(obj)


def test_beanraft_survives_a_state_machine_that_raises_without_stalling_or_reapplying(tmp_path):
    async def scenario():
        async with Harness(str(tmp_path)) as h:
            machine = h.raft.machine
            original = machine.apply_batch
            calls = []

            def flaky(now_ns, commands):
                calls.append(commands)
                if len(calls) == 1:
                    raise RuntimeError("boom")
                return original(now_ns, commands)

            machine.apply_batch = flaky
            h.seq += 1
            first = await h.commit.submit((Op.PUT, h.sid, h.seq, 0, 0, 10**9, b"poison"))
            later = await h.put(3)
            return first, later, calls, h.ready_jobs()

    first, later, calls, ready = run(scenario())
    assert first[0] == "INSERTED"  # retried by group commit after the failed apply
    assert later == [first[1] + 1, first[1] + 2, first[1] + 3]  # nothing stalled
    assert ready == 4  # and nothing was applied twice
    assert len(calls) == 5  # the failed apply, its retry, three more puts


# ------------------------------------------------- defect 5: destroy leaves the wake-up pipe open


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _pipe_ends() -> dict[int, str]:
    """Each open descriptor that is a pipe's end, and which pipe ("pipe:[inode]")."""
    ends = {}
    for fd in _open_fds():
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since it was listed
        if target.startswith("pipe:"):
            ends[int(fd)] = target
    return ends


def test_upstream_destroy_leaves_the_pipe_notifier_open():
    before = set(_pipe_ends().values())
    for _ in range(3):
        # Without batched appends pysyncobj wakes its tick with a pipe (BeanRaft's setting).
        obj = upstream_counter(free_port(), appendEntriesUseBatch=False)
        wait_leader(obj)
        destroy(obj)
    left = {fd: pipe for fd, pipe in _pipe_ends().items() if pipe not in before}
    try:
        # Both ends of one pipe per SyncObj, none ever closed.
        assert len(left) == 6 and len(set(left.values())) == 3, left
    finally:
        for fd in left:
            os.close(fd)


def test_beanraft_nodes_started_and_stopped_in_one_process_leave_no_descriptor_open(tmp_path):
    """Both a lone node (ticked on its loop) and a member of a cluster (ticked in its own
    thread; its peers are never started) close pysyncobj's pipe when they stop."""

    async def lone(data_dir: str):
        async with Harness(data_dir) as h:
            await h.put(3)

    async def member(data_dir: str):
        config = RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                            peers=[f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
        raft = RaftNode(config, asyncio.get_running_loop(), lambda events: None)
        raft.start()
        await asyncio.sleep(0.2)
        assert raft._thread.is_alive()  # the thread polls the pipe: it is in use
        raft.stop()

    run(lone(str(tmp_path / "warm-up")))  # imports and first-use caches, not counted
    before, pipes_before = _open_fds(), set(_pipe_ends().values())
    for index in range(3):
        run(lone(str(tmp_path / f"lone{index}")))
        run(member(str(tmp_path / f"member{index}")))
    left = {fd: pipe for fd, pipe in _pipe_ends().items() if pipe not in pipes_before}
    assert not left, f"pipes left open: {left}"
    assert len(_open_fds()) <= len(before), sorted(_open_fds() - before)
