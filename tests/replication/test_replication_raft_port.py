"""The raft port's connections read a proven peer's messages whole, however they are split, and
refuse an unproven one's oversized, negative or unsealed first frame without reading on, and any
message without a named type; behind a big message they send only what is new, and let
acknowledgements pass.

Method: two guarded connections on the ends of a real socket pair, each polled by its own
pysyncobj poller and sealed with the same cipher; one sends with pysyncobj's own ``send`` (its
framing, sealing and per-connection key are what a peer puts on the wire), or raw bytes stand in
for an attacker. The cluster-level attacks are ``tests/hardening/test_hardening_raft_port.py``.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from pysyncobj.poller import SelectPoller
from pysyncobj.tcp_connection import CONNECTION_STATE

import beanraft.replication.raft  # noqa: F401  (installs the framing the peers use)
from beanraft.replication import raft_port
from beanraft.replication.peer_link import PeerConnection
from beanraft.replication.peer_crypto import PeerCipher, derive_key

CIPHER = PeerCipher(derive_key("the cluster secret"))


class End:
    """One end of the pair: a guarded connection, its poller, and what it received."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.poller = SelectPoller()
        self.conn = PeerConnection(poller=self.poller, socket=sock, timeout=30.0)
        self.conn.encryptor = CIPHER
        self.received: list = []
        self.conn.setOnMessageReceivedCallback(self.received.append)

    def poll_until(self, done, seconds: float = 5.0) -> None:
        end = time.monotonic() + seconds
        for _poll in range(int(seconds / 0.005) + 2):
            if done() or time.monotonic() >= end:
                return
            self.poller.poll(0.005)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield End(a), End(b)
    a.close()
    b.close()


def pump(sender: End, receiver: End, done) -> None:
    end = time.monotonic() + 10
    while not done() and time.monotonic() < end:
        sender.poller.poll(0)  # flush what the socket did not take yet
        receiver.poller.poll(0.005)


def test_a_proven_peer_may_send_a_message_far_larger_than_the_preproof_bound(pair):
    sender, receiver = pair
    big = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    sender.conn.send(b"hello")
    sender.conn.send(big)
    pump(sender, receiver, lambda: len(receiver.received) == 2)
    assert receiver.received == [b"hello", big]
    assert receiver.conn.proven and receiver.conn.state == CONNECTION_STATE.CONNECTED


def test_messages_split_at_every_byte_arrive_whole_and_in_order(pair):
    sender, receiver = pair
    raw = socket.socket(fileno=sender.conn.raw_socket().detach())  # we write the bytes ourselves
    messages = [b"first", {"type": "append_entries", "entries": [b"x" * 300]}, b"last"]
    wire = b"".join(_sealed(m) for m in messages)
    for byte in wire:
        raw.send(bytes([byte]))
        receiver.poller.poll(0)
    receiver.poll_until(lambda: len(receiver.received) == 3)
    assert receiver.received == messages
    raw.close()


@pytest.mark.parametrize("message", [{"type": ["append_entries"]}, {"term": 7}],
                         ids=["unhashable-type", "no-type"])
def test_a_sealed_message_without_a_named_type_drops_the_peer_and_reaches_no_handler(pair, message):
    # A peer with the cluster key, but broken or hostile: the handlers look types up in sets.
    sender, receiver = pair
    sender.conn.send(b"hello")
    sender.conn.send(message)
    sender.conn.send({"type": "after"})
    pump(sender, receiver, lambda: receiver.conn.state == CONNECTION_STATE.DISCONNECTED)
    assert receiver.conn.state == CONNECTION_STATE.DISCONNECTED
    assert receiver.received == [b"hello"]


@pytest.mark.parametrize("header", [raft_port.PREAUTH_BUFFER_BYTES - 3, 2 ** 31 - 1, -1],
                         ids=["one-past-the-bound", "2**31-1", "negative"])
