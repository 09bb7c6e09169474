"""After its journal fsync fails, a lone node answers every change with OUT_OF_MEMORY (what
beanstalkd answers when it cannot write its binlog) and ends at once, without claiming it, the
command in flight and anything else that would need the log -- even once fsync succeeds again --
and says so (/readyz, /status, /metrics); it still answers reads, on connections opened after
the failure too (as a fresh session: "default" used and watched). Restarted on the same data
directory, it has every acknowledged job and takes new ones. A cluster's node whose fsync failed closes its client port
and its clients' connections, as a stopped node would, and its clients go on through the others.

Method: real nodes run in this process (client ports on 127.0.0.1, data directories on disk):
one alone, then three in a cluster; so do their clients. One fsync of the node's journal file fails with EIO; every other
fsync is real. Linux lets the fsync after a lost writeback succeed, so a node that retried would
acknowledge a job that may not be on the disk. The commit timeout and each try's timeout are a
minute: a command that waited for either instead of ending at once would miss REPLY_S.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

import pytest
from cluster.cluster_harness import free_ports
from polling import until

from beanraft.client import AsyncClient
from beanraft.node.app import Node
from beanraft.node.closes import RETRY_S
from beanraft.node.config import NodeConfig
from beanraft.node.status import Metrics, status_document

REPLY_S = 10.0
NODE_GRACE_S = 1.0  # a node silent this long has its clients' jobs released by the leader
COMMIT_TIMEOUT_S = 60.0


async def _request(reader, writer, line: bytes) -> bytes:
    writer.write(line)
    return await asyncio.wait_for(reader.readline(), REPLY_S)


async def _peeked(reader, writer, job_id: int, body: bytes) -> None:
    """``peek job_id`` must find the job with ``body``."""
    reply = await _request(reader, writer, b"peek %d\r\n" % job_id)
    assert reply == b"FOUND %d %d\r\n" % (job_id, len(body)), reply
    assert await asyncio.wait_for(reader.readline(), REPLY_S) == body + b"\r\n"


async def _read_answers(reader, writer, line: bytes, head: bytes, body: bytes | None = None) -> None:
    """Send ``line``: an OK reply starting with ``head`` (and its data ``body``, if given)."""
    reply = await _request(reader, writer, line)
    assert reply.startswith(head), (line, reply)
    data = await asyncio.wait_for(reader.readexactly(int(reply.split()[1]) + 2), REPLY_S)
    assert body is None or data == body + b"\r\n", data


async def _closed(reader, writer, line: bytes) -> None:
    """Send ``line``: the node must close the connection within REPLY_S, answering nothing."""
    writer.write(line)
    assert await asyncio.wait_for(reader.read(), REPLY_S) == b""
    writer.close()


def _fail_one_fsync(monkeypatch, node: Node) -> list[int]:
    """The next fdatasync of ``node``'s journal fails with EIO; every other one is real (from
    any node's Raft thread). Returns the list that records the failure."""
    journal, real = node.raft._journal, os.fdatasync
    failures: list[int] = []

    def fdatasync(fd):
        if fd == journal._fd and not failures:
            failures.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return failures


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
            old_reader, old_writer = await asyncio.open_connection("127.0.0.1", port)
            await _peeked(old_reader, old_writer, 1, b"kept")
            metrics = Metrics(node)
            assert b"\nbeanraft_journal_failed 0.0\n" in metrics.render()
            assert status_document(node)["journal_failed"] is False

            failures = _fail_one_fsync(monkeypatch, node)
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
            # A connection opened after the failure (its session's OPEN refused) still reads,
            # as a fresh session would: it uses and watches "default". A monitoring probe that
            # connects for each `stats` keeps working.
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                await _peeked(reader, writer, 1, b"kept")
                await _read_answers(reader, writer, b"stats\r\n", b"OK ")
                await _read_answers(reader, writer, b"stats-tube t\r\n", b"OK ")
                await _read_answers(reader, writer, b"list-tubes-watched\r\n", b"OK ",
                                    b"---\n- default\n")
                assert await _request(reader, writer, b"list-tube-used\r\n") == b"USING default\r\n"
                assert await _request(reader, writer, b"peek-ready\r\n") == b"NOT_FOUND\r\n"
                assert await _request(reader, writer, b"use t\r\n") == b"OUT_OF_MEMORY\r\n"
                writer.close()
            # Their sessions were never opened, and nothing would commit: nothing goes on
            # trying to close them.
            await until("only the connection from before the failure to be left",
                        lambda: len(node.connections) == 1, REPLY_S)
            await asyncio.sleep(RETRY_S[0] * 2)
            assert not node.lingering.kept
            assert node.lingering.task is None or node.lingering.task.done()
            # A connection opened before the failure still reads what the node made durable.
            await _peeked(old_reader, old_writer, 1, b"kept")
            assert await _request(old_reader, old_writer, b"peek 2\r\n") == b"NOT_FOUND\r\n"
            old_writer.close()
        finally:
            await _stopped(node)

        monkeypatch.undo()
        node = await _started(port, data_dir)  # the disk is "replaced": fsync works
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _peeked(reader, writer, 1, b"kept")
            # The job whose fsync failed may or may not be there (its put was never answered);
            # a new job gets an id after it either way.
            assert await _request(reader, writer, b"put 5 0 60 3\r\nnew\r\n") == b"INSERTED 3\r\n"
            writer.close()
        finally:
            await _stopped(node)

    asyncio.run(scenario())


