"""Group commit proposes a batch as soon as no connection has input left to parse in this turn
of the loop, and connections whose input arrived in the same turn still share one batch.

Method: a real single node runs in this process (client port on 127.0.0.1, data directory on
disk) and so do its clients, on the same loop: what a client writes before the test awaits is
in the kernel when the node's loop next looks, so all of it arrives in the same turn.
``GroupCommit.batches`` counts the batches proposed; ``flush_now`` is wrapped to see whether it
found a batch queued (that it proposed one a turn early).
"""

from __future__ import annotations

import asyncio
import socket
import struct

from cluster.cluster_harness import free_ports

from beanraft.node.app import Node
from beanraft.node.config import NodeConfig
from beanraft.replication.batcher import GroupCommit

CLIENTS = 10


async def _started(tmp_path) -> tuple[Node, int]:
    port, = free_ports(1)
    node = Node(NodeConfig(listen="127.0.0.1", port=port, data_dir=str(tmp_path / "data")))
    await node.start()
    return node, port


async def _all_gone(node: Node) -> None:
    """Wait for the node to have no client connection, then check that none counts as unread."""
    for _ in range(200):
        if not node.connections:
            break
        await asyncio.sleep(0.01)
    assert not node.connections
    assert node.unread == 0


async def _stop(node: Node) -> None:
    node._stopped.set()
    await node.shutdown()


def test_input_that_arrives_in_one_turn_is_one_batch(tmp_path):
    async def scenario():
        node, port = await _started(tmp_path)
        try:
            clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CLIENTS)]
            for reader, writer in clients:  # every session open (its OPEN committed)
                writer.write(b"use t\r\n")
                assert await asyncio.wait_for(reader.readline(), 10) == b"USING t\r\n"
            for _ in range(3):
                before = node.commit.batches
                for _reader, writer in clients:  # ten connections' puts, before the node looks
                    writer.write(b"put 0 0 60 3\r\njob\r\nput 0 0 60 3\r\njob\r\n")
                for reader, _writer in clients:
                    for _ in range(2):
                        line = await asyncio.wait_for(reader.readline(), 10)
                        assert line.startswith(b"INSERTED")
                assert node.commit.batches - before == 1  # twenty puts, one batch, one fsync
            assert node.unread == 0
            for _reader, writer in clients:
                writer.close()
        finally:
            await _stop(node)

    asyncio.run(scenario())


def test_a_lone_put_is_proposed_in_the_turn_that_parsed_it(tmp_path, monkeypatch):
    early = []
    plain_flush_now = GroupCommit.flush_now

    def flush_now(self):
        early.append(self._scheduled)
        plain_flush_now(self)

    monkeypatch.setattr(GroupCommit, "flush_now", flush_now)

    async def scenario():
        node, port = await _started(tmp_path)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(20):
                early.clear()
                writer.write(b"put 0 0 60 3\r\njob\r\n")
                assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"INSERTED")
                assert early == [True]  # the put's batch was queued, and proposed there
            assert node.unread == 0
            writer.close()
        finally:
            await _stop(node)

    asyncio.run(scenario())


def test_connections_that_close_with_input_unparsed_leave_no_count_behind(tmp_path):
    async def scenario():
        node, port = await _started(tmp_path)
        try:
            for _ in range(5):
                clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
                for _reader, writer in clients:
                    # A put whose body never comes: the parser holds it when the client goes.
                    writer.write(b"put 0 0 60 100\r\nshort")
                await asyncio.sleep(0.05)
                assert node.unread == 0  # all parsed that could be: they wait for more input
                for _reader, writer in clients:
                    writer.write(b"x" * 50)
                    writer.close()
                await _all_gone(node)
            # A client that pipelines many puts and resets the connection: the node stops
            # running its input when it sees the reset, with input left unparsed.
            for _ in range(5):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"put 0 0 60 3\r\njob\r\n" * 3000)
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                await _all_gone(node)
            # And the count still lets a put through at once afterwards.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"put 0 0 60 3\r\njob\r\n")
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"INSERTED")
            writer.close()
        finally:
            await _stop(node)

    asyncio.run(scenario())