def test_an_unproven_first_frame_that_announces_too_much_is_refused_at_once(pair, header):
    _, receiver = pair
    attacker = socket.socket(fileno=pair[0].conn.raw_socket().detach())
    attacker.send(struct.pack("i", header) + b"\xa5" * 1000)
    receiver.poll_until(lambda: receiver.conn.state == CONNECTION_STATE.DISCONNECTED, 2.0)
    assert receiver.conn.state == CONNECTION_STATE.DISCONNECTED
    assert receiver.received == []
    attacker.close()


def test_an_unsealed_frame_that_fits_is_read_then_refused(pair):
    _, receiver = pair
    attacker = socket.socket(fileno=pair[0].conn.raw_socket().detach())
    attacker.send(struct.pack("i", 100) + b"\x81" + b"\x00" * 99)
    receiver.poll_until(lambda: receiver.conn.state == CONNECTION_STATE.DISCONNECTED, 2.0)
    assert receiver.conn.state == CONNECTION_STATE.DISCONNECTED and receiver.received == []
    attacker.close()


def test_an_unproven_peer_is_read_no_further_than_the_bound_then_refused(pair):
    _, receiver = pair
    attacker = socket.socket(fileno=pair[0].conn.raw_socket().detach())
    attacker.setblocking(False)
    # A frame that fits exactly, trickled, then more: at most the bound is ever held, and the
    # frame, once whole, does not open.
    fits = raft_port.PREAUTH_BUFFER_BYTES - 4
    attacker.send(struct.pack("i", fits))
    most = 0
    for _ in range(fits // 4096 + 8):
        try:
            attacker.send(b"\xa5" * 4096)
        except BlockingIOError:
            pass
        except OSError:
            break  # refused
        receiver.poller.poll(0)
        most = max(most, len(receiver.conn._inbox))
    receiver.poll_until(lambda: receiver.conn.state == CONNECTION_STATE.DISCONNECTED, 2.0)
    assert receiver.conn.state == CONNECTION_STATE.DISCONNECTED and receiver.received == []
    assert 0 < most <= raft_port.PREAUTH_BUFFER_BYTES
    attacker.close()


def _append(commit: int, *entries) -> dict:
    return {"type": "append_entries", "term": 3, "commit_index": commit, "entries": list(entries),
            "prevLogIdx": 40, "prevLogTerm": 3}


def test_while_a_big_append_is_on_the_wire_only_news_follows_it_and_acknowledgements_pass_it(pair):
    """Behind a big append, a heartbeat that repeats a commit index already queued is dropped (the
    append's fragments keep the follower's timer), one with a higher commit index is queued after
    it (the follower learns the commit as soon as the append has gone, not a round later), and an
    acknowledgement overtakes it."""
    sender, receiver = pair
    big = _append(40, (b"\x5a" * (8 * 1024 * 1024), 41, 3))
    sender.conn.send(big)
    assert sender.conn.getSendBufferSize() > 0, "the socket took the whole append: nothing to test"
    sender.conn.send(_append(40))  # a heartbeat: the append carries all it says
    sender.conn.send(_append(41))  # news: entry 41 is committed
    sender.conn.send(_append(41))  # a heartbeat again
    ack = {"type": "next_node_idx", "next_node_idx": 42, "reset": False, "success": True}
    sender.conn.send(ack)
    pump(sender, receiver, lambda: len(receiver.received) >= 3)
    receiver.poll_until(lambda: len(receiver.received) > 3, 0.2)  # anything more would show
    assert [(m["type"], m.get("commit_index")) for m in receiver.received] == [
        ("next_node_idx", None), ("append_entries", 40), ("append_entries", 41)]
    assert receiver.received[1] == big and receiver.received[2] == _append(41)


def _sealed(message) -> bytes:
    """A frame as a peer with the cluster key sends it (pysyncobj's own send, captured)."""
    a, b = socket.socketpair()
    try:
        end = End(a)
        end.conn.send(message)
        b.setblocking(False)
        return b.recv(1 << 20)
    finally:
        a.close()
        b.close()
