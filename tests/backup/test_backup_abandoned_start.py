"""A backup asked for and given up before the Raft thread's next tick (what ``POST /admin/backup``
does when the tick does not come within its start timeout) forks no child, leaks no descriptor
and fails no tick; the next backup is taken whole.

Method: a real single RaftNode with the job state machine and a data directory, ticking on this
test's event loop; the future ``take_backup`` returns is cancelled before the loop ticks again,
as ``asyncio.wait_for`` cancels it on a timeout. Children are counted in /proc (by parent pid),
descriptors in /proc/self/fd; the tick's failures are caught in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "replication"))
from lone_node import Harness  # noqa: E402  (tests/replication, beside this directory)

from beanraft.replication.backup_file import BackupReader  # noqa: E402


def children() -> list[int]:
    """The pids whose parent is this process, zombies included."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(entry))
    return found


async def ticks_pass(raft, count: int) -> None:
    """Wait until ``count`` more ticks ran (at most 5 s)."""
    seen = []
    raft._sync.addOnTickCallback(lambda: seen.append(1))
    for _attempt in range(500):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(seen)} ticks in 5 s")


def read_all(fd: int) -> bytes:
    pieces = []
    while piece := os.read(fd, 1 << 20):
        pieces.append(piece)
    return b"".join(pieces)


def test_a_backup_given_up_before_its_tick_forks_nothing_and_the_next_one_runs(tmp_path, caplog):
    caplog.set_level(logging.INFO)

    async def scenario():
        async with Harness(str(tmp_path)) as h:
            await h.put(3)
            before_children, before_fds = children(), sorted(os.listdir("/proc/self/fd"))
            future = h.raft.take_backup()
            assert future.cancel()  # no tick ran since the request: it is still pending
            h.raft.backup_done()  # the handler frees the slot as it answers 503
            await ticks_pass(h.raft, 5)
            assert children() == before_children
            assert sorted(os.listdir("/proc/self/fd")) == before_fds

            stream = await asyncio.wait_for(asyncio.wrap_future(h.raft.take_backup()), 5)
            data = await asyncio.get_running_loop().run_in_executor(None, read_all, stream.fd)
            assert stream.finish()
            h.raft.backup_done()
            reader = BackupReader()
            reader.feed(data)
            assert reader.finish().jobs == 3

    asyncio.run(scenario())
    failures = [r.getMessage() for r in caplog.records
                if "tick failed" in r.getMessage() or "backup not started" in r.getMessage()]
    assert failures == []
