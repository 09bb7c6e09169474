"""``Client``: the blocking shell around the core. It only moves bytes and keeps time.

One command at a time, from one thread (like greenstalk's client). A lost connection is
noticed when the client next does I/O; it then fails over inside the call that noticed it.

System calls per command: one ``send`` and one ``recv``, as for greenstalk. A plain TCP socket
is left in blocking mode and its timeouts are the kernel's (``SO_RCVTIMEO``, ``SO_SNDTIMEO``):
with a Python-level timeout every send and every receive would first ``poll`` the socket.
``SO_RCVTIMEO`` is changed only when the reply deadline moves earlier or much later, so a
receive may return early (EAGAIN), after which the core checks its deadline and we wait again.
A TLS socket keeps Python's timeouts.
"""

from __future__ import annotations

import random
import select
import socket
import ssl
import struct
import time
from typing import Any, Iterable, Union

from .addresses import AddressLike, TlsLike, parse_addresses, tls_context
from .api import Api
from .core import DOWN, READY, Core
from .errors import credentials as _credentials
from .errors import Error
from .ops import DEFAULT_TUBE, Op

RECV_BYTES = 65536
# Connections given up during a failover stay open (at most this many) until the session has
# settled on a new one. Closing one at once could release the session's jobs: a node that was
# slow, not dead, may yet commit the session-resume we sent it and then see the close.
MAX_ABANDONED = 4
# A connection idle for longer than this is checked for a hang-up before the next command.
# With put-key a command sent to a dead connection is replayed safely, so the check waits for a
# real pause; without it (plain beanstalkd) any gap longer than a command's turnaround counts.
# (Between the check and the send a node can always hang up: the check narrows that window to
# the gap, it cannot close it, so a command the node may have missed is never replayed blindly.)
IDLE_CHECK_AFTER_S = 0.05
PLAIN_IDLE_CHECK_AFTER_S = 0.001
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_FAILOVER_TIMEOUT_S = 30.0


def reason_of(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.timeout):
        return "connect timed out"
    return f"{type(error).__name__}: {error}".rstrip(": ")


