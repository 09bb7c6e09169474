"""Snapshot files: the state machine's bytes plus the two Raft entries that anchor them.

pysyncobj calls our serializer with the last applied entry, the one before it and the cluster
members; on load it compares those two entries with the first two entries of the journal. The
file is written to a temporary name, fsynced, and only then renamed into place by pysyncobj; the
directory itself is fsynced by the journal before it drops the entries the snapshot replaces
(see ``journal.DurableJournal.deleteEntriesTo``), so no crash can leave the journal stranded.

Layout (all integers little-endian)::

    b"BRS1" | u32 header length | header (msgpack) | state bytes | u32 crc32 of everything before
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import msgpack

MAGIC = b"BRS1"
_U32 = struct.Struct("<I")

Entry = tuple  # (command: bytes, idx: int, term: int), pysyncobj's own log entry shape


class SnapshotError(ValueError):
    """A snapshot file that is damaged or of an unknown format."""


@dataclass(frozen=True)
class SnapshotAnchor:
    """The two log entries a snapshot ends with: the last applied one and the one before it."""

    last: Entry
    prev: Entry
    cluster: tuple[str, ...]


def write_snapshot(path: str, anchor: SnapshotAnchor, state: bytes) -> None:
    """Write a snapshot to ``path`` and fsync it; the caller renames it into place."""
    header = msgpack.packb(
        {"last": list(anchor.last), "prev": list(anchor.prev), "cluster": list(anchor.cluster)},
        use_bin_type=True,
    )
    crc = zlib.crc32(MAGIC)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        for chunk in (MAGIC, _U32.pack(len(header)), header, state):
            if chunk is not MAGIC:
                crc = zlib.crc32(chunk, crc)
            f.write(chunk)
        f.write(_U32.pack(crc))
        f.flush()
        os.fsync(f.fileno())


def read_anchor(path: str) -> SnapshotAnchor:
    """Read only the header of a snapshot (cheap: used while loading the journal)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8 or head[:4] != MAGIC:
            raise SnapshotError(f"{path}: not a BeanRaft snapshot")
        (size,) = _U32.unpack(head[4:])
        return _decode_header(f.read(size))


def read_snapshot(path: str) -> tuple[SnapshotAnchor, bytes]:
    """Read and verify a whole snapshot; return its anchor and the state machine's bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:4] != MAGIC:
        raise SnapshotError(f"{path}: not a BeanRaft snapshot")
    (crc,) = _U32.unpack(data[-4:])
    if zlib.crc32(data[4:-4], zlib.crc32(MAGIC)) != crc:
        raise SnapshotError(f"{path}: checksum mismatch")
    (size,) = _U32.unpack(data[4:8])
    anchor = _decode_header(data[8 : 8 + size])
    return anchor, data[8 + size : -4]


def _decode_header(raw: bytes) -> SnapshotAnchor:
    try:
        header = msgpack.unpackb(raw, raw=False)
        return SnapshotAnchor(
            last=_entry(header["last"]),
            prev=_entry(header["prev"]),
            cluster=tuple(header["cluster"]),
        )
    except Exception as exc:
        raise SnapshotError(f"bad snapshot header: {exc}") from exc


def _entry(fields: list) -> Entry:
    command, idx, term = fields
    return (bytes(command), int(idx), int(term))


def fsync_dir(path: str) -> None:
    """Make a rename or unlink inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
