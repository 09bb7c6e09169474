"""Authenticated encryption of peer traffic with AES-GCM, in place of pysyncobj's Fernet.

pysyncobj 0.3.17 seals every peer message with Fernet (AES-CBC, HMAC-SHA256 and base64): about
60 µs to seal and open a small message, several times per replicated command. AES-GCM from the
same ``cryptography`` library does it in a few microseconds. The object below offers the three
methods pysyncobj's connections call (``encrypt_at_time``, ``extract_timestamp``, ``decrypt``),
so pysyncobj's own handshake (a random per-connection key inside every message) is kept.

A token: version byte ``0x81`` | the sender's timestamp, 8 bytes | nonce, 12 bytes | ciphertext
and tag. The version and timestamp are authenticated as associated data. Nonces never repeat
under one key: a random 8-byte prefix, drawn anew for each encryptor and every 2**32 messages,
and a 4-byte counter. Every node of a cluster must run this scheme (a node with Fernet cannot
open these tokens and is disconnected, as a node with the wrong secret is).
"""

from __future__ import annotations

import itertools
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

VERSION = 0x81
_HEAD = struct.Struct(">BQ")  # version, timestamp
_NONCE_SIZE = 12
_TAG_SIZE = 16
_SALT = b"beanraft peer traffic, AES-256-GCM, v1"
_KDF_ITERATIONS = 200_000
_COUNTER_LIMIT = 1 << 32


class InvalidToken(ValueError):
    """A token that was not sealed with this cluster's secret, or was altered."""


def derive_key(secret: str | bytes) -> bytes:
    """The 256-bit AES key of a cluster secret (PBKDF2-HMAC-SHA256)."""
    if isinstance(secret, str):
        secret = secret.encode()
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                     iterations=_KDF_ITERATIONS)
    return kdf.derive(secret)


class PeerCipher:
    """Seals and opens pysyncobj's peer messages (the encryptor interface it expects)."""

    def __init__(self, key: bytes):
        self._aead = AESGCM(key)
        self._new_prefix()

    def _new_prefix(self) -> None:
        self._prefix = os.urandom(8)
        self._counter = itertools.count()

    def _nonce(self) -> bytes:
        number = next(self._counter)
        if number >= _COUNTER_LIMIT:
            self._new_prefix()
            number = next(self._counter)
        return self._prefix + number.to_bytes(4, "big")

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        head = _HEAD.pack(VERSION, current_time)
        nonce = self._nonce()
        return head + nonce + self._aead.encrypt(nonce, data, head)

    def extract_timestamp(self, token: bytes) -> int:
        """The sender's timestamp, unverified (``decrypt`` verifies it with the rest)."""
        if len(token) < _HEAD.size + _NONCE_SIZE + _TAG_SIZE or token[0] != VERSION:
            raise InvalidToken("not a BeanRaft peer token")
        return _HEAD.unpack_from(token)[1]

    def decrypt(self, token: bytes) -> bytes:
        self.extract_timestamp(token)
        head = token[:_HEAD.size]
        nonce = token[_HEAD.size:_HEAD.size + _NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, token[_HEAD.size + _NONCE_SIZE:], head)
        except InvalidTag:
            raise InvalidToken("the token does not verify") from None
