"""Run a node inside the current process, on a thread of its own (tests, embedding)."""

from __future__ import annotations

import asyncio
import threading

from .config import NodeConfig


class EmbeddedNode:
    """A BeanRaft node served by an event loop on a background thread.

    ``start()`` returns once the node accepts clients; ``stop()`` shuts it down gracefully.
    Signals are not handled here (only the main thread may install handlers).
    """

    def __init__(self, config: NodeConfig):
        self.config = config
        self.node = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="beanraft-node", daemon=True)

    def start(self, timeout: float = 20.0) -> "EmbeddedNode":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("embedded node did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    @property
    def address(self):
        if self.config.unix_path:
            return self.config.unix_path
        port = self.config.port
        if port == 0 and self.node is not None:
            port = self.node.servers[0].sock.getsockname()[1]
        return (self.config.listen, port)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from .app import Node

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.node = Node(self.config)
            await self.node.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.node.shutdown()
