"""Waiting in a test for something another task, thread or process will make true."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
from typing import Callable, Sequence


async def until(what: str | Callable[[], str], predicate: Callable[[], bool], timeout_s: float,
                step_s: float = 0.01) -> None:
    """Return once ``predicate()`` holds, polling every ``step_s`` on the running loop; after
    ``timeout_s`` fail, saying ``what`` (or what it returns, then) was awaited."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s} s: {what() if callable(what) else what}")
        await asyncio.sleep(step_s)


def readable(socks: Sequence[socket.socket], timeout_s: float) -> list[socket.socket]:
    """The sockets of ``socks`` with something to read (bytes, EOF or a reset) within ``timeout_s``.
    Not ``select.select``: a test process with many sockets open hands out descriptors past 1024."""
    if not socks:
        return []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        return [key.fileobj for key, _ in selector.select(max(timeout_s, 0))]
