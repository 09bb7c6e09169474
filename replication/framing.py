"""Cheaper framing of pysyncobj's peer messages: zlib streams that store messages as they are.

pysyncobj 0.3.17 runs every message it sends through ``zlib.compress(pickle.dumps(m), 3)``.
For the small messages of Raft (append_entries of one batch, acknowledgements, heartbeats) most
of that cost is setting up the compressor, about 25-50 µs per message on our machines, several
times per replicated command; for a big job it is about 19 ms per MB in the Raft thread. A zlib
stream may instead hold the data in *stored* (uncompressed) deflate blocks (RFC 1950/1951): the
receiver's ``zlib.decompress`` reads it like any other, so a whole-message frame of
``peer_link`` is still what pysyncobj's own receive path expects. Nothing is compressed.
"""

from __future__ import annotations

import struct
import zlib

_BLOCK = 0xFFFF  # the largest stored block
_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary, "fastest" (a valid FCHECK)


def stored_zlib(data: bytes) -> bytes:
    """``data`` as a zlib stream of stored deflate blocks (``zlib.decompress`` returns it)."""
    parts = [_HEADER]
    size = len(data)
    start = 0
    while True:
        block = data[start:start + _BLOCK]
        start += len(block)
        final = start >= size
        parts.append(struct.pack("<BHH", 1 if final else 0, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
        if final:
            break
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(parts)
