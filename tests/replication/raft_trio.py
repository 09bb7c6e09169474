"""Three BeanRaft ``RaftNode`` objects in this process, peers of each other on loopback ports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from polling import until
from pysyncobj.poller import PollPoller
from upstream import free_port

from beanraft.replication import seam
from beanraft.replication.raft import RaftConfig, RaftNode, Timing


def build_three(loop: asyncio.AbstractEventLoop, timing: Timing | None = None,
                data_dirs: list[str] | None = None) -> list[RaftNode]:
    """Three nodes sharing a test secret, not started yet; the caller starts and stops them.
    With ``data_dirs`` their journals are files there (fsynced), else in memory."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    dirs = data_dirs or [None] * 3
    return [RaftNode(RaftConfig(self_addr=a, peers=[b for b in addresses if b != a],
                                secret="test-secret", timing=timing or Timing(), data_dir=d),
                     loop, lambda events: None)
            for a, d in zip(addresses, dirs)]


def start_three(loop: asyncio.AbstractEventLoop) -> list[RaftNode]:
    """Three started nodes sharing a test secret; the caller stops them."""
    nodes = build_three(loop)
    for node in nodes:
        node.start()
    return nodes


async def leader_of(nodes: list[RaftNode], timeout_s: float) -> RaftNode:
    """The first of ``nodes`` that is leader, waiting up to ``timeout_s`` for an election."""
    for _ in range(int(timeout_s / 0.05)):
        leaders = [n for n in nodes if n.is_leader()]
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no leader elected")


async def applied_everywhere(nodes: list[RaftNode], index: int, timeout_s: float = 20) -> None:
    """Wait until every node applied the log through ``index``."""
    await until(lambda: f"index {index} applied everywhere: {[n.applied_through() for n in nodes]}",
                lambda: all(n.applied_through() >= index for n in nodes), timeout_s)


def run_three(body: Callable[[list[RaftNode], RaftNode], Awaitable[None]],
              timing: Timing | None = None) -> None:
    """``asyncio.run``: start three nodes, wait for a leader, ``await body(nodes, leader)``,
    then stop the nodes whatever happened."""
    async def scenario() -> None:
        nodes = build_three(asyncio.get_running_loop(), timing)
        for node in nodes:
            node.start()
        try:
            await body(nodes, await leader_of(nodes, 30))
        finally:
            for node in nodes:
                node.stop()

    asyncio.run(scenario())


@dataclass
class PollWatch:
    """Every poll of the watched nodes' tick threads, checked against a deadline of theirs."""

    left_of: Callable[[RaftNode], float | None]  # seconds to the node's deadline, None if unset
    watched: dict = field(default_factory=dict)  # a node's poller -> the node
    checked: list[float] = field(default_factory=list)  # the distance at each poll with a deadline
    overslept: list[tuple[float, float]] = field(default_factory=list)  # (wait, distance)

    def watch(self, node: RaftNode) -> None:
        self.watched[seam.poller(node._sync)] = node


def watch_polls(monkeypatch, left_of: Callable[[RaftNode], float | None]) -> PollWatch:
    """Record each poll of a watched node that waits past its deadline by more than 5 ms; call
    before the nodes are built (their tick's wait cap binds the poll it finds)."""
    polls = PollWatch(left_of)
    polled = PollPoller.poll

    def watched_poll(poller, timeout):
        node = polls.watched.get(poller)
        left = polls.left_of(node) if node is not None else None
        if left is not None:
            polls.checked.append(left)
            if timeout > max(0.0, left) + 0.005:
                polls.overslept.append((timeout, left))
        return polled(poller, timeout)

    monkeypatch.setattr(PollPoller, "poll", watched_poll)
    return polls
