"""Peer messages framed as stored zlib blocks are read by pysyncobj's unchanged receive path.

Method: ``stored_zlib`` output is decoded by the standard ``zlib.decompress`` (what pysyncobj's
own connection runs on a whole-message frame) at the sizes where deflate's stored blocks change
shape, and a damaged stream is refused.
"""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beanraft.replication.framing import stored_zlib


@pytest.mark.parametrize("size", [0, 1, 0xFFFE, 0xFFFF, 0x10000, 3 * 0xFFFF + 7])
def test_a_stored_stream_decompresses_to_the_data_at_block_boundaries(size):
    data = os.urandom(size)
    assert zlib.decompress(stored_zlib(data)) == data


@given(st.binary(max_size=2000))
def test_any_small_message_survives_the_round_trip(data):
    framed = stored_zlib(data)
    assert zlib.decompress(framed) == data
    assert len(framed) == len(data) + 11  # header, one block header, adler-32: stored as is


def test_a_damaged_stream_is_refused_by_the_receiver():
    framed = bytearray(stored_zlib(b"append_entries"))
    framed[10] ^= 0x01
    with pytest.raises(zlib.error):
        zlib.decompress(bytes(framed))
