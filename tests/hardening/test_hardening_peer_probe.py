"""Goal: the probe of a client's socket (node/peer.py) answers once per loop iteration, and asks
the kernel again after each write to the client and at the next iteration.

Method: a real asyncio server on loopback with a real client socket. The client half-closes; the
test waits (without yielding the loop) until the kernel shows it, then checks that the probe
still gives the answer it gave earlier in the same iteration, that a write through the
connection's outbox makes it ask again, and that the next iteration does too. With many
connections probed in one iteration, the loop gets one callback for all of them, not one each.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time

from beanraft.node import peer
from beanraft.node.outbox import Outbox


def _wait_until_kernel_sees_fin(fd: int) -> None:
    """Block (the loop with us) until the server's socket shows the client's FIN; at most 5 s."""
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)
    deadline = time.monotonic() + 5
    while not poller.poll(10):
        assert time.monotonic() < deadline, "the FIN never arrived"


async def _half_close_and_probe(after_write: bool) -> list[str]:
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.set_result(transport)

    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    client = socket.create_connection(server.sockets[0].getsockname()[:2])
    try:
        transport = await asyncio.wait_for(accepted, 10)
        probe = peer.PeerProbe(transport)
        outbox = Outbox(transport, on_write=probe.forget)
        seen = [probe.state()]
        client.shutdown(socket.SHUT_WR)
        _wait_until_kernel_sees_fin(transport.get_extra_info("socket").fileno())
        seen.append(probe.state())  # same iteration, nothing written: the earlier answer
        if after_write:
            outbox.write(b"TIMED_OUT\r\n")
            outbox.send_now()
            seen.append(probe.state())  # we wrote: asked again
        await asyncio.sleep(0)
        seen.append(probe.state())  # the next iteration: asked again
        transport.close()
        return seen
    finally:
        client.close()
        server.close()
        await server.wait_closed()


def test_the_probe_keeps_its_answer_within_an_iteration_and_asks_again_at_the_next():
    assert asyncio.run(_half_close_and_probe(after_write=False)) == [
        peer.HERE, peer.HERE, peer.DONE_SENDING]


def test_the_probe_asks_again_after_a_write_to_the_client():
    assert asyncio.run(_half_close_and_probe(after_write=True)) == [
        peer.HERE, peer.HERE, peer.DONE_SENDING, peer.DONE_SENDING]


async def _callbacks_for_probes(count: int) -> tuple[int, list[str]]:
    """Probe ``count`` live connections in one iteration; return the callbacks that scheduled
    and what the probes answer at the next iteration (each client has half-closed by then)."""
    loop = asyncio.get_running_loop()
    accepted: list = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

    server = await loop.create_server(Server, "127.0.0.1", 0)
    clients = [socket.create_connection(server.sockets[0].getsockname()[:2]) for _ in range(count)]
    try:
        for _ in range(500):
            if len(accepted) == count:
                break
            await asyncio.sleep(0.01)
        probes = [peer.PeerProbe(transport) for transport in accepted]
        scheduled = []
        call_soon = loop.call_soon
        loop.call_soon = lambda *args, **kw: scheduled.append(args) or call_soon(*args, **kw)
        try:
            for probe in probes:
                assert probe.state() is peer.HERE
                assert probe.state() is peer.HERE
        finally:
            del loop.call_soon
        for client, transport in zip(clients, accepted):
            client.shutdown(socket.SHUT_WR)
            _wait_until_kernel_sees_fin(transport.get_extra_info("socket").fileno())
        await asyncio.sleep(0)
        return len(scheduled), [probe.state() for probe in probes]
    finally:
        for transport in accepted:
            transport.close()
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()


def test_one_callback_per_iteration_serves_every_probe():
    scheduled, later = asyncio.run(_callbacks_for_probes(8))
    assert scheduled == 1
    assert later == [peer.DONE_SENDING] * 8
