"""Goal: a node that trickles a reply (a byte now and then, never the whole reply) is failed over
like a silent one, while a large job body that keeps coming at a steady rate is received whole,
however long it takes; each reply of a pipeline has a budget of its own.

Method: the core is driven by hand with virtual time (feeding bytes at chosen moments and asking
when it gives up); then both clients run against a real TCP server on 127.0.0.1 in the test
(``SlowNode``) that writes its replies piece by piece with pauses: on its first connection a
trickle of one byte every 0.2 s against a client timeout of 1 s, on the next the whole reply;
and a 1 MiB body in 32 KiB pieces every 0.1 s, which takes about three timeouts.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from typing import Callable, Iterable

import pytest

from beanraft import protocol as p
from beanraft.client import AsyncClient, Client, ops
from beanraft.client.core import DOWN, READY, Core
from beanraft.client.deadline import MIN_REPLY_RATE_BYTES_PER_S

from cluster.cluster_harness import HOST

RATE = MIN_REPLY_RATE_BYTES_PER_S


def ready_core() -> Core:
    """A core READY on a plain beanstalkd (no handshake after the first), timeout 2 s."""
    core = Core([(HOST, 1)], timeout_s=2.0, failover_timeout_s=10.0, rng=random.Random(1))
    core.start(0.0)
    core.next_attempt(0.0)
    core.connected((HOST, 1), 0.0)
    assert core.data_to_send() == b"session-id\r\n"
    core.receive_data(b"UNKNOWN_COMMAND\r\n", 0.1)
    assert core.state == READY
    return core


def peek(job_id: int) -> ops.Op:
    return ops.peek("peek", p.Peek(job_id), lambda reply: reply.body)


def found(job_id: int, body: bytes) -> bytes:
    return b"FOUND %d %d\r\n%s\r\n" % (job_id, len(body), body)


# ------------------------------------------------------------------ the core, virtual time


def test_a_reply_trickled_a_byte_at_a_time_fails_the_node_after_the_timeout():
    core = ready_core()
    op = peek(1)
    core.submit(op, 1.0)
    reply = found(1, b"x" * 100)
    now = 1.0
    for byte in range(len(reply)):  # a byte every 1.9 s: never silent for the 2 s timeout
        now += 1.9
        core.tick(now)
        if core.state == DOWN:
            break
        core.receive_data(reply[byte:byte + 1], now)
    assert core.state == DOWN and now <= 1.0 + 2 * 1.9
    assert "reply incomplete after" in core.episode.summary()


def test_a_large_body_that_keeps_coming_faster_than_the_minimum_rate_is_never_cut():
    core = ready_core()
    op = peek(2)
    core.submit(op, 1.0)
    chunk = RATE * 2  # twice the minimum rate, a piece every second, for 40 s
    body = bytes(chunk * 40)
    reply = found(2, body)
    now = 1.0
    for start in range(0, len(reply), chunk):
        now += 1.0
        core.tick(now)
        assert core.state == READY, f"cut after {now - 1.0:g} s"
        core.receive_data(reply[start:start + chunk], now)
    assert op.outcome() == body


def test_a_body_slower_than_the_minimum_rate_is_cut_once_it_falls_a_timeout_behind():
    core = ready_core()
    core.submit(peek(3), 0.0)
    core.receive_data(b"FOUND 3 1000000\r\n", 0.0)  # the size announced buys no time
    pieces = iter(range(1, 100))
    now = 0.0
    while core.state == READY and (second := next(pieces, None)) is not None:
        now = float(second)
        core.tick(now)
        if core.state == READY:
            core.receive_data(bytes(RATE // 2), now)  # half the minimum rate
    # Due at 0 with r bytes in: overdue at r / RATE + 2 s; at half the rate r = RATE / 2 * t.
    assert core.state == DOWN and now == 4.0


def test_each_reply_of_a_pipeline_is_due_from_when_the_one_before_it_was_complete():
    core = ready_core()
    first, second = peek(1), peek(2)
    core.submit(first, 1.0)
    core.submit(second, 1.0)
    assert core.next_deadline() == pytest.approx(1.0 + 2.0)
    tail = b"FOUND 2 5000\r\n"
    core.receive_data(found(1, b"one") + tail, 2.9)  # the first, and the start of the second
    assert first.outcome() == b"one"
    # The second is due from 2.9 (not from 1.0, when it was sent), with its first bytes in.
    assert core.next_deadline() == pytest.approx(2.9 + 2.0)
    core.receive_data(bytes(2000), 4.0)
    assert core.next_deadline() == pytest.approx(2.9 + (len(tail) + 2000) / RATE + 2.0)


# ------------------------------------------------------------------ both clients, real sockets

TIMEOUT_S = 1.0
TRICKLE_GAP_S = 0.2  # well inside TIMEOUT_S: the node is never silent for a timeout
# The trickle lasts about 200 s (1016 bytes); the client must be done long before.
WITHIN_S = 15.0
TRICKLED = found(1, b"t" * 1000)
LARGE_BODY = bytes(range(256)) * 4096  # 1 MiB
LARGE_PIECE = 32 * 1024
LARGE_GAP_S = 0.1  # 320 KiB/s: 20 times the minimum rate; about 3.2 s for the whole body

Pieces = Iterable[tuple[bytes, float]]


def slowly(line: bytes, connection: int) -> Pieces:
    """What the node writes for a line, as (bytes, pause after them) pieces."""
    if line == b"peek 1\r\n":
        if connection == 1:
            return [(TRICKLED[i:i + 1], TRICKLE_GAP_S) for i in range(len(TRICKLED))]
        return [(TRICKLED, 0.0)]
    if line == b"peek 2\r\n":
        reply = found(2, LARGE_BODY)
        return [(reply[i:i + LARGE_PIECE], LARGE_GAP_S)
                for i in range(0, len(reply), LARGE_PIECE)]
    return [(b"UNKNOWN_COMMAND\r\n", 0.0)]  # session-id too: a plain beanstalkd


class SlowNode:
    """A TCP server on 127.0.0.1 that writes each reply piece by piece (``slowly``)."""

    def __init__(self, answer: Callable[[bytes, int], Pieces]):
        self.answer = answer
        self.connections = 0
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)
        self.address = "%s:%d" % self._listener.getsockname()[:2]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.connections += 1
            self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, self.connections),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, connection: int) -> None:
        try:
            with conn, conn.makefile("rb") as lines:
                for line in lines:  # until the client hangs up or stop() shuts it down
                    for piece, pause_s in self.answer(line, connection):
                        conn.sendall(piece)
                        if pause_s and self._stop.wait(pause_s):
                            return
        except OSError:
            pass  # the client gave up on this connection

    def stop(self) -> None:
        self._stop.set()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> "SlowNode":
        return self

    def __exit__(self, *args) -> None:
        self.stop()


def peek_blocking(address: str, job_id: int) -> tuple[object, int, float]:
    """``Client.peek(job_id)`` in a thread, bounded: (its body or what it raised, failovers,
    seconds taken)."""
    outcome: list = []

    def run() -> None:
        started = time.monotonic()
        try:
            with Client(address, encoding=None, timeout=TIMEOUT_S, failover_timeout=10) as client:
                body = client.peek(job_id).body
                outcome.append((body, client.failovers, time.monotonic() - started))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append((error, -1, time.monotonic() - started))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WITHIN_S)
    assert outcome, f"Client.peek({job_id}) still waiting after {WITHIN_S:g} s"
    return outcome[0]


async def peek_async(address: str, job_id: int) -> tuple[object, int, float]:
    started = time.monotonic()
    client = AsyncClient(address, encoding=None, timeout=TIMEOUT_S, failover_timeout=10)
    try:
        await asyncio.wait_for(client.connect(), WITHIN_S)
        try:
            job = await asyncio.wait_for(client.peek(job_id), WITHIN_S)
        except asyncio.TimeoutError:
            pytest.fail(f"AsyncClient.peek({job_id}) still waiting after {WITHIN_S:g} s")
        return job.body, client.failovers, time.monotonic() - started
    finally:
        await client.close()


SHELLS = [
    pytest.param(peek_blocking, id="Client"),
    pytest.param(lambda address, job_id: asyncio.run(peek_async(address, job_id)),
                 id="AsyncClient"),
]


@pytest.mark.parametrize("peek_with", SHELLS)
def test_a_node_that_trickles_its_reply_is_failed_over_within_the_timeout(peek_with):
    with SlowNode(slowly) as node:
        body, failovers, took_s = peek_with(node.address, 1)
    assert body == TRICKLED.split(b"\r\n")[1], body
    assert failovers == 1 and node.connections == 2
    assert took_s < WITHIN_S


@pytest.mark.parametrize("peek_with", SHELLS)
def test_a_large_body_arriving_steadily_for_several_timeouts_is_received_whole(peek_with):
    with SlowNode(slowly) as node:
        body, failovers, _ = peek_with(node.address, 2)
    assert body == LARGE_BODY, body if isinstance(body, BaseException) else len(body)
    assert failovers == 0 and node.connections == 1
