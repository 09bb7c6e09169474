"""A lone node syncs a batch of several commands in its helper process while its loop goes on, and
commits, applies and answers the batch only once the helper has answered its fdatasync.

Method: a real single RaftNode with group commit and a data directory (as in
test_replication_lone_loop.py: its timer never ticks during a test) and its real helper process.
The helper is held with SIGSTOP, so that a sync stays under way as long as a test needs, killed
with SIGKILL, or handed a descriptor that fdatasync refuses (a pipe: EINVAL), so that it reports a
failure of its own.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import threading
import time

from test_replication_lone_loop import _lone_node, _ready

from beanraft.jobs.commands import Op
from beanraft.replication import background_sync, seam
from beanraft.replication.batcher import OVERLAP_COMMANDS, GroupCommit

BATCH = 2 * OVERLAP_COMMANDS


def _puts(commit, sid: int, first_seq: int, count: int = BATCH) -> list[asyncio.Future]:
    """``count`` puts submitted in one turn of the loop: one batch."""
    return [commit.submit((Op.PUT, sid, seq, 0, 0, 60, b"job"))
            for seq in range(first_seq, first_seq + count)]


def _helper_pid(raft) -> int:
    """The helper's pid, started now as the first batch of several commands would start it."""
    assert raft._background.open()
    proc = raft._background._proc
    assert proc is not None and proc.poll() is None, "no helper process runs"
    return proc.pid


async def _held_batch(raft, commit, sid: int) -> tuple[int, list[asyncio.Future]]:
    """A batch handed to the helper, which is held with SIGSTOP (``_let_go`` resumes it): the
    helper's pid and the batch's puts."""
    helper = _helper_pid(raft)
    os.kill(helper, signal.SIGSTOP)
    puts = _puts(commit, sid, 2)
    await asyncio.sleep(0)  # the batch is proposed at the loop's next turn
    assert raft._background.busy, "the batch was not handed to the helper"
    return helper, puts


def _let_go(raft) -> None:
    """Resume a helper held with SIGSTOP, if one runs (before ``stop``, which waits for it)."""
    proc = raft._background._proc
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


def _one_outage_logged(caplog) -> None:
    """One warning when the helper went, one line when a new one ran."""
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "synced in the event loop" in m]) == 1, messages
    assert len([m for m in messages if "sync helper running again" in m]) == 1, messages


def test_a_batch_is_answered_only_after_the_helper_synced_it_and_the_loop_runs_on_meanwhile(
        tmp_path):
    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        try:
            _helper, puts = await _held_batch(raft, commit, sid)
            journal = seam.journal(raft._sync)
            assert journal[-1][1] > raft.applied_through(), "the batch is not in the journal"
            turns = 0
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:  # the loop is free: these sleeps return
                await asyncio.sleep(0.01)
                turns += 1
            assert turns >= 10
            assert not any(p.done() for p in puts), "answered before its fdatasync returned"
            assert _ready(raft) == 0, "applied before its fdatasync returned"
            _let_go(raft)
            replies = await asyncio.wait_for(asyncio.gather(*puts), 5)
            assert [r[0] for r in replies] == ["INSERTED"] * BATCH
            assert _ready(raft) == BATCH and not raft._background.busy
            assert not journal._dirty
        finally:
            _let_go(raft)
            raft.stop()

    asyncio.run(scenario())


def test_a_tick_waits_for_the_sync_under_way_and_commits_what_it_made_durable(tmp_path):
    """A tick may rewrite or close the journal's file (a compaction, the stop): it first waits
    for the helper's answer, and commits that batch itself."""
    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        try:
            helper, puts = await _held_batch(raft, commit, sid)
            threading.Timer(0.3, os.kill, (helper, signal.SIGCONT)).start()
            began = time.monotonic()
            raft._loop_tick()
            assert time.monotonic() - began >= 0.25, "the tick did not wait for the helper"
            assert not raft._background.busy
            assert _ready(raft) == BATCH
            replies = await asyncio.wait_for(asyncio.gather(*puts), 5)
            assert [r[0] for r in replies] == ["INSERTED"] * BATCH
        finally:
            _let_go(raft)
            raft.stop()

    asyncio.run(scenario())


def test_a_helper_killed_during_a_sync_leaves_the_node_syncing_in_its_loop_until_a_new_one(
        tmp_path, caplog, monkeypatch):
    """What the dead helper synced is unknown: the node syncs the batch itself before it
    commits it, and every later batch until RETRY_S passed; one warning says so. Then the next
    batch starts a new helper."""
    monkeypatch.setattr(background_sync, "RETRY_S", 0.5)

    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        try:
            helper, puts = await _held_batch(raft, commit, sid)
            os.kill(helper, signal.SIGKILL)
            replies = await asyncio.wait_for(asyncio.gather(*puts), 5)
            assert [r[0] for r in replies] == ["INSERTED"] * BATCH
            assert raft._background.broken and not raft._background.busy
            later = await asyncio.wait_for(asyncio.gather(*_puts(commit, sid, 2 + BATCH)), 5)
            assert [r[0] for r in later] == ["INSERTED"] * BATCH
            assert _ready(raft) == 2 * BATCH
            assert not seam.journal(raft._sync)._dirty
            assert raft._background._proc is None, "a helper started again before RETRY_S"
            await asyncio.sleep(0.6)
            again = await asyncio.wait_for(asyncio.gather(*_puts(commit, sid, 2 + 2 * BATCH)), 5)
            assert [r[0] for r in again] == ["INSERTED"] * BATCH
            assert not raft._background.broken and _helper_pid(raft) != helper
        finally:
            raft.stop()

    with caplog.at_level(logging.INFO, logger="beanraft.journal"):
        asyncio.run(scenario())
    _one_outage_logged(caplog)


