"""Peer messages framed as stored zlib blocks are read by pysyncobj's unchanged receive path.

Method: ``stored_zlib`` output is decoded by the standard ``zlib.decompress`` (what a node
without this change runs) at the sizes where deflate's stored blocks change shape; the installed
stand-in is checked in pysyncobj's own connection module, and a real pysyncobj message makes the
round trip through it.
"""

from __future__ import annotations

import os
import pickle
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj import tcp_connection

from beanraft.replication import framing
from beanraft.replication.framing import COMPRESS_FROM_BYTES, stored_zlib


@pytest.mark.parametrize("size", [0, 1, 0xFFFE, 0xFFFF, 0x10000, 3 * 0xFFFF + 7])
def test_a_stored_stream_decompresses_to_the_data_at_block_boundaries(size):
    data = os.urandom(size)
    assert zlib.decompress(stored_zlib(data)) == data


@given(st.binary(max_size=2000))
def test_any_small_message_survives_the_round_trip(data):
    framed = framing.Zlib.compress(data, 3)
    assert zlib.decompress(framed) == data
    assert len(framed) == len(data) + 11  # header, one block header, adler-32: stored as is


def test_a_damaged_stream_is_refused_by_the_receiver():
    framed = bytearray(stored_zlib(b"append_entries"))
    framed[10] ^= 0x01
    with pytest.raises(zlib.error):
        zlib.decompress(bytes(framed))


def test_large_messages_are_still_compressed():
    data = b"a job body that repeats " * (COMPRESS_FROM_BYTES // 8)
    framed = framing.Zlib.compress(data, 3)
    assert len(framed) < len(data) // 10 and zlib.decompress(framed) == data


def test_pysyncobj_connections_use_the_stored_framing_once_beanraft_is_loaded():
    import beanraft.replication.raft  # noqa: F401  (installs it)

    assert tcp_connection.zlib is framing.Zlib
    message = {"type": "append_entries", "term": 3, "commit_index": 9,
               "entries": [(b"\x00" + os.urandom(100), 10, 3)]}
    wire = tcp_connection.zlib.compress(pickle.dumps(message), 3)
    assert pickle.loads(zlib.decompress(wire)) == message
