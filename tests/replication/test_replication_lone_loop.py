"""A lone node ticks pysyncobj on its event loop; once it talks to another node, the ticks move to
their own thread for good.

Method: a real single RaftNode with group commit and a data directory, its tick period raised to
30 s so that its timer never ticks during the test: whatever commits or answers does so because
the loop ticked on a proposal or on pysyncobj's wake-up pipe. Every tick records the thread it ran
in (a pysyncobj tick callback).
"""

from __future__ import annotations

import asyncio
import logging
import threading

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
