"""Peer connections that move big messages in linear time and never make Raft's timers wait.

pysyncobj 0.3.17's ``TcpConnection`` grows its read and write buffers by concatenation and trims
them by slicing (quadratic in the size of a message), asks the poller for write readiness only
after a write event (so what the kernel did not take at once waits for the next ``send``: one
socket buffer per heartbeat), pickles with protocol 2 (every ``bytes`` travels as a latin-1
string, half as long again) and compresses. A 10 MB job kept a tick busy for seconds and its
heartbeats queued behind it: the followers elected new leaders until the client gave up.
``PeerConnection`` takes its place in pysyncobj's transport and server (``seam.install``).

Theory of operation.
* Frames: a 4-byte little-endian header, then the payload, sealed by the cluster's cipher when
  there is one. A header with bit 31 clear is pysyncobj's own frame: the payload holds a whole
  message as a zlib stream (stored blocks, never compressed: ``framing.stored_zlib``) of its
  pickle. A message whose pickle exceeds ``FRAGMENT_BYTES`` goes as fragments instead: bit 31 set,
  bit 30 set on the last one, each payload a piece of the split message sealed on its own. No frame may
  announce more than ``MAX_FRAME_BYTES``: a larger header closes the connection at once.
* Before a peer is *proven* (one frame opened under the cluster key), at most
  ``PREAUTH_BUFFER_BYTES`` are read from it; every frame fits in that bound, so a peer that
  knows the secret never waits on it, and a stranger can make us hold no more (the listener in
  ``raft_port`` closes unproven connections after a deadline).
* What a message's frames carry is ``peer_message``'s business: protocol 5 pickles, a job body
  out of band, so sending it copies no whole body and receiving it copies the body once.
* Two send lanes. Messages keep their order in the bulk lane; a message that Raft allows to pass
  others (acknowledgements, votes, the answer to a forwarded command: ``_MAY_OVERTAKE``) goes in the
  urgent lane, whose frames are written between two fragments of a big message. A heartbeat (an
  append_entries without entries) is not queued at all while the bulk lane is busy: the frames of
  the append in flight reach the follower instead, and each authenticated fragment counts as a
  heartbeat there (``set_progress_hook``). One that carries a commit index no message queued on
  the link carried is news, not a heartbeat: it is queued, and the follower learns the commit as
  soon as the append ahead of it has gone, not at the round after. An append_entries is never
  reordered: a heartbeat that overtook the entries it follows would be refused and make the
  leader send them again.
* Frames are sealed when they are written, so the sealing time stamps, which the receiver checks
  to be non-decreasing, follow the order of the wire.
* Reading is linear (a ``bytearray`` consumed from the front) and takes at most
  ``READ_BUDGET_BYTES`` per readiness event, then lets the tick go on; the poll is
  level-triggered and comes back for the rest.
* Buffers: the read buffer holds less than one read budget plus one frame; a message being
  reassembled is at most ``MAX_MESSAGE_BYTES``; the send lanes hold what pysyncobj gave them (its
  leader sends each log entry once per peer while the link is up; while the lane is busy a
  heartbeat is dropped, and one is queued only for a commit index that went up, which entries,
  each queued once, did before it).
"""

from __future__ import annotations

import collections
import logging
import pickle
import socket
import struct
import time
import weakref
import zlib
from typing import Callable

from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, set_keepalive

from . import peer_message
from .framing import stored_zlib

PREAUTH_BUFFER_BYTES = 64 * 1024  # what an unproven peer can make a node hold, per connection
MAX_FRAME_BYTES = PREAUTH_BUFFER_BYTES - 4  # what a frame header may announce
FRAGMENT_BYTES = MAX_FRAME_BYTES - 64  # plaintext per frame: room for framing and the seal
MAX_MESSAGE_BYTES = (2 << 30) + (64 << 20)  # one reassembled message: a full batch of entries
READ_BUDGET_BYTES = 1 << 20  # read per readiness event from a proven peer
RECV_BYTES = 256 * 1024  # one recv call
SOCKET_BUFFER_BYTES = 1 << 20  # SO_SNDBUF / SO_RCVBUF of peer sockets

