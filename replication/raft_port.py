"""The raft port's listener, bounded before a peer proves it knows the secret.

Theory of operation. pysyncobj 0.3.17 reads a peer's frame whole before it checks the seal, grows
the buffer by concatenation in the tick thread, listens with a backlog of 5, accepts one
connection per poll, keeps a silent connection for the whole connection timeout (60 s), and
closes its listening socket for good on the first accept error (EMFILE included). Anyone who can
reach the port could make a node buffer gigabytes, stall its heartbeats, or unbind it. The
listener below and ``peer_link.PeerConnection`` take the place of pysyncobj's (through ``seam``).

For every connection, accepted or dialled (``peer_link``): a connection is *proven* once one frame
opened under the cluster key. Before that, at most ``PREAUTH_BUFFER_BYTES`` are read from it; a
frame header announcing more than a frame may hold, or a frame that does not open, closes it at
once. Reading is linear in the bytes received and bounded per readable event.
For the listener:
* It listens with a backlog of ``LISTEN_BACKLOG`` and accepts up to ``ACCEPT_BATCH`` connections
  per readable event.
* An accepted connection not proven within ``AUTH_DEADLINE_S`` is closed; at most
  ``MAX_UNPROVEN`` wait at once (the oldest is closed to make room).
* An accept that fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses
  accepting, retries after ``ACCEPT_BACKOFF_S`` doubling up to ``ACCEPT_BACKOFF_MAX_S``, logs one
  line when the burst begins and one once it has been quiet for 5 s, and never closes the listening
  socket. Only ``unbind`` (the node stopping) closes it.
``tick()`` runs in the Raft thread before every poll (``attach``): it resumes a paused listener
and closes unproven connections past their deadline.
"""

from __future__ import annotations

import errno
import logging
import socket

from pysyncobj.monotonic import monotonic
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE

from . import peer_link, seam
from .peer_link import PeerConnection

log = logging.getLogger("beanraft.raft_port")

PREAUTH_BUFFER_BYTES = peer_link.PREAUTH_BUFFER_BYTES  # what a stranger can make a node hold
AUTH_DEADLINE_S = 3.0  # an accepted connection must be proven within this
MAX_UNPROVEN = 512  # accepted connections waiting to be proven at once
LISTEN_BACKLOG = 1024
ACCEPT_BATCH = 64
ACCEPT_BACKOFF_S = 0.05
ACCEPT_BACKOFF_MAX_S = 1.0
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

class GuardedListener:
    """pysyncobj's ``TcpServer`` interface (bind, unbind) with the listener rules above."""

    def __init__(self, poller, host, port, onNewConnection, sendBufferSize=2 ** 16,
                 recvBufferSize=2 ** 16, connectionTimeout=3.5, keepalive=None):
        self._poller = poller
        self._address = (host, int(port))
        self._on_new_connection = onNewConnection
        self._send_buffer = sendBufferSize
        self._recv_buffer = recvBufferSize
        self._timeout = connectionTimeout
        self._keepalive = keepalive
        self._sock: socket.socket | None = None
        self._paused_until: float | None = None
        self._backoff_s = ACCEPT_BACKOFF_S
        self._unproven: list[PeerConnection] = []
        self._failures = peer_link.Burst(log, f"raft port {host}:{port}")
        self.accepted = 0

    # -- pysyncobj's TcpServer interface --------------------------------------------------

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind(self._address)
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._subscribe()

    def unbind(self) -> None:
        if self._sock is not None:
            if self._paused_until is None:
                self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for conn in self._unproven:
            conn.disconnect()
        self._unproven = []

    # -- the Raft thread ------------------------------------------------------------------

    def tick(self) -> None:
        """Resume accepting after a pause; close unproven connections past their deadline."""
        self._failures.settle()
        peer_link.dial_failures.settle()
        now = monotonic()
        if self._paused_until is not None and now >= self._paused_until and self._sock:
            self._paused_until = None
            self._subscribe()
        if self._unproven:
            keep = []
            for conn in self._unproven:
                if conn.proven or conn.state == CONNECTION_STATE.DISCONNECTED:
                    continue
                if now - conn.opened_at > AUTH_DEADLINE_S:
                    conn.disconnect()
                else:
                    keep.append(conn)
            self._unproven = keep

    def _subscribe(self) -> None:
        self._poller.subscribe(self._sock.fileno(), self._on_event,
                               POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def _on_event(self, _descr, event) -> None:
        if self._sock is None:
            return
        if event & POLL_EVENT_TYPE.READ:
            self._accept_some()
        elif event & POLL_EVENT_TYPE.ERROR:
            error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._pause(OSError(error, "listening socket reported an error"))

    def _accept_some(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while queued
            except OSError as exc:
                self._pause(exc)
                return
            self._backoff_s = ACCEPT_BACKOFF_S
            self._adopt(sock)

    def _adopt(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        self.accepted += 1
        conn = PeerConnection(poller=self._poller, socket=sock, timeout=self._timeout,
                                 sendBufferSize=self._send_buffer,
                                 recvBufferSize=self._recv_buffer, keepalive=self._keepalive)
        if len(self._unproven) >= MAX_UNPROVEN:
            self._drop_oldest_unproven()
        self._unproven.append(conn)
        self._on_new_connection(conn)

    def _drop_oldest_unproven(self) -> None:
        while self._unproven:
            oldest = self._unproven.pop(0)
            if not oldest.proven and oldest.state != CONNECTION_STATE.DISCONNECTED:
                oldest.disconnect()
                return

    def _pause(self, exc: OSError) -> None:
        """Stop polling the listener for a while; it stays bound and its backlog keeps queueing."""
        self._failures.note(exc, "cannot accept" if exc.errno in OUT_OF_RESOURCES
                            else "accept failed")
        if self._paused_until is None:
            self._poller.unsubscribe(self._sock.fileno())
        self._paused_until = monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, ACCEPT_BACKOFF_MAX_S)



def attach(sync) -> None:
    """Give the node's listener its tick (pysyncobj's transport built it from ``seam``)."""
    server = seam.listener(sync)
    if not isinstance(server, GuardedListener):
        raise seam.SeamError("pysyncobj patch point pysyncobj.transport.TcpServer: the transport "
                             "did not build its listener from BeanRaft's GuardedListener")
    sync.addOnTickCallback(server.tick)
