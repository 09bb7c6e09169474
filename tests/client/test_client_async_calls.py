"""Goal: an ``AsyncClient`` call that is cancelled, or whose reply cannot be converted, affects
that call alone: ``max_in_flight`` stays a bound, a cancelled command that was not sent is never
sent, a job reserved for a cancelled ``reserve`` goes back to its tube, and a body that does not
decode raises in its caller while the connection and the other calls carry on.

Method: stand-in nodes on loopback (``client_standin``) that stay silent or answer late show what
the client sends; the real beanstalkd 1.12 and a real BeanRaft node (``plain_target``) show where
the jobs end up, read back with ``stats-job`` by other clients.
"""

from __future__ import annotations

import asyncio

import pytest
from client_standin import SESSION, StandIn

from beanraft.client import AsyncClient, Client, UnknownResponseError

MAX_IN_FLIGHT = 4


def in_flight(client: AsyncClient) -> int:
    """The client's ops queued or awaiting a reply."""
    core = client._core
    return len(core.pending) + len({id(op) for _, op, _ in core.sent if op is not None})


def silent(line: bytes, _connection: int) -> bytes:
    """A node that opens sessions and then never answers a command (a slow commit)."""
    return SESSION if line == b"session-id\r\n" else b""


def test_cancelled_calls_keep_max_in_flight_a_bound_on_the_commands_outstanding():
    async def scenario() -> None:
        async with AsyncClient(node.address, timeout=30, max_in_flight=MAX_IN_FLIGHT) as client:
            for _ in range(40):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.put(b"x"), 0.02)
            await asyncio.sleep(0.2)
            assert in_flight(client) == MAX_IN_FLIGHT  # sent, unanswered: they hold the slots
            assert len(node.sent(b"put-key ")) == MAX_IN_FLIGHT

    with StandIn(silent) as node:
        asyncio.run(scenario())


async def answer_late(line: bytes, _connection: int) -> bytes:
    """A node whose sessions take 0.5 s to open."""
    if line == b"session-id\r\n":
        await asyncio.sleep(0.5)
        return SESSION
    if line == b"list-tube-used\r\n":
        return b"USING default\r\n"
    return b"UNKNOWN_COMMAND\r\n"


def test_a_call_cancelled_before_its_command_was_sent_is_never_sent():
    async def scenario() -> None:
        client = AsyncClient(node.address, timeout=5, max_in_flight=MAX_IN_FLIGHT)
        connecting = asyncio.ensure_future(client.connect())
        try:
            await asyncio.sleep(0.1)  # connected, session-id awaited: the put is queued
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.put(b"x"), 0.05)
            await asyncio.wait_for(connecting, 5)
            assert await client.using() == "default"
            assert in_flight(client) == 0
        finally:
            await client.close()

    with StandIn(answer_late) as node:
        asyncio.run(scenario())
        assert node.sent(b"put") == [] and node.sent(b"list-tube-used")


def test_a_job_reserved_for_a_cancelled_reserve_goes_back_with_its_priority(plain_target, tube):
    async def scenario() -> None:
        async with AsyncClient(plain_target.address, watch=tube) as quitter, \
                AsyncClient(plain_target.address, watch=tube) as worker:
            # Its reserve slices outlast the test: in a 1 s one, a loaded machine could take the
            # rest of the slice to connect the producer, and the slice would end unanswered.
            quitter._core.reserve_slice_s = 60
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(quitter.reserve(), 0.3)
            # The quitter's reserve is still on the wire (a plain reserve, or a slice): it
            # takes this job, and must hand it back rather than hide it for its TTR.
            with Client(plain_target.address, use=tube) as producer:
                job_id = producer.put("work", priority=7, ttr=60)
            # Only then may the worker ask: on BeanRaft a slice waits off the log and reserves
            # once it sees the job, so a reserve sent at once could take it first.
            for _ in range(200):
                stats = await worker.stats_job(job_id)
                if stats["releases"] == 1 and stats["state"] == "ready":
                    break
                await asyncio.sleep(0.05)
            assert (stats["pri"], stats["reserves"], stats["releases"]) == (7, 1, 1), stats
            job = await asyncio.wait_for(worker.reserve(timeout=5), 10)
            assert (job.id, job.body) == (job_id, "work")
            stats = await worker.stats_job(job)
            assert (stats["pri"], stats["reserves"], stats["releases"]) == (7, 2, 1)
            await job.delete()
            assert not quitter._core.held and in_flight(quitter) == 0
            assert quitter._slots._value == 64  # every slot free again

    asyncio.run(scenario())


def test_a_body_that_does_not_decode_fails_that_call_alone(plain_target, tube):
    with Client(plain_target.address, encoding=None, use=tube) as producer:
        job_id = producer.put(b"\xff\xfe not utf-8")

    async def scenario() -> None:
        async with AsyncClient(plain_target.address, watch=tube, use=tube) as client:
            reserved, stats = await asyncio.wait_for(asyncio.gather(
                client.reserve(timeout=2), client.stats_job(job_id), return_exceptions=True), 10)
            assert isinstance(reserved, UnicodeDecodeError)
            assert stats["state"] == "reserved"
            assert await asyncio.wait_for(client.put("next"), 10) > job_id
            assert client.failovers == 0

    asyncio.run(scenario())


def test_the_blocking_client_raises_the_same_decode_error_and_carries_on(plain_target, tube):
    with Client(plain_target.address, encoding=None, use=tube) as producer:
        producer.put(b"\xff not utf-8")
    with Client(plain_target.address, watch=tube, use=tube) as client:
        with pytest.raises(UnicodeDecodeError):
            client.reserve(timeout=2)
        assert client.put("next") > 0 and client.failovers == 0


def malformed_stats(line: bytes, _connection: int) -> bytes:
    if line == b"session-id\r\n":
        return SESSION
    if line == b"stats\r\n":
        return b"OK 5\r\nhello\r\n"  # not the YAML mapping stats answers with
    return b"USING default\r\n"


def test_a_malformed_ok_body_fails_that_call_alone():
    async def scenario() -> None:
        async with AsyncClient(node.address, timeout=5) as client:
            stats, using = await asyncio.wait_for(asyncio.gather(
                client.stats(), client.using(), return_exceptions=True), 10)
            assert isinstance(stats, UnknownResponseError), stats
            assert using == "default" and client.failovers == 0

    with StandIn(malformed_stats) as node:
        asyncio.run(scenario())
        assert node.connections == 1
