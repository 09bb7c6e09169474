"""A follower whose journal fsync failed acknowledges nothing more, even when fsync succeeds again,
and the two other nodes go on committing without it.

Linux reports a lost writeback to one fsync only: the next fsync of the file succeeds over pages
that never reached the disk. A follower that retried and then acknowledged would count towards a
majority for entries it may not hold.

Method: three real BeanRaft ``RaftNode`` objects (real pysyncobj, sealed peer links on loopback
ports, one Raft thread each) in this process, each with its journal in a data directory of its
own. One fsync of one follower's journal fails with EIO; every other fsync is real. The leader's
match index for that follower (what the follower acknowledged) must stay at what its last good
fsync made durable.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

from raft_trio import applied_everywhere, build_three, leader_of, until

from beanraft.replication import seam
from beanraft.replication.codec import encode_entry

ENTRIES = 20


def _entry() -> bytes:
    return encode_entry(time.time_ns(), [(17, 0, 0)])


def test_a_follower_acknowledges_nothing_after_a_failed_fsync_and_the_others_commit_on(
        tmp_path, monkeypatch):
    async def scenario():
        dirs = [str(tmp_path / name) for name in "abc"]
        nodes = build_three(asyncio.get_running_loop(), data_dirs=dirs)
        for node in nodes:
            node.start()
        try:
            leader = await leader_of(nodes, 30)
            await asyncio.wait_for(leader.submit(_entry()), 20)
            await applied_everywhere(nodes, leader.applied_through())
            failing = next(n for n in nodes if n is not leader)
            journal = seam.journal(failing._sync)
            real = os.fdatasync
            durable = [journal[-1][1]]  # what the follower's good fsyncs made durable, before the failure
            failed_at: list[int] = []

            def fdatasync(fd):  # called from the three Raft threads
                if fd != journal._fd:
                    return real(fd)
                if not failed_at and journal[-1][1] > durable[0]:
                    failed_at.append(journal[-1][1])
                    raise OSError(errno.EIO, "Input/output error")
                last = journal[-1][1]
                real(fd)
                if not failed_at:  # a success after the failure proves nothing
                    durable[0] = max(durable[0], last)

            monkeypatch.setattr(os, "fdatasync", fdatasync)
            # Entries until the follower's fsync has failed, then heartbeats alone: a heartbeat
            # finds the follower's log matching (the entry whose fsync failed is in it), and the
            # follower would answer it with an acknowledgement of that entry.
            for _ in range(ENTRIES):
                await asyncio.wait_for(leader.submit(_entry()), 20)
                if failed_at:
                    break
            assert failed_at, "the follower never synced a new entry: the test proves nothing"
            assert leader.is_leader(), "the leader changed: the match index below is not its"
            last = leader.applied_through()
            await until("the other follower to apply everything",
                        lambda: all(n.applied_through() >= last
                                    for n in nodes if n is not failing), 20)
            await asyncio.sleep(1.0)  # heartbeats: room for an acknowledgement that must not come
            acknowledged = seam.learner_progress(leader._sync, failing.config.self_addr)[0]
            assert acknowledged <= durable[0] < failed_at[0] <= last, (
                acknowledged, durable[0], failed_at[0], last)
            assert journal.failed is not None
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())
