"""The leader's timer pulse wakes for what can change its plan, not for every applied batch.

Method: a real single node runs in this process (its client port on 127.0.0.1, a data directory
on disk); puts go over a real socket, one at a time. The pulse's wake-up event is swapped for one
that counts how often it is set.
"""

from __future__ import annotations

import asyncio

from cluster.cluster_harness import free_ports

from beanraft.node.app import Node
from beanraft.node.config import NodeConfig


class CountingEvent(asyncio.Event):
    def __init__(self):
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


async def _put(reader, writer, line: bytes) -> bytes:
    writer.write(line)
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 10)


def test_applied_puts_do_not_wake_the_pulse_and_an_earlier_deadline_does(tmp_path):
    async def scenario():
        port, = free_ports(1)
        node = Node(NodeConfig(listen="127.0.0.1", port=port, data_dir=str(tmp_path / "data")))
        node._pulse_wake = wake = CountingEvent()
        await node.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # Wait for the pulse to have seen this node lead (it was woken for the role change).
            for _ in range(200):
                if node._pulse_leader:
                    break
                await asyncio.sleep(0.01)
            assert node._pulse_leader
            before = wake.sets
            for _ in range(100):
                assert (await _put(reader, writer, b"put 0 0 60 3\r\njob\r\n")).startswith(b"INSERTED")
            assert wake.sets == before  # 100 applied batches, none of them a reason to wake

            assert await _put(reader, writer, b"put 0 1 60 3\r\njob\r\n") == b"INSERTED 101\r\n"
            deadline = node.raft.next_deadline_ns()
            assert deadline is not None
            # Both sides of the rule, called as the apply listener is: a pulse that sleeps
            # past the delayed job's deadline is woken, one that wakes before it is not.
            node._pulse_until_ns = deadline + 1
            before = wake.sets
            node._nudge_pulse()
            assert wake.sets == before + 1
            node._pulse_until_ns = deadline
            node._nudge_pulse()
            assert wake.sets == before + 1
            writer.close()
        finally:
            node._stopped.set()
            await node.shutdown()

    asyncio.run(scenario())
