"""What a connection leaves behind in the node stays bounded: an idle worker's waits off the log
leave nothing once each slice ends, and input that arrives after a connection's request loop has
ended is dropped without counting as input left to parse.

Method: a real single node runs in this process (client port on 127.0.0.1, data directory on
disk) and so do its clients, on the same loop. Nothing else is applied meanwhile, so nothing
drains the node's waiters for it: what is left over is what the connections leave.
"""

from __future__ import annotations

import asyncio

from cluster.cluster_harness import free_ports
from polling import until

from beanraft.node.app import Node
from beanraft.node.config import NodeConfig
from beanraft.node.reserving import UNLOGGED_POLL_S

REPLY_S = 10.0
WORKERS = 20


async def _started(tmp_path) -> tuple[Node, int]:
    port, = free_ports(1)
    node = Node(NodeConfig(listen="127.0.0.1", port=port, data_dir=str(tmp_path / "data")))
    await node.start()
    return node, port


async def _stop(node: Node) -> None:
    node._stopped.set()
    await node.shutdown()


def test_idle_workers_waiting_off_the_log_leave_one_waiter_each_however_long_they_wait(tmp_path):
    # A beanraft.client worker (it asked for a session id) waits in reserve off the log, looking
    # again every UNLOGGED_POLL_S; each look registers a waiter for the next apply.
    async def scenario():
        node, port = await _started(tmp_path)
        try:
            workers = []
            for _ in range(WORKERS):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"session-id\r\n")
                assert (await asyncio.wait_for(reader.readline(), REPLY_S)).startswith(b"SESSION ")
                writer.write(b"reserve-with-timeout 3600\r\n")
                workers.append((reader, writer))
            await until("every worker to wait off the log",
                        lambda: len(node.unlogged_waiters) == WORKERS, REPLY_S)
            for _ in range(4):
                await asyncio.sleep(UNLOGGED_POLL_S * 2)  # two slices of every worker's wait
                assert len(node.raft._apply_waiters) <= WORKERS
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"put 0 0 60 3\r\njob\r\n")
            assert await asyncio.wait_for(reader.readline(), REPLY_S) == b"INSERTED 1\r\n"
            reads = [asyncio.ensure_future(r.readline()) for r, _w in workers]
            done, pending = await asyncio.wait(reads, timeout=REPLY_S,
                                               return_when=asyncio.FIRST_COMPLETED)
            # The waits still see what is applied: one worker has the job.
            assert [task.result() for task in done] == [b"RESERVED 1 3\r\n"]
            for task in pending:
                task.cancel()
            for _reader, w in workers + [(reader, writer)]:
                w.close()
        finally:
            await _stop(node)

    asyncio.run(scenario())


def test_input_after_quit_is_dropped_and_the_next_batch_is_still_proposed_in_its_turn(tmp_path):
    # Bytes that arrive while a finished connection's CLOSE commits are never parsed: they must
    # not count as input left to parse (Node.unread), or no batch would be proposed early again.
    async def scenario():
        node, port = await _started(tmp_path)
        try:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"quit\r\n" + b"x" * (2 << 20))
                try:
                    await asyncio.wait_for(writer.drain(), 5)
                except (ConnectionError, asyncio.TimeoutError):
                    pass  # the node hung up while we wrote: what this test is about
                writer.close()
            await until("the quitting connections to be gone", lambda: not node.connections,
                        REPLY_S)
            assert node.unread == 0
            early = []
            flush_now = node.commit.flush_now
            node.commit.flush_now = lambda: early.append(1) or flush_now()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(5):
                writer.write(b"put 0 0 60 3\r\njob\r\n")
                assert (await asyncio.wait_for(reader.readline(), REPLY_S)).startswith(b"INSERTED")
            assert len(early) == 5
            writer.close()
        finally:
            await _stop(node)

    asyncio.run(scenario())