_HEADER = struct.Struct("<I")
_FRAGMENT = 1 << 31
_LAST = 1 << 30
_LENGTH = _LAST - 1
_MAY_OVERTAKE = frozenset({"next_node_idx", "apply_command_response", "request_vote",
                           "response_vote"})
_READ, _WRITE, _ERROR = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE, POLL_EVENT_TYPE.ERROR

_progress_hooks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
log = logging.getLogger("beanraft.peer_link")


def set_progress_hook(poller, hook: Callable[["PeerConnection"], None]) -> None:
    """Call ``hook(conn)`` whenever an authenticated fragment arrives on a connection of ``poller``
    (one pysyncobj node has one poller)."""
    _progress_hooks[poller] = hook


class PeerConnection:
    """The interface of pysyncobj's ``TcpConnection``, with the framing described above."""

    def __init__(self, poller, onMessageReceived=None, onConnected=None, onDisconnected=None,
                 socket=None, timeout=10.0, sendBufferSize=SOCKET_BUFFER_BYTES,
                 recvBufferSize=SOCKET_BUFFER_BYTES, keepalive=None):
        self.sendRandKey = None
        self.recvRandKey = None
        self.recvLastTimestamp = 0
        self.encryptor = None
        self._poller = poller
        self._timeout = timeout
        self._keepalive = keepalive
        self._send_buffer_size = sendBufferSize
        self._recv_buffer_size = recvBufferSize
        self._on_message = onMessageReceived
        self._on_connected = onConnected
        self._on_disconnected = onDisconnected
        self._reset_buffers()
        self._sock = socket
        self._fileno = None
        self._state = CONNECTION_STATE.DISCONNECTED
        if socket is not None:
            self._fileno = socket.fileno()
            self._state = CONNECTION_STATE.CONNECTED
            self.setSockoptKeepalive()
            self._subscribe(_READ | _WRITE | _ERROR)

    def _reset_buffers(self) -> None:
        self._urgent: collections.deque = collections.deque()
        self._bulk: collections.deque = collections.deque()
        self._frame = memoryview(b"")  # the frame being written
        self._frame_at = 0
        self._queued_bytes = 0
        self._commit_queued = 0  # the highest commit index an append_entries queued here carried
        self._inbox = bytearray()
        self.proven = False
        self.opened_at = time.monotonic()
        self._pieces: list[bytes] = []
        self._pieces_bytes = 0
        self._last_read = time.monotonic()
        self._want_write = False

    # -- pysyncobj's interface -------------------------------------------------------------

    @property
    def state(self):
        return self._state

    def fileno(self):
        return self._fileno

    def setOnConnectedCallback(self, onConnected):
        self._on_connected = onConnected

    def setOnMessageReceivedCallback(self, onMessageReceived):
        self._on_message = onMessageReceived

    def setOnDisconnectedCallback(self, onDisconnected):
        self._on_disconnected = onDisconnected

    def setSockoptKeepalive(self):
        if self._sock is not None and self._keepalive is not None:
            set_keepalive(self._sock, *self._keepalive)

    def raw_socket(self):
        """The connection's socket (None while disconnected)."""
        return self._sock

    def getSendBufferSize(self):
        return self._queued_bytes + len(self._frame) - self._frame_at

    def connect(self, host, port):
        if host is None:
            return False
        self._state = CONNECTION_STATE.DISCONNECTED
        self._fileno = None
        self._reset_buffers()
        try:
            sock = self._sock = socket.socket(_family(host), socket.SOCK_STREAM)
        except OSError as exc:  # no descriptor for a socket: pysyncobj retries the dial later
            dial_failures.note(exc, f"cannot dial {host}:{port}")
            return False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer_size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer_size)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.setSockoptKeepalive()
        sock.setblocking(False)
        try:
            sock.connect((host, port))
        except OSError as exc:
            if exc.errno not in (socket.errno.EINPROGRESS, socket.errno.EWOULDBLOCK):
                return False
        self._fileno = sock.fileno()
        self._state = CONNECTION_STATE.CONNECTING
        self._subscribe(_READ | _WRITE | _ERROR)
        return True

    def disconnect(self):
        notify = self._on_disconnected is not None and self._state != CONNECTION_STATE.DISCONNECTED
        self.sendRandKey = None
        self.recvRandKey = None
        self.recvLastTimestamp = 0
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        self._reset_buffers()
        self._state = CONNECTION_STATE.DISCONNECTED
        if notify:
            self._on_disconnected()

    def send(self, message):
        if self._state == CONNECTION_STATE.DISCONNECTED:
            return
        busy = bool(self._bulk) or self._frame_at < len(self._frame)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            commit = message.get("commit_index", 0)
            if busy and commit <= self._commit_queued and not message.get("entries") \
                    and "transmission" not in message and "serialized" not in message:
                return  # a heartbeat: the append on the wire does its work (see the module doc)
            self._commit_queued = max(self._commit_queued, commit)
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = peer_message.encode(message, FRAGMENT_BYTES)
        if isinstance(data, peer_message.Outgoing):
            self._bulk.append(data)
            self._queued_bytes += data.size
        else:
            (self._urgent if busy and kind in _MAY_OVERTAKE else self._bulk).append(data)
            self._queued_bytes += len(data)
        self._flush()

    # -- writing ---------------------------------------------------------------------------

    def _seal(self, plain: bytes, flags: int) -> bytes:
        if self.encryptor:
            plain = self.encryptor.encrypt_at_time(plain, int(time.monotonic()))
        return _HEADER.pack(flags | len(plain)) + plain

    def _next_frame(self) -> bytes | None:
        if self._urgent:
            data = self._urgent.popleft()
            self._queued_bytes -= len(data)
            return self._seal(stored_zlib(data), 0)
        if not self._bulk:
            return None
        head = self._bulk[0]
        if not isinstance(head, peer_message.Outgoing):
            self._bulk.popleft()
            self._queued_bytes -= len(head)
            return self._seal(stored_zlib(head), 0)
        piece = head.take(FRAGMENT_BYTES)
        self._queued_bytes -= len(piece)
        flags = _FRAGMENT
        if head.done:
            self._bulk.popleft()
            flags |= _LAST
        return self._seal(piece, flags)

    def _flush(self) -> None:
        """Write what the socket takes now; ask for write readiness if anything is left."""
        if self._state != CONNECTION_STATE.CONNECTED and self._state != CONNECTION_STATE.CONNECTING:
            return
        if self._timed_out():
            return
        sock = self._sock
        while True:
            if self._frame_at == len(self._frame):
                frame = self._next_frame()
                if frame is None:
                    break
                self._frame, self._frame_at = memoryview(frame), 0
            try:
                sent = sock.send(self._frame[self._frame_at:])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.disconnect()
                return
            if sent <= 0:
                break
            self._frame_at += sent
        pending = self._frame_at < len(self._frame) or bool(self._urgent) or bool(self._bulk)
        if pending != self._want_write:
            self._subscribe(_READ | _ERROR | (_WRITE if pending else 0))

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        budget = READ_BUDGET_BYTES
        sock = self._sock
        while budget > 0:
            if not self.proven:  # never past the bound; the first frame fits in it or is refused
                budget = min(budget, PREAUTH_BUFFER_BYTES - len(self._inbox))
                if budget <= 0:
                    break
            try:
                chunk = sock.recv(min(budget, RECV_BYTES))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.disconnect()
                return
            if not chunk:
                self.disconnect()
                return
            self._inbox += chunk
            budget -= len(chunk)
            if len(self._inbox) >= _HEADER.size and not _header_allowed(self._inbox):
                self.disconnect()  # refused before its frame is read on
                return
        self._last_read = time.monotonic()

    def _parse(self) -> None:
        """Deliver every complete frame in the read buffer, in order."""
        buf = self._inbox
        at = 0
        try:
            while len(buf) - at >= _HEADER.size:
                if not _header_allowed(buf, at):
                    self.disconnect()  # oversized or malformed: never buffer it
                    return
                (word,) = _HEADER.unpack_from(buf, at)
                size = word & _LENGTH
                end = at + _HEADER.size + size
                if end > len(buf):
                    break
                payload = bytes(buf[at + _HEADER.size:end])
                at = end
                message = self._open(payload, word)
                if message is None:
                    if self._state == CONNECTION_STATE.DISCONNECTED:
                        return
                    continue
                self.proven = True
                if self._on_message is not None:
                    self._on_message(message)
                if self._state == CONNECTION_STATE.DISCONNECTED or buf is not self._inbox:
                    return
        finally:
            if buf is self._inbox and at:
                del buf[:at]

    def _open(self, payload: bytes, word: int):
        """The message a frame completes (None: a fragment, or a bad frame, then disconnected)."""
        try:
            if self.encryptor:
                stamp = self.encryptor.extract_timestamp(payload)
                if stamp < self.recvLastTimestamp:
                    raise ValueError("sealing time went backwards")
                self.recvLastTimestamp = stamp
                payload = self.encryptor.decrypt(payload)
            self.proven = True  # the seal verified (or the cluster runs without a secret)
            if word & _FRAGMENT:
                self._pieces.append(payload)
                self._pieces_bytes += len(payload)
                if self._pieces_bytes > MAX_MESSAGE_BYTES:
                    raise ValueError("message too long")
                hook = _progress_hooks.get(self._poller)
                if hook is not None:
                    hook(self)
                if not word & _LAST:
                    return None
                pieces, self._pieces, self._pieces_bytes = self._pieces, [], 0
                message = peer_message.decode(pieces)
            else:
                message = pickle.loads(zlib.decompress(payload))
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise ValueError("wrong connection key")
            if isinstance(message, dict) and type(message.get("type")) is not str:
                # Every Raft message of pysyncobj and of ours names its type; the handlers look
                # it up in sets of types, where a list would raise.
                raise ValueError("a message without a type")
            return message
        except Exception:  # any garbage: drop the peer (pysyncobj does the same, silently)
            self.disconnect()
            return None

    # -- events ----------------------------------------------------------------------------

    def _subscribe(self, events: int) -> None:
        self._want_write = bool(events & _WRITE)
        self._poller.subscribe(self._fileno, self._on_event, events)

    def _timed_out(self) -> bool:
        if time.monotonic() - self._last_read > self._timeout:
            self.disconnect()
            return True
        return False

    def _on_event(self, descr, event) -> None:
        if descr != self._fileno:
            self._poller.unsubscribe(descr)
            return
        if event & _ERROR:
            self.disconnect()
            return
        if self._timed_out():
            return
        if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.disconnect()
            return
        if self._state == CONNECTION_STATE.CONNECTING:
            self._state = CONNECTION_STATE.CONNECTED
            self._last_read = time.monotonic()
            if self._on_connected is not None:
                self._on_connected()
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return
        if event & _WRITE:
            self._flush()
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return
        if event & _READ:
            self._read()
            if self._state != CONNECTION_STATE.DISCONNECTED:
                self._parse()


