"""Backup files: one node's replicated state at one applied index, versioned and checksummed.

Layout (integers little-endian)::

    b"BRBACKUP" | u16 format version | u32 header length | header (JSON, UTF-8)
    | u32 crc32 of everything before | body (the state machine's snapshot bytes)

The header names the state's log index and term, the Raft members of the cluster it came from,
the node that wrote it, the cluster's time at that index, and the body's length and sha256. The
header is checked by its CRC before anything in it is trusted; the body by its length (a
truncated file) and its sha256 (a damaged one). A file that does not start with the magic is
not a BeanRaft backup at all. The body is the ``jobs`` snapshot codec, which carries its own
version byte, so a newer state codec needs no new file format.

``BackupReader`` checks a file as it streams past (the CLI writes a download while it checks it);
``read_backup`` checks a whole file (restore). It reads the head first and refuses a file whose
size differs from what the head announces before it reads the body, so the memory a file can make
it take is its own size, after its head checked: a file that is not a backup is refused after its
first bytes, and a sparse or endless one never read whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import zlib
from dataclasses import asdict, dataclass

MAGIC = b"BRBACKUP"
FORMAT_VERSION = 1
_READABLE = (1,)
_PREFIX = struct.Struct("<8sHI")  # magic, format version, header length
_CRC = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 20
# Indexes and terms are u64 in the journal, and a restore adds 2**32 to the term: larger values
# are no real cluster's, only a hostile header's.
MAX_INDEX = 1 << 62
_STREAM_PIECE = 1 << 20


class BackupFileError(ValueError):
    """A file that is not a BeanRaft backup, of an unknown version, truncated or damaged."""


@dataclass(frozen=True)
class BackupHeader:
    """What a backup says about itself."""

    index: int  # the Raft log index of the last entry the state includes
    term: int  # that entry's term
    members: tuple[str, ...]  # the Raft addresses of the cluster it was taken from
    node: str  # the Raft address of the node that wrote it
    cluster_time_ns: int  # the cluster's time after that entry (the state machine's clock)
    jobs: int
    body_bytes: int
    body_sha256: str
    beanraft: str = ""  # the version of the node that wrote it

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["members"] = list(self.members)
        return doc


def header_for(body: bytes, **fields) -> BackupHeader:
    """The header of a backup of ``body`` (its length and checksum filled in)."""
    return BackupHeader(body_bytes=len(body), body_sha256=hashlib.sha256(body).hexdigest(),
                        **fields)


def encode_head(header: BackupHeader) -> bytes:
    """Everything of the file before the body."""
    raw = json.dumps(header.to_json(), sort_keys=True, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(raw)) + raw
    return head + _CRC.pack(zlib.crc32(head))


def _decode_head(head: bytes) -> BackupHeader:
    """Parse a complete head (prefix, header, CRC) whose CRC has been checked."""
    raw = head[_PREFIX.size:-_CRC.size]
    try:
        doc = json.loads(raw.decode("utf-8"))
        header = BackupHeader(
            index=int(doc["index"]), term=int(doc["term"]),
            members=tuple(str(m) for m in doc["members"]), node=str(doc["node"]),
            cluster_time_ns=int(doc["cluster_time_ns"]), jobs=int(doc["jobs"]),
            body_bytes=int(doc["body_bytes"]), body_sha256=str(doc["body_sha256"]),
            beanraft=str(doc.get("beanraft", "")))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise BackupFileError(f"the backup's header is malformed ({exc})") from None
    if not (0 < header.index < MAX_INDEX and 0 <= header.term < MAX_INDEX
            and header.body_bytes > 0 and header.jobs >= 0):
        raise BackupFileError("the backup's header holds impossible values")
    return header


class BackupReader:
    """Checks a backup fed to it piece by piece: ``feed`` each piece, then ``finish``."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._head_size: int | None = None
        self.header: BackupHeader | None = None
        self._sha = hashlib.sha256()
        self._body_seen = 0

    @property
    def head_size(self) -> int | None:
        """The bytes before the body, once the prefix has been read and checked."""
        return self._head_size

    def feed(self, data: bytes) -> None:
        """Check ``data``, the next bytes of the file; BackupFileError as soon as one is wrong."""
        if self.header is None:
            self._head += data
            if not self._parse_head():
                return
            data = bytes(self._head[self._head_size:])
            self._head = self._head[:self._head_size]
        self._body_seen += len(data)
        if self._body_seen > self.header.body_bytes:
            raise BackupFileError("the backup has bytes past the end its header announces")
        self._sha.update(data)

    def _parse_head(self) -> bool:
        head = self._head
        if len(head) < min(len(MAGIC), _PREFIX.size):
            if not MAGIC.startswith(bytes(head)):
                raise BackupFileError("not a BeanRaft backup (no BRBACKUP magic)")
            return False
        if not head.startswith(MAGIC):
            raise BackupFileError("not a BeanRaft backup (no BRBACKUP magic)")
        if len(head) < _PREFIX.size:
            return False
        _magic, version, size = _PREFIX.unpack_from(head)
        if version not in _READABLE:
            raise BackupFileError(f"backup format version {version} is not one this BeanRaft "
                                  f"reads (it reads {', '.join(map(str, _READABLE))})")
        if size > MAX_HEADER_BYTES:
            raise BackupFileError("the backup's header is damaged (impossible length)")
        self._head_size = _PREFIX.size + size + _CRC.size
        if len(head) < self._head_size:
            return False
        whole = bytes(head[:self._head_size])
        if zlib.crc32(whole[:-_CRC.size]) != _CRC.unpack(whole[-_CRC.size:])[0]:
            raise BackupFileError("the backup's header is damaged (checksum mismatch)")
        self.header = _decode_head(whole)
        return True

    def finish(self) -> BackupHeader:
        """The header, once the whole file was fed and is intact; else BackupFileError."""
        if self.header is None:
            raise BackupFileError("the backup is truncated: it ends inside its header"
                                  if self._head else "the backup is empty")
        if self._body_seen < self.header.body_bytes:
            raise BackupFileError(f"the backup is truncated: {self._body_seen} of "
                                  f"{self.header.body_bytes} body bytes")
        if self._sha.hexdigest() != self.header.body_sha256:
            raise BackupFileError("the backup is damaged: its body does not match its checksum")
        return self.header


def read_backup(path: str) -> tuple[BackupHeader, bytes]:
    """Read and check a whole backup file: its header and its body (see the module docstring
    for what it holds in memory)."""
    reader = BackupReader()
    with open(path, "rb") as f:
        reader.feed(f.read(_PREFIX.size))  # magic, version and header length checked
        if reader.head_size is not None:
            reader.feed(f.read(reader.head_size - _PREFIX.size))
        if reader.header is None:
            reader.finish()  # raises: the file ends inside its head
        announced = reader.header.body_bytes
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode):
            present = info.st_size - reader.head_size
            if present > announced:
                raise BackupFileError("the backup has bytes past the end its header announces")
            body = f.read(present)
        else:  # a pipe: read what comes, at most one byte more than announced
            pieces, got = [], 0
            while piece := f.read(min(_STREAM_PIECE, announced + 1 - got)):
                pieces.append(piece)
                got += len(piece)
            body = b"".join(pieces)
    reader.feed(body)
    return reader.finish(), body