class Client(Api):
    """A blocking beanstalkd client that fails over between BeanRaft nodes.

    :param address: ``("host", port)``, ``"host:port"`` or a list of them (every node of the
        cluster); None reads ``BEANRAFT_ADDRESSES`` (comma-separated).
    :param encoding: how bodies are encoded and decoded; None for bytes.
    :param use: the tube to use; :param watch: the tube(s) to watch (``default`` is ignored
        unless listed), as in greenstalk.
    :param timeout: seconds a node may take to accept a connection or to answer before the
        client counts it as failed and moves on (a blocked reserve may take its own time).
    :param failover_timeout: seconds to keep trying nodes before ``UnavailableError``.
    :param tls: an ``ssl.SSLContext`` to connect with TLS, or True for the system's default
        context; the node's certificate is checked against the host of its address.
    :param auth: ``(principal, token)`` for nodes started with ``--auth-file``: sent with
        ``auth`` on every connection, the first and each one after a failover.
    """

    def __init__(self, address: AddressLike = None, encoding: str | None = "utf-8",
                 use: str = DEFAULT_TUBE, watch: Union[str, Iterable[str]] = DEFAULT_TUBE, *,
                 timeout: float = DEFAULT_TIMEOUT_S,
                 failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT_S,
                 seed: int | None = None, tls: TlsLike = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.encoding = encoding
        self.timeout = timeout
        self._tls = tls_context(tls)
        self._core = Core(parse_addresses(address), timeout_s=timeout,
                          failover_timeout_s=failover_timeout, rng=random.Random(seed),
                          auth=_credentials(auth))
        self._sock: socket.socket | None = None
        self._abandoned: list[socket.socket] = []
        self._sock_timeout: float | None = None  # what the socket is set to (saves syscalls)
        self._kernel_timeouts = False  # plain TCP: SO_RCVTIMEO instead of Python's timeout
        self._last_io = 0.0
        self._closed = False
        self._core.start(self._now())
        try:
            self._pump(None)
            for op in self._setup_tubes(use, watch):
                self._call(op)
        except BaseException:
            self.close()  # no socket left behind by a constructor that raised
            raise

    # -- greenstalk's lifecycle ------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the client must not be used afterwards."""
        self._closed = True
        self._drop_socket()
        self._close_abandoned()

    @property
    def address(self):
        """The (host, port) of the node currently serving this client, or None."""
        return self._core.address

    @property
    def failovers(self) -> int:
        """How many times this client moved to another connection."""
        return self._core.failovers

    def __repr__(self) -> str:
        return f"beanraft.client.Client(addresses={self._core.addresses!r})"

    # -- moving bytes ----------------------------------------------------------------------

    _now = staticmethod(time.monotonic)

    def _call(self, op: Op) -> Any:
        if self._closed:
            raise Error("the client is closed")
        now = self._now()
        if now - self._last_io >= (IDLE_CHECK_AFTER_S if self._core.extensions
                                   else PLAIN_IDLE_CHECK_AFTER_S):
            self._check_idle_socket()
        self._core.submit(op, now)
        self._pump(op)
        return op.outcome()

    def _pump(self, op: Op | None) -> None:
        """Send, receive and fail over until ``op`` is done (None: until the connection is
        READY)."""
        core = self._core
        while not (op.done if op is not None else core.state == READY):
            if core.state == DOWN:
                if not self._connect() and not (op is not None and op.done):
                    raise core.last_error
                continue
            data = core.data_to_send()
            if data and not self._send(data):
                continue
            deadline = core.next_deadline()
            try:
                if deadline is not None:
                    wait_s = deadline - self._now()
                    if wait_s <= 0:
                        raise socket.timeout  # (a zero timeout would make it non-blocking)
                    self._set_timeout(wait_s)
                elif not self._kernel_timeouts:
                    self._set_timeout(None)
                chunk = self._sock.recv(RECV_BYTES)
            # SSLWantReadError: TLS with a 0 s timeout; BlockingIOError: SO_RCVTIMEO passed.
            except (socket.timeout, ssl.SSLWantReadError, BlockingIOError):
                core.tick(self._now())
            except OSError as error:
                core.connection_lost(reason_of(error), self._now())
            else:
                self._last_io = now = self._now()
                if chunk:
                    core.receive_data(chunk, now)
                else:
                    core.connection_lost("connection closed by the node", now)
            if core.state == DOWN:
                self._abandon_socket()
            elif self._abandoned and core.episode is None:
                self._close_abandoned()  # the session lives on the new connection now

    def _check_idle_socket(self) -> None:
        """Notice a node that hung up while we were idle *before* sending the next command,
        so that command was never sent to a dead connection (its outcome is not in doubt)."""
        if self._sock is None or not self._core.idle or not self._poller.poll(0):
            return
        try:
            if self._kernel_timeouts:
                chunk = self._sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            else:
                self._set_timeout(0.0)
                chunk = self._sock.recv(RECV_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError):  # e.g. only TLS session tickets came
            return
        except OSError as error:
            self._core.connection_lost(reason_of(error), self._now())
        else:
            if chunk:
                self._core.receive_data(chunk, self._now())
            else:
                self._core.connection_lost("connection closed by the node", self._now())
        if self._core.state == DOWN:
            self._abandon_socket()

    def _send(self, data: bytes) -> bool:
        try:
            if not self._kernel_timeouts and (self._sock_timeout is None
                                              or self._sock_timeout < self.timeout):
                self._set_timeout(self.timeout)
            self._sock.sendall(data)
            return True
        except OSError as error:
            self._core.connection_lost(f"send failed: {reason_of(error)}", self._now())
            self._abandon_socket()
            return False

    def _connect(self) -> bool:
        """One connection attempt after the core's backoff; False once the budget is spent."""
        core = self._core
        core.start(self._now())
        attempt = core.next_attempt(self._now())
        if attempt is None:
            return False
        address, delay_s = attempt
        if delay_s:
            time.sleep(delay_s)
        budget = core.remaining_budget(self._now())
        try:
            sock = socket.create_connection(address, timeout=max(0.05, min(self.timeout, budget)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._handshake(sock, address[0])
        except OSError as error:
            core.attempt_failed(address, reason_of(error))
            return True
        self._sock, self._sock_timeout = sock, sock.gettimeout()
        self._kernel_timeouts = self._tls is None
        if self._kernel_timeouts:
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.timeout))
            self._sock_timeout = None  # no SO_RCVTIMEO yet
        self._poller = select.poll()  # readable while idle: a hang-up (or garbage) arrived
        self._poller.register(sock, select.POLLIN)
        core.connected(address, self._now())
        return True

    def _handshake(self, sock: socket.socket, host: str) -> ssl.SSLSocket:
        """TLS over ``sock`` (within its connect timeout); closes it if the handshake fails."""
        try:
            return self._tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def _set_timeout(self, seconds: float | None) -> None:
        current = self._sock_timeout
        if self._kernel_timeouts:
            # An early wake-up costs a loop; a late one would miss the deadline. So a deadline
            # that moved earlier, or much later, is worth a system call, and nothing else.
            # No deadline (a plain reserve): any timeout already set only wakes us early.
            if seconds is None:
                return
            if current is None or seconds < current - 0.001 or seconds > 1.5 * current + 0.01:
                seconds = max(seconds, 0.001)  # 0 would mean "forever" to the kernel
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
                self._sock_timeout = seconds
            return
        # A deadline that moved by less than a millisecond is not worth a system call.
        if (seconds is None) != (current is None) or (
                seconds is not None and abs(seconds - current) > 0.001):
            self._sock.settimeout(seconds)
            self._sock_timeout = seconds

    def _abandon_socket(self) -> None:
        if self._sock is not None:
            self._abandoned.append(self._sock)
            self._sock = None
        while len(self._abandoned) > MAX_ABANDONED:
            self._abandoned.pop(0).close()

    def _close_abandoned(self) -> None:
        while self._abandoned:
            self._abandoned.pop().close()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


def _timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO (0: no timeout)."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))
