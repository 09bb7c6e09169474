"""The server process's cycle collector: no full pass of CPython's own, the node's timer makes them.

Method: the collector's behaviour is watched through ``gc.callbacks`` (which generation each pass
collected) and through ``weakref.finalize`` on cyclic garbage (it runs when a pass frees the
cycle). What changes the process's thresholds runs in a child process, or restores them after.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import weakref

import pytest

from cluster.cluster_harness import free_ports
from polling import until

from beanraft.node import gcpace
from beanraft.node.app import Node
from beanraft.node.config import NodeConfig

GROW = textwrap.dedent("""
    import gc, sys, weakref
    from beanraft.node import gcpace

    class Job:  # as the state machine's: one tracked object per waiting job
        __slots__ = ("id", "body")
        def __init__(self, i):
            self.id, self.body = i, b"x" * 100

    if sys.argv[1] == "paced":
        gcpace.install()
    passes = [0, 0, 0]
    gc.callbacks.append(lambda phase, info: phase == "stop" and passes.__setitem__(
        info["generation"], passes[info["generation"]] + 1))
    class Cell:
        pass

    freed = []
    queue = []
    for i in range(300_000):  # a queue that grows, with some cyclic garbage on the way
        queue.append(Job(i))
        if i % 1000 == 0:
            a, b = Cell(), Cell()
            a.other, b.other = b, a
            weakref.finalize(a, freed.append, i)
            del a, b
    young_freed = len(freed)
    print(passes[0], passes[1], passes[2], young_freed, gcpace.due())
""")


class Cell:
    """Half of a reference cycle (lists cannot carry a weak reference)."""


def _grow(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", GROW, mode], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return out


def test_a_growing_queue_makes_full_passes_by_default_and_none_once_paced():
    young, middle, full, freed, _due = _grow("default")
    assert int(full) >= 2  # CPython's own rule: a quarter more long-lived objects, a full pass
    young, middle, full, freed, due = _grow("paced")
    assert int(full) == 0
    assert int(young) > 100 and int(middle) > 10  # the young generations run as before
    assert int(freed) >= 290  # and free the cyclic garbage (300 cycles, the last may be young)
    assert due == "True"  # as many middle passes as CPython waits for before a full one


def _on_a_paced_node(tmp_path, body):
    """Run ``await body(node, port)`` against a real node in this process with the collector
    paced as ``beanraft serve`` paces it; the process's thresholds are restored after."""
    saved = gc.get_threshold()

    async def scenario():
        gcpace.install()
        port, = free_ports(1)
        node = Node(NodeConfig(listen="127.0.0.1", port=port, data_dir=str(tmp_path / "data")))
        await node.start()
        try:
            return await body(node, port)
        finally:
            node._stopped.set()
            await node.shutdown()

    try:
        return asyncio.run(scenario())
    finally:
        gc.set_threshold(*saved)


def test_the_node_makes_the_full_pass_that_cpython_no_longer_makes(tmp_path, monkeypatch):
    monkeypatch.setattr(gcpace, "FULL_EVERY_S", 0.05)

    async def body(node, port):
        freed = []
        a, b = Cell(), Cell()
        a.other, b.other = b, a
        weakref.finalize(a, freed.append, "cycle")
        gc.collect(1)  # the cycle survives the young passes: it is in the oldest generation
        del a, b
        for _ in range(gcpace.YOUNG_PASSES):
            gc.collect(1)  # young passes alone do not reach it
        assert freed == [] and gcpace.due()
        await until("the cycle freed", lambda: freed, 2)
        assert freed == ["cycle"]
        assert not gcpace.due()

    _on_a_paced_node(tmp_path, body)


async def _churn(port: int, node: Node, count: int) -> list:
    """Open ``count`` connections that each run a command, let them live through young passes
    (into the oldest generation), close them; what the node's transports' finalizers record."""
    clients = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"use churn\r\n")
        assert await reader.readline() == b"USING churn\r\n"
        clients.append(writer)
    freed = []
    for conn in list(node.sessions.values()):
        weakref.finalize(conn.transport, freed.append, conn.sid)
    assert len(freed) == 0 and len(node.sessions) == count
    for _ in range(3):
        gc.collect(1)
    for writer in clients:
        writer.close()
        await writer.wait_closed()
    await until("every session closed", lambda: not node.sessions, 2)
    assert not node.sessions
    for _ in range(gcpace.YOUNG_PASSES):
        gc.collect(1)  # young passes alone never free them: each transport is a cycle
    return freed


@pytest.mark.parametrize("per_pass", [20, 10_000])
def test_closed_connections_hasten_the_full_pass(tmp_path, monkeypatch, per_pass):
    # asyncio's socket transports refer to themselves, so a closed connection that lived through
    # young passes is freed only by a full pass. Connection churn must not pile them up until
    # FULL_EVERY_S: CLOSED_PER_PASS closed connections make a pass due. With a bound of 10,000
    # the 20 stay (this is what would pile up), with 20 they go.
    monkeypatch.setattr(gcpace, "FULL_EVERY_S", 1000.0)
    monkeypatch.setattr(gcpace, "CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(gcpace, "CLOSED_PER_PASS", per_pass)

    async def body(node, port):
        freed = await _churn(port, node, 20)
        if per_pass > 20:
            assert freed == []  # neither closing them nor young passes freed them
            await asyncio.sleep(2)  # many paced checks: none may make a full pass for 20
        else:
            await until(lambda: f"20 freed, not {len(freed)}", lambda: len(freed) == 20, 2)
        return len(freed)

    assert _on_a_paced_node(tmp_path, body) == (20 if per_pass == 20 else 0)
