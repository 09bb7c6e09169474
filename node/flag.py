"""A flag a connection's task waits on: asyncio.Event, bound to its loop once.

asyncio.Event looks up the running loop each time a task waits on it, and on CPython 3.11 that
lookup asks the kernel for the process id (``get_running_loop`` compares it with the pid that
started the loop, in case of a fork). A connection waits for input, for a waiter's outcome or
for its client to take its replies several times per loop iteration under a pipelined load,
so the node's connections wait on ``Flag`` instead: the same set / clear / is_set / wait, with
the loop taken once, when the flag is made, from the loop that makes it.
"""

from __future__ import annotations

import asyncio


class Flag:
    """asyncio.Event's interface for tasks of one loop (the one running when it is made)."""

    __slots__ = ("_loop", "_value", "_waiters")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._value = False
        self._waiters: list[asyncio.Future] = []

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        """Set the flag and wake every task waiting on it."""
        if not self._value:
            self._value = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        """Return True at once if the flag is set, else once it is."""
        if self._value:
            return True
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
