"""A big state waits for a longer journal before its next snapshot (``SNAPSHOT_GROWTH``).

Method: one real ``RaftNode`` with group commit, on disk, with ``--snapshot-bytes`` of 32 KiB.
800 jobs of 1 KiB make a state whose snapshot is estimated at about 900 KB; then small jobs are
put. With a fixed threshold the node wrote its whole state again for every 32 KiB of small
commands (and the test fails at its last check: the journal never gets under the threshold);
here it writes no snapshot until the journal holds half the estimate, and one soon after.
"""

from __future__ import annotations

import asyncio
import logging
import time

from upstream import free_port

from beanraft.jobs.commands import Op
from beanraft.replication.batcher import GroupCommit
from beanraft.replication.config import SNAPSHOT_GROWTH
from beanraft.replication.disk import snapshot_estimate
from beanraft.replication.raft import RaftConfig, RaftNode

COMPACT_BYTES = 32 * 1024
WRITTEN = "snapshot written at index"


class Node:
    def __init__(self, data_dir: str):
        self.config = RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                                 compact_bytes=COMPACT_BYTES)

    async def __aenter__(self) -> "Node":
        self.raft = RaftNode(self.config, asyncio.get_running_loop(), lambda events: None)
        self.raft.start()
        self.commit = GroupCommit(self.raft, commit_timeout_s=10.0)
        epoch = await self.commit.submit((Op.NODE_START, 0, 0, "single"))
        self.sid = (epoch[1] << 32) | 1
        self.seq = 1
        assert await self.commit.submit((Op.OPEN, self.sid, 1)) == ("OK",)
        return self

    async def __aexit__(self, *exc) -> None:
        self.raft.stop()

    async def put(self, count: int, body: bytes) -> None:
        commands = []
        for _ in range(count):
            self.seq += 1
            commands.append((Op.PUT, self.sid, self.seq, 0, 0, 10**9, body))
        replies = await asyncio.gather(*(self.commit.submit(c) for c in commands))
        assert all(r[0] == "INSERTED" for r in replies)

    def journal_bytes(self) -> int:
        return self.raft._journal.size_bytes

    def estimate(self) -> int:
        with self.raft.lock:
            return snapshot_estimate(self.raft.machine)


async def _settle(node: Node, caplog, written: int) -> int:
    """Wait until no snapshot is being written; the count of snapshots written so far."""
    for _ in range(200):
        await asyncio.sleep(0.02)
        if not node.raft._snapshots.busy:
            break
    return sum(WRITTEN in r.getMessage() for r in caplog.records) - written


def test_a_big_state_is_not_written_again_for_every_few_kilobytes_of_commands(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beanraft.snapshot")

    async def scenario():
        async with Node(str(tmp_path)) as node:
            for _ in range(40):
                await node.put(20, b"b" * 1024)  # a state of about 900 KB, in entries of 20 KB
            for _ in range(250):  # until the last snapshot that was due, if any, is written
                await asyncio.sleep(0.02)
                if (node.journal_bytes() <= node.estimate() * SNAPSHOT_GROWTH
                        and not node.raft._snapshots.busy):
                    break
            before = await _settle(node, caplog, 0)
            assert node.journal_bytes() > 4 * COMPACT_BYTES  # far past --snapshot-bytes
            # Small jobs: no snapshot while the journal stays under half the estimate, one once
            # it passes it.
            deadline = time.monotonic() + 30
            over = False
            while not await _settle(node, caplog, before):
                assert time.monotonic() < deadline, (node.journal_bytes(), node.estimate())
                await node.put(50, b"s" * 100)
                over = node.journal_bytes() > node.estimate() * SNAPSHOT_GROWTH
            assert over, "a snapshot while the journal was under half the estimate"
            assert node.journal_bytes() < node.estimate() * SNAPSHOT_GROWTH

    asyncio.run(scenario())
