"""Goal: a ``reserve_job(id)`` whose reply is lost on node after node returns job ``id`` or raises
``NotFoundError``, never another job, and never waits past its failover.

Method: one stand-in node on loopback (``client_standin``) whose connections fail in turn, as
three nodes would: the first reserves job 5 and hangs up before RESERVED, the second resumes the
session (which holds 5) and hangs up before answering the ``peek 5`` that fetches it, the third
resumes it again. Any ``reserve-with-timeout`` is answered with job 9, which the client must
never send here, let alone return.
"""

from __future__ import annotations

import asyncio

import pytest
from client_standin import SESSION, StandIn

from beanraft.client import AsyncClient, Client, NotFoundError


def resumed(*job_ids: int) -> bytes:
    body = b"---\n" + b"".join(b"- %d\n" % job for job in job_ids)
    return b"RESUMED %d\r\n%s\r\n" % (len(body), body)


def dies_twice(third_holds: tuple[int, ...]):
    """The three nodes in turn; the third resumes a session holding ``third_holds``."""
    def answer(line: bytes, connection: int) -> bytes | None:
        if line == b"session-id\r\n":
            return SESSION
        if line.startswith(b"session-resume "):
            return resumed(5) if connection == 2 else resumed(*third_holds)
        if connection < 3 and line in (b"reserve-job 5\r\n", b"peek 5\r\n"):
            return None  # job 5 is the session's; the reply is lost with the node
        if line == b"peek 5\r\n":
            return b"FOUND 5 4\r\nfive\r\n"
        if line == b"reserve-job 5\r\n":
            return b"NOT_FOUND\r\n"  # 5 is gone (its TTR ran out, another worker has it)
        if line.startswith(b"reserve-with-timeout "):
            return b"RESERVED 9 4\r\nnine\r\n"
        return b"UNKNOWN_COMMAND\r\n"
    return answer


def blocking(address: str):
    with Client(address, timeout=1, failover_timeout=5) as client:
        return client.reserve_job(5)


def in_asyncio(address: str):
    async def scenario():
        async with AsyncClient(address, timeout=1, failover_timeout=5) as client:
            return await asyncio.wait_for(client.reserve_job(5), 10)
    return asyncio.run(scenario())


@pytest.mark.parametrize("call", [blocking, in_asyncio], ids=["Client", "AsyncClient"])
def test_a_reserve_job_lost_on_two_nodes_in_a_row_returns_its_own_job(call):
    with StandIn(dies_twice(third_holds=(5,))) as node:
        job = call(node.address)
        assert (job.id, job.body) == (5, "five")
        assert node.connections == 3
        assert node.sent(b"reserve-with-timeout") == []
        assert [line for number, line in node.lines if number == 3][-1] == b"peek 5\r\n"


@pytest.mark.parametrize("call", [blocking, in_asyncio], ids=["Client", "AsyncClient"])
def test_a_reserve_job_lost_twice_whose_job_the_session_lost_raises_not_found(call):
    with StandIn(dies_twice(third_holds=())) as node:
        with pytest.raises(NotFoundError):
            call(node.address)
        assert node.sent(b"reserve-with-timeout") == []
        assert [line for number, line in node.lines if number == 3][-1] == b"reserve-job 5\r\n"
