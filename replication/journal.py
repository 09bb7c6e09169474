"""A durable Raft journal for pysyncobj.

Theory of operation. pysyncobj 0.3.17's own FileJournal writes through mmap and never fsyncs, and
when a crash lands between a snapshot rename and the journal rewrite it throws the whole journal
away on the next start (its loader sees a journal older than the snapshot). This journal replaces
it (``pysyncobj.syncobj.createJournal`` is patched in ``raft.py``) and keeps these rules:

* Every record carries a CRC32. Loading stops at the first torn or damaged record, logs it and
  truncates the file there: a node with a damaged tail catches up from its peers.
* ``add`` only writes; ``sync`` makes everything written so far durable. ``raft.py`` calls
  ``sync_for_ack`` before every message leaves the node and before every tick computes a commit
  index, so no entry is acknowledged to a peer or to a client before it is on disk (with the
  default ``always`` policy). One log entry is one batch of client commands, so this is one fsync
  per batch: group commit.
* Term and vote are written with fsync before any vote can be sent (Raft §5.2).
* Dropping the prefix that a snapshot replaces first fsyncs the directory (so the snapshot's
  rename is durable), then writes the remaining entries to a new file, fsyncs it and renames it.
* On load, entries older than the snapshot on disk are dropped, so the first two entries always
  match the snapshot's anchor and pysyncobj never discards the journal.

With ``path=None`` everything lives in memory (a node started without ``-b``).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass

from pysyncobj.journal import Journal

from .snapshot_file import SnapshotError, fsync_dir, read_anchor

log = logging.getLogger("beanraft.journal")

MAGIC = b"BRJ1\x00\x00\x00\x00"
_RECORD = struct.Struct("<IIQQ")  # command length, crc32, idx, term


class JournalWriteError(OSError):
    """The journal could not be written (for example: the disk is full)."""


@dataclass
class SyncPolicy:
    """When the journal calls fsync: ``always`` before acknowledging, every ``interval_ms``, or never."""

    mode: str = "always"  # "always" | "interval" | "never"
    interval_ms: int = 50

    def __post_init__(self) -> None:
        assert self.mode in ("always", "interval", "never"), self.mode
        assert self.interval_ms >= 0


class DurableJournal(Journal):
    """pysyncobj's Journal interface over an append-only, checksummed, fsynced file."""

    def __init__(self, path: str | None, snapshot_path: str | None = None):
        self.path = path
        self.policy = SyncPolicy()
        self.failed: OSError | None = None
        self._entries: list[tuple[bytes, int, int]] = []
        self._offsets: list[int] = []
        self._bytes = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self._meta = {"term": 0, "voted_for": None, "commit": 1}
        self._meta_dirty = False
        self._fd = -1
        if path is not None:
            self._open(path, snapshot_path)

    # -- loading ---------------------------------------------------------------------------

    def _open(self, path: str, snapshot_path: str | None) -> None:
        self._meta.update(_read_meta(path + ".meta"))
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        data = _read_all(self._fd)
        if not data:
            os.pwrite(self._fd, MAGIC, 0)
            self._end = len(MAGIC)
            os.fsync(self._fd)
            fsync_dir(os.path.dirname(os.path.abspath(path)))
        elif not data.startswith(MAGIC):
            raise JournalWriteError(f"{path} is not a BeanRaft journal")
        else:
            self._end = self._scan(data)
            if self._end < len(data):
                log.warning(
                    "journal %s: torn or damaged tail at byte %d, %d bytes dropped; "
                    "the entries will be recovered from peers",
                    path, self._end, len(data) - self._end,
                )
                os.ftruncate(self._fd, self._end)
                os.fsync(self._fd)
        if snapshot_path is not None and os.path.exists(snapshot_path):
            self._trim_to_snapshot(snapshot_path)

    def _scan(self, data: bytes) -> int:
        pos = len(MAGIC)
        while pos + _RECORD.size <= len(data):
            size, crc, idx, term = _RECORD.unpack_from(data, pos)
            body_at = pos + _RECORD.size
            command = data[body_at : body_at + size]
            if len(command) != size or zlib.crc32(data[pos + 8 : body_at + size]) != crc:
                break
            self._entries.append((bytes(command), idx, term))
            self._offsets.append(pos)
            self._bytes += size
            pos = body_at + size
        return pos

    def _trim_to_snapshot(self, snapshot_path: str) -> None:
        try:
            anchor = read_anchor(snapshot_path)
        except (OSError, SnapshotError) as exc:
            log.error("cannot read snapshot %s: %s", snapshot_path, exc)
            return
        prev_idx = anchor.prev[1]
        for i, (_command, idx, _term) in enumerate(self._entries):
            if idx == prev_idx:
                if i:
                    log.info("journal: dropping %d entries already covered by the snapshot", i)
                    self.deleteEntriesTo(i)
                return

    # -- pysyncobj's Journal interface ------------------------------------------------------

    def add(self, command, idx, term):
        command = bytes(command)
        if self._fd >= 0:
            record = _RECORD.pack(len(command), 0, idx, term)
            crc = zlib.crc32(command, zlib.crc32(record[8:]))
            record = _RECORD.pack(len(command), crc, idx, term) + command
            self._write_at(record, self._end)
            self._offsets.append(self._end)
            self._end += len(record)
            self._dirty = True
        self._entries.append((command, idx, term))
        self._bytes += len(command)

    def clear(self):
        self._truncate_to(0)

    def deleteEntriesFrom(self, entryFrom):
        self._truncate_to(entryFrom)

    def deleteEntriesTo(self, entryTo):
        keep = self._entries[entryTo:]
        self._entries = keep
        self._bytes = sum(len(c) for c, _i, _t in keep)
        if self._fd < 0:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        fsync_dir(directory)  # the snapshot's rename must be durable before its prefix goes
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        offsets, pos, chunks = [], len(MAGIC), [MAGIC]
        for command, idx, term in keep:
            record = _RECORD.pack(len(command), 0, idx, term)
            crc = zlib.crc32(command, zlib.crc32(record[8:]))
            chunks.append(_RECORD.pack(len(command), crc, idx, term) + command)
            offsets.append(pos)
            pos += len(chunks[-1])
        try:
            os.pwrite(fd, b"".join(chunks), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self._fail(exc)
        os.replace(tmp, self.path)
        fsync_dir(directory)
        os.close(self._fd)
        self._fd, self._offsets, self._end, self._dirty = fd, offsets, pos, False

    def __getitem__(self, item):
        return self._entries[item]

    def __len__(self):
        return len(self._entries)

    def _destroy(self):
        if self._fd >= 0:
            self.sync()
            self._store_meta(durable=True)
            os.close(self._fd)
            self._fd = -1

    def flush(self):
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex):
        if raftCommitIndex != self._meta["commit"]:
            self._meta["commit"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self):
        return self._meta["commit"]

    def setCurrentTerm(self, term, votedForNodeId):
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta(durable=True)

    def getCurrentTerm(self):
        return self._meta["term"]

    def getVotedForNodeId(self):
        return self._meta["voted_for"]

    def onOneSecondTimer(self):
        if self._meta_dirty:
            # The commit index is only a hint for replay at start; it needs no fsync.
            self._store_meta(durable=False)

    # -- durability ------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes of commands held (what compaction is triggered on)."""
        return self._bytes

    def sync(self) -> None:
        """Make every record written so far durable."""
        if self._dirty and self._fd >= 0:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._fail(exc)
            self._dirty = False
            self._last_sync = time.monotonic()

    def sync_for_ack(self) -> None:
        """Called before anything is acknowledged: sync if the policy asks for it now."""
        if not self._dirty or self.policy.mode == "never":
            return
        if self.policy.mode == "interval":
            if (time.monotonic() - self._last_sync) * 1000 < self.policy.interval_ms:
                return
        self.sync()

    def sync_due(self) -> None:
        """Called from the tick loop: under ``interval`` make old writes durable in time."""
        if self.policy.mode == "interval" and self._dirty:
            if (time.monotonic() - self._last_sync) * 1000 >= self.policy.interval_ms:
                self.sync()

    # -- helpers ---------------------------------------------------------------------------

    def _write_at(self, data: bytes, offset: int) -> None:
        try:
            written = os.pwrite(self._fd, data, offset)
            if written != len(data):
                raise OSError(28, "short write to journal")
        except OSError as exc:
            os.ftruncate(self._fd, offset)  # never leave a partial record behind
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = exc
        log.error("journal %s: write failed: %s", self.path, exc)
        raise JournalWriteError(exc.errno, str(exc))

    def _truncate_to(self, index: int) -> None:
        del self._entries[index:]
        self._bytes = sum(len(c) for c, _i, _t in self._entries)
        if self._fd >= 0:
            end = self._offsets[index] if index < len(self._offsets) else self._end
            del self._offsets[index:]
            os.ftruncate(self._fd, end)
            self._end = end
            self._dirty = True

    def _store_meta(self, durable: bool) -> None:
        if self.path is None:
            return
        tmp = self.path + ".meta.tmp"
        with open(tmp, "w") as f:
            json.dump(self._meta, f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, self.path + ".meta")
        if durable:
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        self._meta_dirty = False


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _read_meta(path: str) -> dict:
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("journal meta %s unreadable (%s); starting from term 0", path, exc)
        return {}
    return {k: meta[k] for k in ("term", "voted_for", "commit") if k in meta}
