"""A session's CLOSE that cannot commit (no leader) is kept and proposed again until it does, by
one task per node however many clients come and go, and no more than ``MAX_KEPT`` are kept.

Method: three real nodes run in this process (client and raft ports on 127.0.0.1, data
directories on disk), and so do their clients. Clients open sessions on one follower; the two
other nodes are stopped, so nothing can commit; the clients hang up and their CLOSEs end as
unknown. The two nodes are started again on the same data and ports: a leader is elected and
every kept CLOSE commits, which the replicated state shows (those sessions are gone).
"""

from __future__ import annotations

import asyncio
import logging

from cluster.cluster_harness import free_ports
from polling import until

from beanraft.node import closes
from beanraft.node.app import Node
from beanraft.node.config import NodeConfig

REPLY_S = 10.0
CLIENTS = 12
KEPT = 8  # the bound, lowered for the test: 4 closes beyond it are dropped
COMMIT_TIMEOUT_S = 2.0
NODE_GRACE_S = 120.0  # the cluster must not end the sessions by itself while the test runs


def _config(ports: list[int], raft: list[str], i: int, tmp_path) -> NodeConfig:
    return NodeConfig(listen="127.0.0.1", port=ports[i], raft=raft[i],
                      peers=[a for a in raft if a != raft[i]], insecure=True,
                      data_dir=str(tmp_path / f"data{i}"), node_grace_s=NODE_GRACE_S,
                      commit_timeout_s=COMMIT_TIMEOUT_S)


async def _request(reader, writer, line: bytes) -> bytes:
    writer.write(line)
    return await asyncio.wait_for(reader.readline(), REPLY_S)


def test_closes_without_a_leader_are_kept_by_one_task_bounded_and_commit_once_a_leader_is_back(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(closes, "MAX_KEPT", KEPT)
    monkeypatch.setattr(closes, "RETRY_S", (0.25, 2.0))  # the pauses, shortened for the test
    caplog.set_level(logging.WARNING, logger="beanraft.connection")

    async def scenario():
        ports = free_ports(6)
        raft = [f"127.0.0.1:{port}" for port in ports[3:]]
        nodes = [Node(_config(ports, raft, i, tmp_path)) for i in range(3)]
        try:
            await asyncio.wait_for(asyncio.gather(*(node.start() for node in nodes)), 60)
            await until("every node to be ready", lambda: all(n.is_ready() for n in nodes), 30)
            kept = next(i for i, n in enumerate(nodes) if not n.raft.is_leader())
            node = nodes[kept]
            clients = [await asyncio.open_connection("127.0.0.1", ports[kept])
                       for _ in range(CLIENTS)]
            for reader, writer in clients:
                assert await _request(reader, writer, b"use t\r\n") == b"USING t\r\n"
            sids = {conn.sid for conn in node.connections}
            assert len(sids) == CLIENTS

            def open_sessions() -> set[int]:
                return node.raft.read(lambda machine: sids & set(machine.sessions))

            assert open_sessions() == sids
            for i in range(3):
                if i != kept:
                    nodes[i]._stopped.set()
                    await nodes[i].shutdown()
            for _reader, writer in clients:
                writer.close()
            await until("the closes to end as unknown and be kept",
                        lambda: len(node.lingering.kept) == KEPT and not node.connections,
                        COMMIT_TIMEOUT_S * 3 + REPLY_S)
            task = node.lingering.task
            assert task is not None and not task.done()
            await asyncio.sleep(closes.RETRY_S[0] * 3)  # retried, still without a leader
            assert len(node.lingering.kept) == KEPT and node.lingering.task is task
            assert "further ones are dropped" in caplog.text
            assert open_sessions() == sids
            retried = set(node.lingering.kept)

            for i in range(3):
                if i != kept:
                    nodes[i] = Node(_config(ports, raft, i, tmp_path))
                    await asyncio.wait_for(nodes[i].start(), 60)
            await until("the kept closes to commit", lambda: not node.lingering.kept,
                        closes.RETRY_S[1] + REPLY_S)
            await until("the task to end", task.done, REPLY_S)
            # The kept ones are closed now. (The dropped ones may be too: a CLOSE whose outcome
            # was unknown may have reached a log, and a later leader commits it.)
            await until(lambda: f"this node to apply them: {len(open_sessions())} open",
                        lambda: not open_sessions() & retried, REPLY_S)
        finally:
            for node in nodes:
                node._stopped.set()
            await asyncio.gather(*(node.shutdown() for node in nodes), return_exceptions=True)

    asyncio.run(scenario())
