"""The unsent replies of one client connection, and the bound on them (its backpressure).

Theory of operation. A reply is queued here and handed to the transport at the end of the loop
iteration that produced it, so the replies of a pipelined burst leave in one send. What the
client has not taken yet is ``unsent``: the replies queued here plus the transport's buffer.
The connection asks ``over_high_water`` before each request it handles and after each reply it
writes; when the answer is yes it hands everything to the transport and waits on ``drained``,
which the transport clears above ``high_water`` bytes and sets again once the kernel has taken
all but ``low_water`` of them. So a connection holds at most ``high_water`` bytes of unsent
replies plus the one reply that crossed the mark, however many requests its client pipelines
without reading. ``queued`` (bytes produced since the last hand-over, i.e. in this loop
iteration) lets the connection bound the work it does before it yields.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from .flag import Flag

#: Unsent replies above this stop the connection (see node/connection.py).
HIGH_WATER_BYTES = 1 << 20
#: ... until the transport's buffer has drained to this.
LOW_WATER_BYTES = 256 * 1024


class Outbox:
    """A connection's reply queue in front of its transport."""

    def __init__(self, transport: asyncio.Transport, high_water: int = HIGH_WATER_BYTES,
                 low_water: int = LOW_WATER_BYTES, on_write: Callable[[], None] | None = None):
        self.transport = transport
        self.on_write = on_write  # told after each hand-over to the transport
        self.high_water = high_water
        transport.set_write_buffer_limits(high=high_water, low=low_water)
        self.drained = Flag()
        self.drained.set()
        self.queued = 0
        self._pieces: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()  # not looked up per write (node/flag.py says why)

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in this loop iteration leaves in one write."""
        self._pieces.append(data)
        self.queued += len(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._send_scheduled)

    def _send_scheduled(self) -> None:
        self._scheduled = False
        self.send_now()

    def send_now(self) -> None:
        """Hand everything queued to the transport (which may then pause writing)."""
        pieces, self._pieces, self.queued = self._pieces, [], 0
        if pieces and not self.transport.is_closing():
            # One piece is written as it is: joining would copy a big job's body once more.
            self.transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            if self.on_write is not None:
                self.on_write()

    @property
    def unsent(self) -> int:
        """Bytes of replies the client has not taken yet."""
        return self.queued + self.transport.get_write_buffer_size()

    def over_high_water(self) -> bool:
        return self.unsent > self.high_water and not self.transport.is_closing()

    # -- called by the protocol's pause_writing / resume_writing / connection_lost ---------

    def pause(self) -> None:
        self.drained.clear()

    def resume(self) -> None:
        self.drained.set()
