"""Peer traffic is sealed with AES-GCM under the cluster secret, on every connection.

Method: tokens are sealed and then altered byte by byte, opened under another secret, and
counted for nonce reuse; a real RaftNode with peers is built (its raft port bound on loopback,
no tick run) to show that every connection pysyncobj made holds our cipher, including the
outgoing ones pysyncobj creates before the cipher could be set. A cluster whose peer lacks the
secret is ``tests/cluster/test_cluster_secret.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from pysyncobj.encryptor import getEncryptor
from upstream import free_port

from beanraft.replication.peer_crypto import InvalidToken, PeerCipher, derive_key
from beanraft.replication.raft import RaftConfig, RaftNode

KEY = derive_key("the cluster secret")


def test_a_sealed_message_opens_with_the_same_secret_and_keeps_its_timestamp():
    token = PeerCipher(KEY).encrypt_at_time(b"append_entries", 4321)
    opener = PeerCipher(derive_key("the cluster secret"))
    assert opener.extract_timestamp(token) == 4321
    assert opener.decrypt(token) == b"append_entries"


def test_another_secret_cannot_open_it():
    token = PeerCipher(KEY).encrypt_at_time(b"append_entries", 1)
    with pytest.raises(InvalidToken):
        PeerCipher(derive_key("a guess")).decrypt(token)


def test_any_altered_byte_is_refused_including_the_timestamp():
    token = PeerCipher(KEY).encrypt_at_time(b"request_vote", 77)
    for position in range(len(token)):
        altered = bytearray(token)
        altered[position] ^= 0x40
        with pytest.raises(InvalidToken):
            PeerCipher(KEY).decrypt(bytes(altered))


# (a Fernet token carries its time and a random IV: named ids keep every collection the same)
@pytest.mark.parametrize("token", [b"", b"\x81" + b"\x00" * 35,
                                   getEncryptor("the cluster secret").encrypt(b"x")],
                         ids=["empty", "short", "pysyncobj-fernet"])
def test_short_tokens_and_pysyncobj_fernet_tokens_are_refused(token):
    with pytest.raises(InvalidToken):
        PeerCipher(KEY).decrypt(token)


def test_nonces_never_repeat_and_a_spent_counter_draws_a_new_prefix():
    cipher = PeerCipher(KEY)
    nonces = {cipher.encrypt_at_time(b"", 0)[9:21] for _ in range(20_000)}
    assert len(nonces) == 20_000
    prefix = cipher._prefix
    cipher._counter = iter([1 << 32])  # as after 2**32 messages
    nonce = cipher.encrypt_at_time(b"", 0)[9:21]
    assert cipher._prefix != prefix and nonce == cipher._prefix + bytes(4)


def test_every_connection_of_a_raft_node_uses_the_cipher(tmp_path):
    # pysyncobj dials the peers whose address sorts below its own: make that both of them.
    ports = sorted((free_port() for _ in range(3)), key=str, reverse=True)
    loop = asyncio.new_event_loop()
    config = RaftConfig(self_addr=f"127.0.0.1:{ports[0]}",
                        peers=[f"127.0.0.1:{p}" for p in ports[1:]],
                        data_dir=str(tmp_path), secret="the cluster secret")
    node = RaftNode(config, loop, on_events=lambda events: None)
    try:
        sync = node._sync
        connections = list(sync._SyncObj__transport._connections.values())
        assert len(connections) == 2
        assert isinstance(sync.encryptor, PeerCipher)
        assert all(conn.encryptor is sync.encryptor for conn in connections)
    finally:
        node.stop()
        loop.close()
