"""After its journal fsync fails, a node answers every change with OUT_OF_MEMORY (what beanstalkd
answers when it cannot write its binlog) and ends at once, without claiming it, the command in
flight and anything else that would need the log -- even once fsync succeeds again -- and says
so (/readyz, /status, /metrics). Restarted on the same data directory, it has every
acknowledged job and takes new ones.

Method: a real single node runs in this process (client port on 127.0.0.1, data directory on
disk) and so do its clients. One fsync of the node's journal file fails with EIO; every other
fsync is real. Linux lets the fsync after a lost writeback succeed, so a node that retried would
acknowledge a job that may not be on the disk. The commit timeout and each try's timeout are a
minute: a command that waited for either instead of ending at once would miss REPLY_S.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

from cluster.cluster_harness import free_ports
from polling import until

from beanraft.node.app import Node
from beanraft.node.config import NodeConfig
from beanraft.node.status import Metrics, status_document

REPLY_S = 10.0
COMMIT_TIMEOUT_S = 60.0


async def _request(reader, writer, line: bytes) -> bytes:
    writer.write(line)
    return await asyncio.wait_for(reader.readline(), REPLY_S)


async def _closed(reader, writer, line: bytes) -> None:
    """Send ``line``: the node must close the connection within REPLY_S, answering nothing."""
    writer.write(line)
    assert await asyncio.wait_for(reader.read(), REPLY_S) == b""
    writer.close()


async def _started(port: int, data_dir: str) -> Node:
    node = Node(NodeConfig(listen="127.0.0.1", port=port, data_dir=data_dir,
                           commit_timeout_s=COMMIT_TIMEOUT_S))
    await node.start()
    node.commit.try_timeout_s = COMMIT_TIMEOUT_S  # a try waited out would miss REPLY_S too
    return node


async def _stopped(node: Node) -> None:
    node._stopped.set()
    await node.shutdown()


def test_after_a_failed_fsync_changes_get_out_of_memory_until_a_restart(tmp_path, monkeypatch):
    async def scenario():
        port, = free_ports(1)
        data_dir = str(tmp_path / "data")
        node = await _started(port, data_dir)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await _request(reader, writer, b"use t\r\n") == b"USING t\r\n"
            assert await _request(reader, writer, b"put 5 0 60 4\r\nkept\r\n") == b"INSERTED 1\r\n"
            await until("the node to be ready", node.is_ready, REPLY_S)
            metrics = Metrics(node)
            assert b"\nbeanraft_journal_failed 0.0\n" in metrics.render()
            assert status_document(node)["journal_failed"] is False

            journal = node.raft._journal
            real = os.fdatasync
            failures: list[int] = []

            def fdatasync(fd):  # called from the node's Raft thread
                if fd == journal._fd and not failures:
                    failures.append(fd)
                    raise OSError(errno.EIO, "Input/output error")
                real(fd)

            monkeypatch.setattr(os, "fdatasync", fdatasync)
            # The put whose fsync fails: its outcome is unknown, so the node must not say INSERTED.
            began = time.monotonic()
            await _closed(reader, writer, b"put 5 0 60 4\r\nlost\r\n")
            assert failures, "the journal was never synced after the put: the test proves nothing"
            assert node.raft.journal_failed()
            assert not node.is_ready()  # /readyz answers 503
            assert b"\nbeanraft_journal_failed 1.0\n" in metrics.render()
            assert status_document(node)["journal_failed"] is True

            # fsync works again, and still every change on a fresh connection is refused...
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for line in (b"put 5 0 60 3\r\nnew\r\n", b"use t\r\n", b"watch t\r\n",
                         b"delete 1\r\n", b"kick 1\r\n", b"pause-tube t 1\r\n"):
                assert await _request(reader, writer, line) == b"OUT_OF_MEMORY\r\n", line
            # ...and a reserve, which would commit too, ends the connection at once.
            await _closed(reader, writer, b"reserve-with-timeout 0\r\n")
            assert time.monotonic() - began < COMMIT_TIMEOUT_S
        finally:
            await _stopped(node)

        monkeypatch.setattr(os, "fdatasync", real)
        node = await _started(port, data_dir)  # the disk is "replaced": fsync works
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await _request(reader, writer, b"peek 1\r\n") == b"FOUND 1 4\r\n"
            assert await asyncio.wait_for(reader.readline(), REPLY_S) == b"kept\r\n"
            # The job whose fsync failed may or may not be there (its put was never answered);
            # a new job gets an id after it either way.
            assert await _request(reader, writer, b"put 5 0 60 3\r\nnew\r\n") == b"INSERTED 3\r\n"
            writer.close()
        finally:
            await _stopped(node)

    asyncio.run(scenario())


def test_a_follower_whose_fsync_failed_ends_its_clients_reads_and_the_others_serve_on(
        tmp_path, monkeypatch):
    async def scenario():
        ports = free_ports(6)
        raft = [f"127.0.0.1:{port}" for port in ports[3:]]
        nodes = [Node(NodeConfig(listen="127.0.0.1", port=ports[i], raft=raft[i],
                                 peers=[a for a in raft if a != raft[i]], insecure=True,
                                 data_dir=str(tmp_path / f"data{i}"),
                                 commit_timeout_s=COMMIT_TIMEOUT_S)) for i in range(3)]
        try:
            await asyncio.wait_for(asyncio.gather(*(node.start() for node in nodes)), 60)
            for node in nodes:
                node.commit.try_timeout_s = COMMIT_TIMEOUT_S
            await until("every node to be ready", lambda: all(n.is_ready() for n in nodes), 30)
            failing = next(i for i, n in enumerate(nodes) if not n.raft.is_leader())
            others = [i for i in range(3) if i != failing]
            conns = [await asyncio.open_connection("127.0.0.1", ports[i]) for i in range(3)]
            reader, writer = conns[failing]
            assert await _request(reader, writer, b"put 5 0 60 4\r\nkept\r\n") == b"INSERTED 1\r\n"
            assert await _request(reader, writer, b"peek 1\r\n") == b"FOUND 1 4\r\n"
            assert await asyncio.wait_for(reader.readline(), REPLY_S) == b"kept\r\n"

            journal = nodes[failing].raft._journal
            real = os.fdatasync
            failures: list[int] = []

            def fdatasync(fd):  # called from the three Raft threads
                if fd == journal._fd and not failures:
                    failures.append(fd)
                    raise OSError(errno.EIO, "Input/output error")
                real(fd)

            monkeypatch.setattr(os, "fdatasync", fdatasync)
            # A put through another node: the failing follower's fsync of it fails.
            other_reader, other_writer = conns[others[0]]
            assert await _request(other_reader, other_writer,
                                  b"put 5 0 60 3\r\ntwo\r\n") == b"INSERTED 2\r\n"
            await until("the follower's fsync to fail", nodes[failing].raft.journal_failed, REPLY_S)
            assert not nodes[failing].is_ready()
            # A read on the failed follower cannot be known current: its connection ends at
            # once; a change on a new connection there gets OUT_OF_MEMORY.
            await _closed(reader, writer, b"peek 2\r\n")
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[failing])
            assert await _request(reader, writer, b"put 5 0 60 3\r\nnew\r\n") == b"OUT_OF_MEMORY\r\n"
            writer.close()
            # The two others go on committing, reads included.
            for i in others:
                r, w = conns[i]
                assert (await _request(r, w, b"put 5 0 60 3\r\nnew\r\n")).startswith(b"INSERTED ")
                assert await _request(r, w, b"peek 2\r\n") == b"FOUND 2 3\r\n"
                assert await asyncio.wait_for(r.readline(), REPLY_S) == b"two\r\n"
                w.close()
        finally:
            for node in nodes:
                node._stopped.set()
            await asyncio.gather(*(node.shutdown() for node in nodes), return_exceptions=True)

    asyncio.run(scenario())
