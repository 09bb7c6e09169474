"""Fixtures shared by the protocol tests: feed bytes to a fresh ServerConnection, collect events.

Session-scoped on purpose: they hold no state, and hypothesis refuses function-scoped fixtures.
"""

from __future__ import annotations

from typing import Callable

import pytest

from beanraft.protocol import NEED_DATA, ServerConnection


def drain(connection: ServerConnection) -> list:
    """Every event ``next_request`` has for the bytes received so far."""
    events = []
    while (event := connection.next_request()) is not NEED_DATA:
        events.append(event)
    return events


def feed_chunks(*chunks: bytes, max_job_size: int = 65535) -> list:
    """Feeds ``chunks`` one after the other to a new connection; returns all events in order."""
    connection = ServerConnection(max_job_size)
    events = []
    for chunk in chunks:
        connection.receive_data(chunk)
        events += drain(connection)
    return events


@pytest.fixture(scope="session")
def feed() -> Callable[..., list]:
    """``feed(*chunks, max_job_size=65535) -> events`` on a fresh connection."""
    return feed_chunks


@pytest.fixture(scope="session")
def collect() -> Callable[[ServerConnection], list]:
    """``collect(connection) -> events``: pulls requests until NEED_DATA."""
    return drain
