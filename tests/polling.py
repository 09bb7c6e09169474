"""Waiting in a test for something another task, thread or process will make true."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


async def until(what: str | Callable[[], str], predicate: Callable[[], bool], timeout_s: float,
                step_s: float = 0.01) -> None:
    """Return once ``predicate()`` holds, polling every ``step_s`` on the running loop; after
    ``timeout_s`` fail, saying ``what`` (or what it returns, then) was awaited."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s} s: {what() if callable(what) else what}")
        await asyncio.sleep(step_s)
