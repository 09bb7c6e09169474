"""Goal: ``failover_timeout`` bounds a failover even when nodes answer part of the handshake and
then fail it, so a client never spins reconnecting forever.

Method: stand-in nodes on loopback (``client_standin``) play the two cases: a node with an auth
file that answers a client without ``auth=`` with AUTH_REQUIRED, and a node without a leader
that answers ``auth`` (no commit needed) and then hangs up on ``session-id`` when its commit times
out. The blocking and the asyncio client must raise ``UnavailableError`` naming the cause within
the budget (plus a connect timeout), after a handful of connections, not thousands.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from client_standin import StandIn

from beanraft.client import AsyncClient, Client, UnavailableError

TIMEOUT_S = 0.5
FAILOVER_TIMEOUT_S = 1.5
# The budget, one connect or reply timeout that may start just before it ends, and slack.
WITHIN_S = FAILOVER_TIMEOUT_S + TIMEOUT_S + 1.5
# With a backoff of 50 ms doubling up to 1 s between rounds, 1.5 s allows about six attempts.
MOST_CONNECTIONS = 20


def requires_auth(line: bytes, _connection: int) -> bytes:
    """A node started with --auth-file, spoken to without auth."""
    if line.startswith(b"auth "):
        return b"AUTH_FAILED\r\n"
    return b"AUTH_REQUIRED\r\n"


async def leaderless(line: bytes, _connection: int) -> bytes | None:
    """A node with an auth file and without a leader: auth is checked locally, anything else
    waits for a commit that times out, and the node hangs up."""
    if line.startswith(b"auth "):
        return b"AUTHENTICATED\r\n"
    await asyncio.sleep(0.1)
    return None


def connect_blocking(address: str, auth) -> tuple[BaseException | None, float]:
    """``Client(...)`` in a thread, bounded: (what it raised, how long it took)."""
    outcome: list = []

    def run() -> None:
        started = time.monotonic()
        try:
            Client(address, timeout=TIMEOUT_S, failover_timeout=FAILOVER_TIMEOUT_S,
                   auth=auth).close()
            outcome.append((None, time.monotonic() - started))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append((error, time.monotonic() - started))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WITHIN_S + 5)
    assert outcome, f"Client() still connecting after {WITHIN_S + 5:g} s"
    return outcome[0]


async def connect_async(address: str, auth) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    client = AsyncClient(address, timeout=TIMEOUT_S, failover_timeout=FAILOVER_TIMEOUT_S,
                         auth=auth)
    try:
        await asyncio.wait_for(client.connect(), WITHIN_S + 5)
        return None, time.monotonic() - started
    except asyncio.TimeoutError:
        pytest.fail(f"AsyncClient.connect() still connecting after {WITHIN_S + 5:g} s")
    except Exception as error:  # noqa: BLE001 - handed to the test
        return error, time.monotonic() - started
    finally:
        await client.close()


CASES = [
    pytest.param(requires_auth, None, "AUTH_REQUIRED", id="no-auth-against-an-auth-file"),
    pytest.param(leaderless, ("alice", "secret"), "connection closed",
                 id="auth-against-a-node-without-a-leader"),
]


@pytest.mark.parametrize("answer, auth, cause", CASES)
def test_a_node_that_fails_the_handshake_after_a_first_reply_exhausts_the_budget(
        answer, auth, cause):
    with StandIn(answer) as node:
        error, took_s = connect_blocking(node.address, auth)
    assert isinstance(error, UnavailableError), error
    assert cause in str(error)
    assert took_s < WITHIN_S
    assert node.connections <= MOST_CONNECTIONS


@pytest.mark.parametrize("answer, auth, cause", CASES)
def test_the_async_client_too_gives_up_within_the_budget(answer, auth, cause):
    with StandIn(answer) as node:
        error, took_s = asyncio.run(connect_async(node.address, auth))
    assert isinstance(error, UnavailableError), error
    assert cause in str(error)
    assert took_s < WITHIN_S
    assert node.connections <= MOST_CONNECTIONS


def test_without_auth_the_error_says_the_node_requires_authentication():
    with StandIn(requires_auth) as node:
        error, _ = connect_blocking(node.address, None)
    assert "the node requires authentication (AUTH_REQUIRED): give the client auth=" in str(error)
