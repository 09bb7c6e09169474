"""Listening sockets served on an asyncio loop, that back off instead of spinning when descriptors
run out.

Theory of operation. asyncio's own accept loop (``loop.create_server``), on EMFILE, ENFILE,
ENOBUFS or ENOMEM, logs a traceback and schedules a retry once per slot of the backlog (1,024
tracebacks and 1,024 retries per burst, every second), which filled logs with tens of MB within
seconds. Here each listening socket is watched with ``add_reader``; a readable socket is accepted
from up to ``ACCEPT_BATCH`` times, and each accepted socket is handed to asyncio with the public
``loop.connect_accepted_socket``, so transports and protocols are asyncio's as before. When
``accept`` fails for lack of resources, the reader is removed (the socket stays bound and the
kernel keeps queueing connections in its backlog) and added back after ``BACKOFF_S``, doubling up
to ``BACKOFF_MAX_S`` while failures go on. One WARNING line marks the start of a burst and one
INFO line its end: a burst ends once ``QUIET_S`` pass without a failure (while descriptors are
scarce, a single accept often succeeds between failures). Nothing but ``close`` closes the
listening socket.

With ``tls`` (a ``tls.ServerTls``: the context of the moment and the handshake timeout), asyncio
shakes hands before the protocol sees the connection; a handshake that fails or times out
closes the socket and is logged as one INFO line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from typing import Callable

from .tls import ServerTls, describe

log = logging.getLogger("beanraft.accept")

ACCEPT_BATCH = 64  # connections accepted per readable event
BACKOFF_S = 0.05  # first pause after an accept fails for lack of resources
BACKOFF_MAX_S = 1.0
BACKLOG = 1024
QUIET_S = 5.0  # without a failure for this long, a burst of failures is over
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """One bound, listening socket, served on ``loop`` with ``protocol_factory``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.Protocol], name: str,
                 tls: ServerTls | None = None):
        self.loop = loop
        self._tls = tls
        self.sock = sock
        self.name = name
        self._factory = protocol_factory
        self._backoff_s = BACKOFF_S
        self._retry: asyncio.TimerHandle | None = None
        self._failed = 0
        self._failing_since = 0.0
        self._last_failure = 0.0
        self._settle: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task] = set()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop accepting and close the listening socket."""
        if self.sock.fileno() < 0:
            return
        if self._retry is not None:
            self._retry.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        if self._settle is not None:
            self._settle.cancel()
        self.sock.close()

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while it waited in the backlog
            except OSError as exc:
                self._pause(exc)
                return
            self._recovered()
            self._hand_over(conn, addr)

    def _hand_over(self, conn: socket.socket, addr) -> None:
        conn.setblocking(False)
        if self._tls is None:
            setup = self.loop.connect_accepted_socket(self._factory, conn)
        else:
            setup = self.loop.connect_accepted_socket(
                self._factory, conn, ssl=self._tls.current,
                ssl_handshake_timeout=self._tls.handshake_timeout_s)
        task = self.loop.create_task(setup)
        self._pending.add(task)
        task.add_done_callback(lambda t, c=conn, a=addr: self._handed_over(t, c, a))

    def _handed_over(self, task: asyncio.Task, conn: socket.socket, addr) -> None:
        self._pending.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if self._tls is not None and isinstance(exc, OSError):
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else "a unix socket peer"
            log.info("%s: TLS handshake with %s failed, connection closed: %s", self.name, peer,
                     describe(exc))
        else:
            log.debug("%s: connection dropped while set up: %s", self.name, exc)
        conn.close()

    def _pause(self, exc: OSError) -> None:
        self._last_failure = time.monotonic()
        if self._failed == 0:
            self._failing_since = time.monotonic()
            if exc.errno in OUT_OF_RESOURCES:
                log.warning("%s: cannot accept connections (%s); retrying with backoff up to "
                            "%.1f s, logged once until it recovers", self.name, exc.strerror,
                            BACKOFF_MAX_S)
            else:
                log.warning("%s: accept failed (%s); retrying with backoff, logged once until "
                            "it recovers", self.name, exc)
        self._failed += 1
        self.loop.remove_reader(self.sock.fileno())
        self._retry = self.loop.call_later(self._backoff_s, self._resume)
        self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)

    def _resume(self) -> None:
        self._retry = None
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def _recovered(self) -> None:
        self._backoff_s = BACKOFF_S
        if self._failed and self._settle is None:
            self._settle = self.loop.call_later(QUIET_S, self._end_burst)

    def _end_burst(self) -> None:
        self._settle = None
        quiet_s = time.monotonic() - self._last_failure
        if quiet_s < QUIET_S:  # failed again meanwhile: look again once it may be over
            self._settle = self.loop.call_later(QUIET_S - quiet_s, self._end_burst)
            return
        log.info("%s: accepting again; %d accepts failed over %.1f s", self.name, self._failed,
                 self._last_failure - self._failing_since)
        self._failed = 0


def listen_tcp(loop, host: str | None, port: int, protocol_factory, name: str,
               tls=None) -> list[Listener]:
    """Bind HOST:PORT (every address HOST resolves to; all interfaces if HOST is empty) and serve
    it. Raises OSError, naming the address, if one cannot be bound."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot bind {address[0]}:{address[1]}: "
                                         f"{exc.strerror}") from None
            sock.listen(BACKLOG)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return [Listener(loop, sock, protocol_factory, name, tls) for sock in socks]


def listen_unix(loop, path: str, protocol_factory, name: str, tls=None) -> Listener:
    """Bind the UNIX socket PATH (an existing socket file is replaced) and serve it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(path)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return Listener(loop, sock, protocol_factory, name, tls)
