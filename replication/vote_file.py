"""Term, vote and commit-index hint, written in place so that a full disk cannot stop a vote.

Theory of operation. Raft must store its term and vote durably before it sends a vote or starts an
election (§5.2). Writing a new file and renaming it over the old one needs a free block, so on a
full volume no node could vote and the cluster could never elect a leader again. This file is
allocated once, when the data directory is created, and afterwards only overwritten:

* It holds two fixed-size slots. Each write goes to the slot the last write did not use, with a
  sequence number and a CRC32, then fdatasync when durable. A crash during a write can tear only
  that slot; loading picks the valid slot with the higher sequence number.
* Overwriting blocks a file already owns needs no allocation on ext4, xfs or tmpfs.
* A file written by an earlier version (one JSON document) is read once and then overwritten
  slot by slot.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib

log = logging.getLogger("beanraft.journal")

MAGIC = b"BRV1"
SLOT_BYTES = 512
_HEADER = struct.Struct("<4sQHI")  # magic, sequence, payload length, crc32 of sequence + payload
_KEYS = ("term", "voted_for", "commit")


class VoteFile:
    """Two in-place slots holding ``{"term", "voted_for", "commit"}``."""

    def __init__(self, path: str):
        self.path = path
        created = not os.path.exists(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._seq = 0
        self.loaded: dict = {} if created else self._load()
        if os.fstat(self._fd).st_size < 2 * SLOT_BYTES:
            # Allocate both slots now, while there is room; a failure here (a full disk at the
            # very first start) is reported by the first write instead.
            try:
                os.posix_fallocate(self._fd, 0, 2 * SLOT_BYTES)
            except OSError as exc:
                log.warning("cannot allocate %s: %s", path, exc)

    def _load(self) -> dict:
        data = os.pread(self._fd, 2 * SLOT_BYTES, 0)
        best, best_seq = None, -1
        for slot in range(2):
            record = _decode(data[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES])
            if record is not None and record[0] > best_seq:
                best_seq, best = record
        if best is not None:
            self._seq = best_seq
            return best
        text = data.split(b"\0", 1)[0]
        if text.startswith(b"{"):  # an earlier version's single JSON document
            try:
                meta = json.loads(text)
                return {k: meta[k] for k in _KEYS if k in meta}
            except ValueError:
                pass
        if data.strip(b"\0"):
            log.warning("vote file %s unreadable; starting from term 0", self.path)
        return {}

    def store(self, meta: dict, durable: bool) -> None:
        """Write ``meta`` into the other slot; with ``durable``, fdatasync before returning."""
        self._seq += 1
        payload = json.dumps({k: meta.get(k) for k in _KEYS}).encode()
        body = struct.pack("<QH", self._seq, len(payload)) + payload
        record = _HEADER.pack(MAGIC, self._seq, len(payload), zlib.crc32(body)) + payload
        assert len(record) <= SLOT_BYTES, "vote record larger than its slot"
        os.pwrite(self._fd, record.ljust(SLOT_BYTES, b"\0"), (self._seq % 2) * SLOT_BYTES)
        if durable:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _decode(slot: bytes) -> tuple[int, dict] | None:
    if len(slot) < _HEADER.size or slot[:4] != MAGIC:
        return None
    _magic, seq, size, crc = _HEADER.unpack_from(slot)
    payload = slot[_HEADER.size:_HEADER.size + size]
    if len(payload) != size or zlib.crc32(struct.pack("<QH", seq, size) + payload) != crc:
        return None
    try:
        meta = json.loads(payload)
    except ValueError:
        return None
    return seq, {k: meta[k] for k in _KEYS if k in meta}
