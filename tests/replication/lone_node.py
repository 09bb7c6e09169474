"""One BeanRaft Raft node with group commit and the real job state machine, on the running loop:
the BeanRaft half of tests that drive pysyncobj through ``RaftNode``."""

from __future__ import annotations

import asyncio

from upstream import free_port

from beanraft.jobs.commands import Op
from beanraft.replication.batcher import GroupCommit
from beanraft.replication.raft import COMPACT_BYTES, RaftConfig, RaftNode


class Harness:
    """A single BeanRaft Raft node with group commit, on a loop of its own test's making."""

    def __init__(self, data_dir: str, compact_entries: int = 10**9,
                 compact_bytes: int = COMPACT_BYTES):
        self.config = RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                                 compact_entries=compact_entries, compact_bytes=compact_bytes)

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        self.raft = RaftNode(self.config, loop, lambda events: None)
        self.raft.start()
        self.commit = GroupCommit(self.raft, commit_timeout_s=5.0)
        epoch = await self.commit.submit((Op.NODE_START, 0, 0, "single"))
        self.sid = (epoch[1] << 32) | 1
        self.seq = 1
        assert await self.commit.submit((Op.OPEN, self.sid, 1)) == ("OK",)
        return self

    async def __aexit__(self, *exc):
        self.raft.stop()

    async def put(self, count: int) -> list[int]:
        ids = []
        for _ in range(count):  # one at a time: one log entry each
            self.seq += 1
            reply = await self.commit.submit((Op.PUT, self.sid, self.seq, 0, 0, 10**9, b"job"))
            ids.append(reply[1])
        return ids

    async def put_together(self, count: int, body: bytes) -> None:
        """``count`` puts of ``body`` submitted at once: group commit batches them."""
        commands = []
        for _ in range(count):
            self.seq += 1
            commands.append((Op.PUT, self.sid, self.seq, 0, 0, 10**9, body))
        replies = await asyncio.gather(*(self.commit.submit(c) for c in commands))
        assert all(r[0] == "INSERTED" for r in replies)

    def ready_jobs(self) -> int:
        with self.raft.lock:
            return self.raft.machine.job_counts()["ready"]
