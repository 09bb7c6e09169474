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

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import msgpack

log = logging.getLogger("beanraft.snapshot")

MAGIC = b"BRS1"
RECEIVING_SUFFIX = ".1.tmp"  # a snapshot from the leader as it arrives (pysyncobj's name)
_U32 = struct.Struct("<I")

Entry = tuple  # (command: bytes, idx: int, term: int), pysyncobj's own log entry shape


class SnapshotError(ValueError):
    """A snapshot file that is damaged or of an unknown format."""


class DamagedSnapshot(OSError):
    """The data directory's snapshot cannot be loaded: the node must not start on it."""


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


def verify_snapshot(path: str, chunk_bytes: int = 1 << 20) -> SnapshotAnchor:
    """Check a whole snapshot's checksum without holding it in memory; its anchor. Raises
    SnapshotError for a damaged file (a start-up must not run on a state it cannot load)."""
    check = SnapshotCheck(path)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            check.feed(chunk)
    return check.finish()


class SnapshotCheck:
    """The checks of ``verify_snapshot`` on a snapshot's bytes as they pass, in any chunks: its
    magic, its length, its checksum (of everything before the last four bytes, which hold it)
    and its header. ``finish`` returns the anchor or raises SnapshotError."""

    def __init__(self, name: str):
        self.name = name  # for the error messages
        self._head = bytearray()  # the magic, the header's length, then the header
        self._crc = 0
        self._tail = b""  # the last four bytes so far: they are the checksum if nothing follows
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        self._collect_head(chunk)
        if len(chunk) >= 4:
            self._crc = zlib.crc32(memoryview(chunk)[:-4], zlib.crc32(self._tail, self._crc))
            self._tail = bytes(chunk[-4:])
        else:
            held = self._tail + chunk
            self._crc = zlib.crc32(held[:-4], self._crc)
            self._tail = held[-4:]

    def _collect_head(self, chunk: bytes) -> None:
        taken = max(0, 8 - len(self._head))
        self._head += chunk[:taken]
        if len(self._head) >= 8:
            missing = 8 + _U32.unpack(self._head[4:8])[0] - len(self._head)
            if missing > 0:
                self._head += chunk[taken:taken + missing]

    def head_anchor(self) -> SnapshotAnchor | None:
        """The anchor in the header as soon as the header has arrived whole, before the
        checksum can vouch for it; None until then, or if it does not decode (``finish`` then
        says why)."""
        if len(self._head) < 8 or self._head[:4] != MAGIC:
            return None
        (size,) = _U32.unpack(self._head[4:8])
        if len(self._head) < 8 + size:
            return None
        try:
            return _decode_header(bytes(self._head[8:8 + size]))
        except SnapshotError:
            return None

    def finish(self) -> SnapshotAnchor:
        if len(self._head) < 8 or self._head[:4] != MAGIC:
            raise SnapshotError(f"{self.name}: not a BeanRaft snapshot")
        (size,) = _U32.unpack(self._head[4:8])
        if self._total < 12 + size:
            raise SnapshotError(f"{self.name}: cut short ({self._total} bytes)")
        if self._crc != _U32.unpack(self._tail)[0]:
            raise SnapshotError(f"{self.name}: checksum mismatch")
        return _decode_header(bytes(self._head[8:8 + size]))


class SnapshotReceiver:
    """Takes a snapshot the leader sends, chunk by chunk, in place of pysyncobj's receiver.

    pysyncobj writes the chunks to ``<snapshot>.1.tmp`` without an fsync, renames it onto the
    snapshot without making the rename durable, then loads it and empties the journal down to
    the snapshot's anchor, fsynced before the follower acknowledges. A crash soon after could
    leave an empty or stale snapshot beside that emptied journal: the entries it covered lost.
    Here the file is fsynced before the rename and the directory after it, before ``receive``
    tells pysyncobj it is complete; and ``before_replace`` runs right before the rename (the
    node stops its own snapshot writer there, whose older snapshot must not land on this one).

    A snapshot that does not verify, or cannot be written (a full volume), never replaces the
    one in place: the file is removed at once, so its part holds no space, and the leader sends
    the snapshot again, from its first chunk, until one is stored. The first failure of a run is
    logged at ERROR, the attempts after it at DEBUG, and the one that succeeds at INFO.

    The checks of ``verify_snapshot`` run on the chunks as they are written (``SnapshotCheck``)
    rather than on the file read back: the bytes checked are the bytes handed to ``write``, and
    a read-back would come from the page cache, not the disk, so it would prove nothing more.
    pysyncobj loads the file right after the rename (``read_snapshot``, checksum included)
    before it empties the journal, so the file as stored is still checked once.

    A snapshot for which ``wanted(anchor)`` is false (one that is not ahead of this node: see
    ``snapshot_install``) is declined: asked as soon as its header has arrived, and again on
    the verified anchor before the rename, the receiver removes what it wrote, ignores the rest
    of that transmission and never tells pysyncobj it is complete, so nothing is loaded and
    the journal is not emptied.
    """

    def __init__(self, path: str, before_replace: Callable[[], None],
                 wanted: Callable[[SnapshotAnchor], bool] = lambda _anchor: True):
        self.path = path
        self.tmp_path = path + RECEIVING_SUFFIX
        self.before_replace = before_replace
        self.wanted = wanted
        self._asked = False  # wanted() was asked about the transmission in progress
        self._file = None
        self._check: SnapshotCheck | None = None
        self._failures = 0  # attempts that failed since a snapshot was last stored

    def receive(self, data) -> bool:
        """pysyncobj's ``setTransmissionData``: True once the whole snapshot is in place."""
        if data is None:
            return False
        chunk, first, last = data
        if first:
            self._discard()
            self._check = SnapshotCheck(self.tmp_path)
            self._asked = False
            try:
                self._file = open(os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                          0o600), "wb")
            except OSError as exc:
                self._failed(exc)
                return False
        elif self._file is None:
            return False  # its first chunk was missed, or an earlier one failed: it comes again
        try:
            self._file.write(chunk)
            self._check.feed(chunk)
            if not self._asked:  # ask before the rest of a big snapshot is written in vain
                head = self._check.head_anchor()
                self._asked = head is not None
                if head is not None and not self.wanted(head):
                    return self._decline(head)
            if not last:
                return False
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            anchor = self._check.finish()  # never replace a good snapshot with a damaged one
            if not self.wanted(anchor):
                return self._decline(anchor)
            self.before_replace()
            os.replace(self.tmp_path, self.path)
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except (OSError, SnapshotError) as exc:
            self._failed(exc)
            self._discard()
            return False
        if self._failures:
            log.info("the leader's snapshot at index %d stored after %d failed attempts",
                     anchor.last[1], self._failures)
            self._failures = 0
        return True

    def _decline(self, anchor: SnapshotAnchor) -> bool:
        """Drop a snapshot that is not wanted, and the rest of its transmission; False."""
        self._discard()
        log.info("the leader's snapshot at index %d is not ahead of this node: not installed, "
                 "its state and log kept", anchor.last[1])
        return False

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            log.error("cannot store the leader's snapshot: %s (the leader sends it again; "
                      "logged once until one is stored)", exc)
        else:
            log.debug("cannot store the leader's snapshot (attempt %d): %s", self._failures, exc)

    def _discard(self) -> None:
        """Close and remove a snapshot partly received: its space comes back at once."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        self._check = None
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass
