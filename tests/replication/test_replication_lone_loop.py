"""A lone node ticks pysyncobj on its event loop; once it talks to another node, the ticks move to
their own thread for good.

Method: a real single RaftNode with group commit and a data directory, its tick period raised to
30 s so that its timer never ticks during the test: whatever commits or answers does so because
the loop ticked on a proposal or on pysyncobj's wake-up pipe. Every tick records the thread it ran
in (a pysyncobj tick callback).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time

from upstream import free_port

from beanraft.jobs.commands import Op
from beanraft.replication import seam
from beanraft.replication.batcher import GroupCommit
from beanraft.replication.codec import encode_entry_parts
from beanraft.replication.raft import RaftConfig, RaftNode, Timing

SLOW_TICK_S = 30.0  # the timer's period: far longer than the test
SWITCH_LINE = "talking to another node: Raft ticks move to their own thread"


async def _lone_node(data_dir: str):
    timing = Timing(tick_s=SLOW_TICK_S, connection_timeout_s=60.0)
    raft = RaftNode(RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                               timing=timing), asyncio.get_running_loop(), lambda events: None)
    ticks: list[int] = []
    raft._sync.addOnTickCallback(lambda: ticks.append(threading.get_ident()))
    raft.start()
    commit = GroupCommit(raft, commit_timeout_s=5.0)
    epoch = await commit.submit((Op.NODE_START, 0, 0, "single"))
    sid = (epoch[1] << 32) | 1
    assert await commit.submit((Op.OPEN, sid, 1)) == ("OK",)
    return raft, commit, sid, ticks


def _ready(raft: RaftNode) -> int:
    with raft.lock:
        return raft.machine.job_counts()["ready"]


def test_a_lone_node_commits_and_answers_reads_on_its_loop_without_a_tick_thread(tmp_path):
    async def scenario():
        raft, commit, sid, ticks = await _lone_node(str(tmp_path))
        try:
            loop_thread = threading.get_ident()
            # The leader is elected by ticks that the start-up timer and the proposals made.
            puts = [commit.submit((Op.PUT, sid, seq, 0, 0, 60, b"job")) for seq in range(2, 32)]
            replies = await asyncio.wait_for(asyncio.gather(*puts), 5.0)
            assert [r[0] for r in replies] == ["INSERTED"] * 30
            # A proposal is committed within submit itself: the future is done on return.
            entry = (Op.PUT, sid, 32, 0, 0, 60, b"one more")
            done = raft.submit(encode_entry_parts(raft.cluster_now_ns(), [entry]))
            assert done.done() and done.result()[0][0] == "INSERTED"
            # A read index is asked through pysyncobj's pipe: the loop sees it and ticks.
            index = await raft.read_index(5.0)
            assert index >= raft.applied_index
            assert not raft._thread.is_alive()
            assert ticks and set(ticks) == {loop_thread}
            assert _ready(raft) == 31
        finally:
            raft.stop()

    asyncio.run(scenario())


def test_a_lone_node_that_comes_to_know_another_node_moves_its_ticks_to_a_thread(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beanraft.raft")

    async def scenario():
        raft, commit, sid, ticks = await _lone_node(str(tmp_path))
        try:
            loop_thread = threading.get_ident()
            assert (await commit.submit((Op.PUT, sid, 2, 0, 0, 60, b"a")))[0] == "INSERTED"
            # As a learner or a member added to it would: an address nobody listens on.
            assert seam.know_node(raft._sync, f"127.0.0.1:{free_port()}")
            assert (await commit.submit((Op.PUT, sid, 3, 0, 0, 60, b"b")))[0] == "INSERTED"
            assert raft._thread.is_alive()
            before = len(ticks)
            puts = [commit.submit((Op.PUT, sid, seq, 0, 0, 60, b"job")) for seq in range(4, 64)]
            replies = await asyncio.wait_for(asyncio.gather(*puts), 10.0)
            assert [r[0] for r in replies] == ["INSERTED"] * 60
            assert loop_thread not in ticks[before:] and ticks[before:]
            assert _ready(raft) == 62
        finally:
            raft.stop()

    asyncio.run(scenario())
    switches = [r for r in caplog.records if r.getMessage() == SWITCH_LINE]
    assert len(switches) == 1


def test_a_lone_node_commits_a_proposal_after_its_fsync_and_ticks_after_the_replies(tmp_path):
    """Within submit: append, fsync, commit, apply; no tick and no wake-up through the pipe. The
    rest of a tick follows at the loop's next turn."""
    async def scenario():
        raft, commit, sid, ticks = await _lone_node(str(tmp_path))
        try:
            await asyncio.sleep(0)  # the tick queued by the start-up's commits
            events: list[str] = []
            journal = seam.journal(raft._sync)
            sync = journal.sync
            journal.sync = lambda: (events.append("fsync"), sync())[1]
            machine_apply = raft.machine.apply_batch
            raft.machine.apply_batch = lambda *a: (events.append("apply"), machine_apply(*a))[1]
            before = len(ticks)
            entry = (Op.PUT, sid, 2, 0, 0, 60, b"job")
            done = raft.submit(encode_entry_parts(raft.cluster_now_ns(), [entry]))
            assert done.done() and done.result()[0][0] == "INSERTED"
            assert events == ["fsync", "apply"]
            assert len(ticks) == before  # no tick yet: the replies go first
            try:
                os.read(seam.wake_fd(raft._sync), 1024)
                raise AssertionError("the proposal wrote to pysyncobj's wake-up pipe")
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
            assert len(ticks) == before + 1
        finally:
            raft.stop()

    asyncio.run(scenario())


