"""A big state waits for a journal of half its size before its next snapshot.

Method: one real ``RaftNode`` with group commit, on disk, with ``--snapshot-bytes`` of 32 KiB.
800 jobs of 1 KiB make a state whose snapshot is estimated at about 900 KB; then small jobs are
put. With a fixed threshold the node wrote its whole state again for every 32 KiB of small
commands (the test then fails: a snapshot while the journal was under half the estimate); here
it writes no snapshot until the journal holds half the estimate, and one soon after.
"""

from __future__ import annotations

import asyncio
import logging
import time

from lone_node import Harness

from beanraft.replication.disk import snapshot_estimate

COMPACT_BYTES = 32 * 1024
HALF = 0.5  # of the estimated snapshot: the journal a snapshot waits for (config.SNAPSHOT_GROWTH)
WRITTEN = "snapshot written at index"


def _journal_bytes(node: Harness) -> int:
    return node.raft._journal.size_bytes


def _estimate(node: Harness) -> int:
    with node.raft.lock:
        return snapshot_estimate(node.raft.machine)


async def _settle(node: Harness, caplog, written: int) -> int:
    """Wait until no snapshot is being written; the count of snapshots written so far."""
    for _ in range(200):
        await asyncio.sleep(0.02)
        if not node.raft._snapshots.busy:
            break
    return sum(WRITTEN in r.getMessage() for r in caplog.records) - written


def test_a_big_state_is_not_written_again_for_every_few_kilobytes_of_commands(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beanraft.snapshot")

    async def scenario():
        async with Harness(str(tmp_path), compact_bytes=COMPACT_BYTES) as node:
            for _ in range(40):
                await node.put_together(20, b"b" * 1024)  # a state of about 900 KB, in entries of 20 KB
            for _ in range(250):  # until the last snapshot that was due, if any, is written
                await asyncio.sleep(0.02)
                if (_journal_bytes(node) <= _estimate(node) * HALF
                        and not node.raft._snapshots.busy):
                    break
            before = await _settle(node, caplog, 0)
            # Small jobs: no snapshot while the journal stays under half the estimate, one once
            # it passes it.
            deadline = time.monotonic() + 30
            over, peak = False, _journal_bytes(node)
            while not await _settle(node, caplog, before):
                assert time.monotonic() < deadline, (_journal_bytes(node), _estimate(node))
                await node.put_together(50, b"s" * 100)
                peak = max(peak, _journal_bytes(node))
                over = _journal_bytes(node) > _estimate(node) * HALF
            assert over, "a snapshot while the journal was under half the estimate"
            assert peak > 4 * COMPACT_BYTES  # far past --snapshot-bytes before that snapshot
            assert _journal_bytes(node) < _estimate(node) * HALF

    asyncio.run(scenario())