async def _client_on(node: Node, addresses: list[str]) -> AsyncClient:
    """A cluster-aware client given every address, connected to ``node`` (seeds are tried until
    its random first pick is that node: what the node sees, not the client's internals)."""
    for seed in range(64):
        before = len(node.connections)
        client = await AsyncClient(addresses, use="elsewhere", seed=seed, timeout=5.0,
                                   failover_timeout=20.0).connect()
        if len(node.connections) > before:
            return client
        await client.close()
    raise AssertionError("no seed made the client pick the node")


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_a_node_whose_fsync_failed_closes_its_client_port_and_its_clients_go_on_elsewhere(
        role, tmp_path, monkeypatch):
    async def scenario():
        ports = free_ports(6)
        raft = [f"127.0.0.1:{port}" for port in ports[3:]]
        nodes = [Node(NodeConfig(listen="127.0.0.1", port=ports[i], raft=raft[i],
                                 peers=[a for a in raft if a != raft[i]], insecure=True,
                                 data_dir=str(tmp_path / f"data{i}"), node_grace_s=NODE_GRACE_S,
                                 commit_timeout_s=COMMIT_TIMEOUT_S)) for i in range(3)]
        client = None
        try:
            await asyncio.wait_for(asyncio.gather(*(node.start() for node in nodes)), 60)
            for node in nodes:
                node.commit.try_timeout_s = COMMIT_TIMEOUT_S
            await until("every node to be ready", lambda: all(n.is_ready() for n in nodes), 30)
            failing = next(i for i, n in enumerate(nodes) if n.raft.is_leader() == (role == "leader"))
            others = [i for i in range(3) if i != failing]
            conns = [await asyncio.open_connection("127.0.0.1", ports[i]) for i in range(3)]
            reader, writer = conns[failing]
            assert await _request(reader, writer, b"use t\r\n") == b"USING t\r\n"
            assert await _request(reader, writer, b"put 5 0 60 4\r\nkept\r\n") == b"INSERTED 1\r\n"
            assert await _request(reader, writer, b"watch t\r\n") == b"WATCHING 2\r\n"
            assert await _request(reader, writer, b"reserve-with-timeout 0\r\n") == b"RESERVED 1 4\r\n"
            assert await asyncio.wait_for(reader.readline(), REPLY_S) == b"kept\r\n"
            client = await _client_on(nodes[failing], [f"127.0.0.1:{port}" for port in ports[:3]])

            _fail_one_fsync(monkeypatch, nodes[failing])
            # A put through another node: the failing node's fsync of it fails.
            other_reader, other_writer = conns[others[0]]
            assert await _request(other_reader, other_writer,
                                  b"put 5 0 60 3\r\ntwo\r\n") == b"INSERTED 2\r\n"
            await until("the node's fsync to fail", nodes[failing].raft.journal_failed, REPLY_S)
            assert not nodes[failing].is_ready()
            doc = status_document(nodes[failing])
            # It no longer names a role or a leader it does not hold (a failed leader's Raft
            # library would go on calling it the leader).
            assert (doc["journal_failed"], doc["role"], doc["leader"]) == (True, "follower", None)
            assert b"\nbeanraft_raft_is_leader 0.0\n" in Metrics(nodes[failing]).render()
            assert not nodes[failing].raft.is_leader()
            # The failed node hangs up on its clients and takes no new ones, as a stopped
            # node would; it does not answer from a state it can no longer keep current.
            assert await asyncio.wait_for(reader.read(), REPLY_S) == b""
            writer.close()
            try:
                await asyncio.open_connection("127.0.0.1", ports[failing])
            except ConnectionRefusedError:
                pass
            else:
                raise AssertionError("the failed node still accepts clients")
            # The cluster-aware client that was on it goes on through another node.
            job_id = await asyncio.wait_for(client.put("after"), REPLY_S + 20)
            assert not nodes[failing].connections
            # The job reserved through the failed node goes back to ready once the leader has not
            # heard from that node for the grace.
            r, w = conns[others[1]]
            assert await _request(r, w, b"watch t\r\n") == b"WATCHING 2\r\n"
            assert await _request(r, w, b"ignore default\r\n") == b"WATCHING 1\r\n"
            assert await _request(r, w, b"reserve-with-timeout %d\r\n" % (NODE_GRACE_S + 10)) \
                == b"RESERVED 1 4\r\n"
            assert await asyncio.wait_for(r.readline(), REPLY_S) == b"kept\r\n"
            assert await _request(r, w, b"release 1 5 0\r\n") == b"RELEASED\r\n"
            # The two others go on committing, reads included.
            for i in others:
                r, w = conns[i]
                assert (await _request(r, w, b"put 5 0 60 3\r\nnew\r\n")).startswith(b"INSERTED ")
                await _peeked(r, w, 2, b"two")
                await _peeked(r, w, job_id, b"after")
                w.close()
        finally:
            if client is not None:
                await client.close()
            for node in nodes:
                node._stopped.set()
            await asyncio.gather(*(node.shutdown() for node in nodes), return_exceptions=True)

    asyncio.run(scenario())