def _header_allowed(buf, at: int = 0) -> bool:
    """A frame header announces at most MAX_FRAME_BYTES and uses only the flags we send."""
    (word,) = _HEADER.unpack_from(buf, at)
    return (word & _LENGTH) <= MAX_FRAME_BYTES and (word & _FRAGMENT or not word & _LAST)


class Burst:
    """Logs one line when a run of failures begins, and one when none came for ``QUIET_S``.

    While descriptors are scarce a single attempt often succeeds between failures, so a success
    does not end a burst; ``settle``, called every tick, does once it has been quiet.
    """

    QUIET_S = 5.0

    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.count = 0
        self.began = self.last = 0.0

    def note(self, exc: OSError, detail: str) -> None:
        self.last = time.monotonic()
        if self.count == 0:
            self.began = self.last
            self.log.warning("%s: %s (%s); retrying with backoff, logged once until it recovers",
                             self.what, detail, exc.strerror or exc)
        self.count += 1

    def settle(self) -> None:
        if self.count and time.monotonic() - self.last >= self.QUIET_S:
            self.log.info("%s: working again; %d attempts failed over %.1f s", self.what,
                          self.count, self.last - self.began)
            self.count = 0


dial_failures = Burst(log, "raft peers")


def _family(host: str) -> int:
    """AF_INET6 for an IPv6 literal, else AF_INET (pysyncobj resolves names before connecting)."""
    try:
        socket.inet_pton(socket.AF_INET6, host)
        return socket.AF_INET6
    except OSError:
        return socket.AF_INET
