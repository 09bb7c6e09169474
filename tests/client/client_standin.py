"""A misbehaving node for the client tests: an asyncio server on 127.0.0.1 in a thread of its own.

``StandIn(answer)`` calls ``answer(line, connection_no)`` for every line a client sends (a put's
body is a line of its own) and writes back the bytes it returns; ``b""`` answers nothing, None
hangs up, and a coroutine is awaited first (a node that is slow, then fails). It records every
line and counts connections, so a test can check what the client sent and how often it came.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Awaitable, Callable, Union

from cluster.cluster_harness import HOST

Answer = Union[bytes, None, Awaitable[Union[bytes, None]]]


class StandIn:
    """A stand-in server, stopped by ``stop()`` (or a ``with`` block)."""

    def __init__(self, answer: Callable[[bytes, int], Answer]):
        self.answer = answer
        self.lines: list[tuple[int, bytes]] = []
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the stand-in server did not start"
        self.address = f"{HOST}:{self.port}"

    def _run(self, started: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, HOST, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while line := await reader.readline():
                self.lines.append((number, line))
                reply = self.answer(line, number)
                if asyncio.iscoroutine(reply):
                    reply = await reply
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def sent(self, prefix: bytes) -> list[bytes]:
        """The lines clients sent that start with ``prefix``."""
        return [line for _, line in self.lines if line.startswith(prefix)]

    def stop(self) -> None:
        def shut_down() -> None:
            self._server.close()
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(shut_down)
            self._thread.join(10)

    def __enter__(self) -> "StandIn":
        return self

    def __exit__(self, *args) -> None:
        self.stop()


SESSION = b"SESSION " + b"S" * 32 + b"\r\n"
