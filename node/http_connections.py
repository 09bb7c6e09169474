"""The HTTP port's connections: how many may be open at once, which one gives way past that, and
when one has closed.

Theory of operation. aiohttp serves each connection with a protocol of its own; the listeners
call ``Connections`` instead of aiohttp's factory, and it puts a ``_Tracked`` protocol in front of
aiohttp's: one that forwards every event unchanged and tells ``Connections`` when its connection
opens and closes. So the endpoint counts its connections, closes one, and learns that one has
closed, through asyncio's public protocol interface only.
* At most ``MAX_CONNECTIONS`` are open at once (a TLS connection counts once its handshake is
  done). The connection that passes the bound closes the oldest one that is not serving a
  request of an authenticated principal (``serving``): an idle keep-alive connection, a request
  head still arriving, a read, a refused token waiting for its back-off. Only when every other
  connection serves a principal is the newcomer closed instead. So strangers hold at most
  ``MAX_CONNECTIONS`` descriptors and leave the rest to the client port and Raft, and cannot keep
  a fresh request out: a connection gives way only to ``MAX_CONNECTIONS`` opened after it.
* At most ``MAX_REQUEST_BYTES`` arrive on a connection between two requests being taken up
  (``began``; from the accept for the first): the next request's line and headers, and the
  body of the one before. One more byte closes the connection before aiohttp sees it. aiohttp
  bounds a header's length and the headers' count, not their sum, and holds each header twice
  while the head arrives (about 1 MB for 32 headers of 8 KB names and values).
* ``gone(request)`` is a future done once the request's connection has closed: aiohttp lets a
  handler run on after its client hung up, and the guard (``api.py``) stops an authentication
  that waits for its turn then.
* One WARNING line when the bound on connections first closes one, then at most one a minute;
  one DEBUG line for each connection that sends too much (a port scanner is not an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

log = logging.getLogger("beanraft.http")

MAX_CONNECTIONS = 512  # open at once on the HTTP port
MAX_REQUEST_BYTES = 64 << 10  # received on a connection between two requests being taken up
LOG_EVERY_S = 60.0  # at most one WARNING line this often while the bound closes connections


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol of one connection, behind a forwarder that reports its life."""

    def __init__(self, owner: Connections, inner: asyncio.Protocol):
        self._owner = owner
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self.principals = 0  # requests of an authenticated principal this connection serves
        self.unserved_bytes = 0  # received since its last request was taken up (or its accept)
        self.gone: asyncio.Future | None = None  # made when first asked for (``Connections.gone``)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._inner.connection_made(transport)
        self._owner._opened(self)

    def connection_lost(self, exc) -> None:
        self._owner._forget(self)
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.unserved_bytes += len(data)
        if self.unserved_bytes > self._owner.max_request_bytes:
            if self.transport is not None and not self.transport.is_closing():
                log.debug("HTTP port: %s sent more than %d bytes before a request was taken up; "
                          "connection closed", self.transport.get_extra_info("peername"),
                          self._owner.max_request_bytes)
                self.transport.abort()
            return
        self._inner.data_received(data)

    def eof_received(self):
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class Connections:
    """The HTTP port's open connections (a protocol factory; ``serve`` gives it aiohttp's)."""

    def __init__(self, limit: int = MAX_CONNECTIONS, max_request_bytes: int = MAX_REQUEST_BYTES):
        assert limit > 0 and max_request_bytes > 0
        self.limit = limit
        self.max_request_bytes = max_request_bytes
        self.closed_by_bound = 0
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._live: dict[_Tracked, None] = {}  # oldest first
        self._by_transport: dict[object, _Tracked] = {}
        self._logged_at: float | None = None

    def serve(self, factory: Callable[[], asyncio.Protocol]) -> None:
        """Serve each new connection with a protocol from ``factory`` (aiohttp's server)."""
        self._factory = factory

    def __call__(self) -> asyncio.Protocol:
        assert self._factory is not None, "serve() first"
        return _Tracked(self, self._factory())

    def __len__(self) -> int:
        return len(self._live)

    def began(self, request) -> None:
        """``request`` is taken up: its connection may send ``max_request_bytes`` afresh."""
        conn = self._by_transport.get(request.transport)
        if conn is not None:
            conn.unserved_bytes = 0

    @contextlib.contextmanager
    def serving(self, request):
        """While the block runs, ``request``'s connection serves an authenticated principal
        (a backup, a membership change) and is not closed to make room."""
        conn = self._by_transport.get(request.transport)
        if conn is not None:
            conn.principals += 1
        try:
            yield
        finally:
            if conn is not None:
                conn.principals -= 1

    def gone(self, request) -> asyncio.Future:
        """A future done once ``request``'s connection has closed (at once if it has)."""
        conn = self._by_transport.get(request.transport)
        if conn is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if conn.gone is None:
            conn.gone = asyncio.get_running_loop().create_future()
        return conn.gone

    def _opened(self, conn: _Tracked) -> None:
        self._live[conn] = None
        self._by_transport[conn.transport] = conn
        if len(self._live) <= self.limit:
            return
        # The newcomer serves no principal yet: the search ends there at the latest.
        victim = next(c for c in self._live if not c.principals)
        self._forget(victim)
        victim.transport.abort()  # connection_lost follows, which forgets it again: harmless
        self.closed_by_bound += 1
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("HTTP port: %d connections open, its bound; closing the oldest that "
                        "serves no principal's request (%d closed so far; logged at most once "
                        "a minute)", self.limit, self.closed_by_bound)

    def _forget(self, conn: _Tracked) -> None:
        self._live.pop(conn, None)
        if self._by_transport.get(conn.transport) is conn:
            del self._by_transport[conn.transport]