def test_a_failure_the_helper_reports_fails_the_journal_and_nothing_more_is_acknowledged(
        tmp_path):
    """The helper's fdatasync is handed a pipe, which it refuses (EINVAL) as a disk would refuse
    a sync with EIO: the batch is never committed, and neither is any later one."""
    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        journal = seam.journal(raft._sync)
        read_end, write_end = os.pipe()
        real = journal.begin_sync
        journal.begin_sync = lambda: (write_end, real()[1])
        try:
            puts = _puts(commit, sid, 2)
            done, _ = await asyncio.wait(puts, timeout=5)
            assert len(done) == BATCH, "the batch neither committed nor failed"
            assert all(p.exception() is not None for p in puts), "a put was acknowledged"
            assert journal.failed is not None and "Invalid argument" in str(journal.failed)
            journal.begin_sync = real
            later = _puts(commit, sid, 2 + BATCH)
            done, _ = await asyncio.wait(later, timeout=5)
            assert len(done) == BATCH and all(p.exception() is not None for p in later)
            assert _ready(raft) == 0
        finally:
            raft.stop()
            os.close(read_end)
            os.close(write_end)

    asyncio.run(scenario())


def test_a_batch_of_fewer_commands_is_synced_in_the_loop_and_done_on_return(tmp_path):
    """One client at a time would only wait for the hand-over: its batch is synced inline."""
    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        try:
            puts = _puts(commit, sid, 2, count=OVERLAP_COMMANDS - 1)
            await asyncio.sleep(0)
            assert all(p.done() for p in puts) and not raft._background.busy
        finally:
            raft.stop()

    asyncio.run(scenario())


def test_the_helper_starts_with_the_first_batch_it_syncs_and_exits_with_its_node(tmp_path):
    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        assert raft._background._proc is None, "started before anything needed it"
        await asyncio.wait_for(asyncio.gather(*_puts(commit, sid, 2)), 5)
        proc = raft._background._proc
        assert proc is not None and proc.poll() is None
        raft.stop()
        assert proc.poll() is not None, "the helper outlived its node's stop"

    asyncio.run(scenario())


def test_a_sync_slower_than_a_try_is_waited_for_without_proposing_the_batch_again(tmp_path):
    """A lone node never loses a batch it appended (it fails with the journal, or commits): a
    disk slower than the batcher's try timeout must not make it append the batch again and
    again behind the slow sync, each copy for the disk to write."""
    async def scenario():
        raft, _commit, sid, _ticks = await _lone_node(str(tmp_path))
        commit = GroupCommit(raft, try_timeout_s=0.2, commit_timeout_s=5.0)
        journal = seam.journal(raft._sync)
        try:
            _helper, puts = await _held_batch(raft, commit, sid)
            appended = len(journal)
            await asyncio.sleep(1.0)  # five try timeouts
            assert len(journal) == appended, "the batch was proposed again behind its sync"
            _let_go(raft)
            replies = await asyncio.wait_for(asyncio.gather(*puts), 5)
            assert [r[0] for r in replies] == ["INSERTED"] * BATCH
            assert _ready(raft) == BATCH
        finally:
            _let_go(raft)
            raft.stop()

    asyncio.run(scenario())


def test_no_descriptor_left_for_a_helper_leaves_the_node_syncing_in_its_loop_until_one_is_free(
        tmp_path, caplog, monkeypatch):
    """A flood of connections may have taken every descriptor when the first batch needs the
    helper: the batch is synced in the loop, and a helper starts at a batch RETRY_S later, once
    descriptors are free again. Here the process's own descriptors are used up (EMFILE)."""
    monkeypatch.setattr(background_sync, "RETRY_S", 0.3)

    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held: list[int] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
            while True:  # bounded by the limit just set
                try:
                    held.append(os.open(os.devnull, os.O_RDONLY))
                except OSError as exc:
                    assert exc.errno == errno.EMFILE, exc
                    break
            replies = await asyncio.wait_for(asyncio.gather(*_puts(commit, sid, 2)), 5)
            assert [r[0] for r in replies] == ["INSERTED"] * BATCH
            assert raft._background.broken and raft._background._proc is None
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            await asyncio.sleep(0.4)
            again = await asyncio.wait_for(asyncio.gather(*_puts(commit, sid, 2 + BATCH)), 5)
            assert [r[0] for r in again] == ["INSERTED"] * BATCH
            assert not raft._background.broken and raft._background._proc is not None
            assert _ready(raft) == 2 * BATCH
        finally:
            _let_go(raft)
            raft.stop()

    with caplog.at_level(logging.INFO, logger="beanraft.journal"):
        asyncio.run(scenario())
    _one_outage_logged(caplog)