def test_a_lone_leader_does_not_commit_alone_once_it_has_another_member(tmp_path):
    """A member added (at an address nobody serves) takes the majority out of one node's reach.
    The addition is queued and a put proposed behind it in the same turn of the loop, so that
    the inline commit appends both: neither may be committed, then or later."""
    async def scenario():
        raft, commit, sid, ticks = await _lone_node(str(tmp_path))
        try:
            added = []
            raft._sync.addNodeToCluster(f"127.0.0.1:{free_port()}",
                                        lambda res, err: added.append(err))
            entry = (Op.PUT, sid, 2, 0, 0, 60, b"job")
            done = raft.submit(encode_entry_parts(raft.cluster_now_ns(), [entry]))
            assert not done.done()
            await asyncio.sleep(0.3)
            assert seam.knows_other_nodes(raft._sync)
            assert not done.done() and not added
            assert _ready(raft) == 0
        finally:
            raft.stop()

    asyncio.run(scenario())


def test_a_lone_leader_commits_alone_only_up_to_an_entry_of_its_own_term(tmp_path):
    """Raft's rule, as pysyncobj's leader applies it each tick: an entry of an earlier term is
    committed only under a later entry of the leader's term."""
    async def scenario():
        raft, commit, sid, ticks = await _lone_node(str(tmp_path))
        try:
            sync, journal = raft._sync, seam.journal(raft._sync)
            term, committed = sync.raftCurrentTerm, sync.raftCommitIndex
            assert term >= 1 and journal[-1][1] == committed
            journal.add(seam.NO_OP_COMMAND, committed + 1, term - 1)
            journal.sync()
            seam.commit_alone(sync)
            assert sync.raftCommitIndex == committed
            journal.add(seam.NO_OP_COMMAND, committed + 2, term)
            journal.add(seam.NO_OP_COMMAND, committed + 3, term)
            journal.sync()
            seam.commit_alone(sync, upto=committed + 2)  # what a background sync covered
            assert sync.raftCommitIndex == sync.raftLastApplied == committed + 2
            seam.commit_alone(sync)
            assert sync.raftCommitIndex == sync.raftLastApplied == committed + 3
        finally:
            raft.stop()

    asyncio.run(scenario())


def test_a_lone_node_whose_fsync_failed_acknowledges_nothing_after_even_if_fsync_succeeds_again(
        tmp_path, monkeypatch):
    """Linux reports a failed writeback once: the next fsync of the file succeeds though the
    pages it lost were never written (marked clean). So one failed fsync must stop the journal
    for good: the put it held, and every later one, is never committed or applied, however many
    ticks follow with fsync succeeding again."""
    async def scenario():
        raft, commit, sid, ticks = await _lone_node(str(tmp_path))
        raft.config.timing.tick_s = 0.02  # the timer ticks again from its next turn
        try:
            real = os.fdatasync
            failures: list[int] = []

            def fails_once(fd):
                if not failures:
                    failures.append(fd)
                    raise OSError(errno.EIO, "Input/output error")
                return real(fd)

            monkeypatch.setattr(os, "fdatasync", fails_once)
            entry = (Op.PUT, sid, 2, 0, 0, 60, b"lost in writeback")
            lost = raft.submit(encode_entry_parts(raft.cluster_now_ns(), [entry]))
            assert failures, "the inline commit did not fsync"
            later = raft.submit(encode_entry_parts(raft.cluster_now_ns(),
                                                   [(Op.PUT, sid, 3, 0, 0, 60, b"after")]))
            raft._loop_timer.cancel()
            raft._on_loop_timer()  # ticks every 20 ms from now on
            before = len(ticks)
            await asyncio.sleep(0.5)
            assert len(ticks) > before or raft._failures.failing, "nothing ticked: the test proves nothing"
            assert not (lost.done() and not lost.exception())
            assert not (later.done() and not later.exception())
            assert _ready(raft) == 0
            assert seam.journal(raft._sync).failed is not None
        finally:
            raft.stop()

    asyncio.run(scenario())


def test_a_lone_node_keeps_to_the_clock_however_long_its_journal_takes_to_write(
        tmp_path, monkeypatch):
    """The leader follows its timeline from the instant each stamp stands for. From the end of
    the entry's journal write instead, it fell behind by that write at every entry, until the
    timeline was a second behind and jumped to the wall clock, ending running TTRs and delays
    up to a second early. Each write here takes 2 ms more than the disk does."""
    async def scenario():
        raft, commit, sid, _ticks = await _lone_node(str(tmp_path))
        real = os.pwritev

        def pwritev(fd, buffers, offset):
            time.sleep(0.002)
            return real(fd, buffers, offset)

        try:
            monkeypatch.setattr(os, "pwritev", pwritev)
            for seq in range(2, 202):  # one entry each: 0.4 s of writes
                reply = await asyncio.wait_for(commit.submit((Op.PUT, sid, seq, 0, 0, 60, b"job")), 5)
                assert reply[0] == "INSERTED"
            gap_ms = (raft.clock.now_ns() - time.time_ns()) / 1e6
            assert abs(gap_ms) < 100, f"the cluster time is {gap_ms:+.1f} ms from the clock"
        finally:
            monkeypatch.undo()
            raft.stop()

    asyncio.run(scenario())
