"""Three BeanRaft ``RaftNode`` objects in this process, peers of each other on loopback ports."""

from __future__ import annotations

import asyncio

from upstream import free_port

from beanraft.replication.raft import RaftConfig, RaftNode, Timing


def build_three(loop: asyncio.AbstractEventLoop, timing: Timing | None = None) -> list[RaftNode]:
    """Three nodes sharing a test secret, not started yet; the caller starts and stops them."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    return [RaftNode(RaftConfig(self_addr=a, peers=[b for b in addresses if b != a],
                                secret="test-secret", timing=timing or Timing()),
                     loop, lambda events: None)
            for a in addresses]


def start_three(loop: asyncio.AbstractEventLoop) -> list[RaftNode]:
    """Three started nodes sharing a test secret; the caller stops them."""
    nodes = build_three(loop)
    for node in nodes:
        node.start()
    return nodes
