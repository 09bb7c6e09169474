"""A durable Raft journal for pysyncobj.

Theory of operation. pysyncobj 0.3.17's own FileJournal writes through mmap and never fsyncs, and
when a crash lands between a snapshot rename and the journal rewrite it throws the whole journal
away on the next start (its loader sees a journal older than the snapshot). This journal replaces
it (``pysyncobj.syncobj.createJournal`` is patched through ``seam.py``) and keeps these rules:

* Every record carries a CRC32. Loading stops at the first torn or damaged record, logs it and
  truncates the file there: a node with a damaged tail catches up from its peers.
* ``add`` only writes; ``sync`` makes everything written so far durable. ``raft.py`` calls
  ``sync_for_ack`` before a follower's acknowledgement leaves the node and before every tick
  computes a commit index, so no entry counts towards a commit, and no client hears of it,
  before it is on disk on a majority (with the default ``always`` policy). One log entry is one
  batch of client commands, so this is one fsync per batch: group commit. A lone node may have
  its helper process run that fsync (``begin_sync``, ``end_sync``; ``background_sync.py``) and
  commits the batch only when the helper answers.
* Term and vote are written with fsync before any vote can be sent (Raft §5.2), in place
  (``vote_file.py``): a full disk cannot stop a node from voting.
* Dropping the prefix that a snapshot replaces first fsyncs the directory (so the snapshot's
  rename is durable), then copies the remaining records to a new file, fsyncs it and renames it.
  When more than ``REWRITE_KEEP_BYTES`` remain (a big job just applied) and the prefix on disk
  is smaller than what remains, the file keeps the prefix until a later compaction: only memory
  drops it, and loading drops it again. The file thus holds at most twice the bytes it must.
  While the volume is tight the prefix is dropped anyway (``drop_stale_prefix``): its space is
  needed.
* On load, entries older than the snapshot on disk are dropped, so the first two entries always
  match the snapshot's anchor and pysyncobj never discards the journal.
* Disk space is reserved ahead (``posix_fallocate``), as beanstalkd reserves binlog space, and
  that reservation survives a restart (the zeros past the last record are kept, not truncated),
  so a node restarted on a full volume still has room for its first entries. While the volume
  is tight (``tight``, set by ``disk.DiskBudget``) only a little is reserved at a time, so the
  journal does not eat the room a snapshot needs. When the reserve cannot be extended even by
  one record, ``release_reserve`` (the data directory's reserve file) is given up first; then
  ``low_space`` is set and the node refuses new jobs with OUT_OF_MEMORY while smaller entries
  still fit; it retries every half second and clears the flag when space returns. A failed
  write or fsync (the directory's too, once a rewrite is renamed into place) sets ``failed``
  and calls ``on_failed`` once: nothing more is acknowledged until the process restarts.

With ``path=None`` everything lives in memory (a node started without ``-b``).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass

from pysyncobj.journal import Journal

from .snapshot_file import SnapshotError, fsync_dir, read_anchor
from .vote_file import VoteFile

REWRITE_SUFFIX = ".tmp"  # the copy of the journal a rewrite builds, renamed over it when done

log = logging.getLogger("beanraft.journal")

MAGIC = b"BRJ1\x00\x00\x00\x00"
_RECORD = struct.Struct("<IIQQ")  # command length, crc32, idx, term
PREALLOCATE_BYTES = 8 * 1024 * 1024  # disk space reserved ahead of the last record
LOW_SPACE_BYTES = 4 * 1024 * 1024  # below this much reserved space, reserve more
TIGHT_PREALLOCATE_BYTES = 256 * 1024  # reserved at a time while the volume is tight
RETRY_SPACE_S = 0.5
REWRITE_KEEP_BYTES = 4 * 1024 * 1024  # compaction rewrites the file only if it keeps less


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
        self._reserve_failed = False
        self.tight = False  # the volume is nearly full: reserve little at a time
        self.release_reserve = lambda: False  # frees the data directory's reserve file, if any
        self.on_failed = lambda: None  # told once, from the writing thread, when ``failed`` is set
        self._votes: VoteFile | None = None
        self._allocated = 0
        self._space_checked = 0.0
        self._entries: list[tuple[bytes, int, int]] = []
        self._cut: int | None = None  # a deleteEntriesFrom not yet carried out
        self._offsets: list[int] = []
        self._bytes = 0
        self._dirty = False
        self._writes = 0  # counts the writes (the generation a background sync makes durable)
        self._last_sync = time.monotonic()
        self._meta = {"term": 0, "voted_for": None, "commit": 1}
        self._meta_dirty = False
        self._fd = -1
        if path is not None:
            try:
                self._open(path, snapshot_path)
            except BaseException:  # refused or failed: the node does not start; close what we opened
                self._close_files()
                raise

    # -- loading ---------------------------------------------------------------------------

    def _open(self, path: str, snapshot_path: str | None) -> None:
        self._votes = VoteFile(path + ".meta")
        self._meta.update(self._votes.loaded)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        data = _read_all(self._fd)
        if not data:
            os.pwrite(self._fd, MAGIC, 0)
            self._end = self._allocated = len(MAGIC)
            os.fsync(self._fd)
            fsync_dir(os.path.dirname(os.path.abspath(path)))
        elif not data.startswith(MAGIC):
            raise JournalWriteError(f"{path} is not a BeanRaft journal")
        else:
            self._end = self._scan(data)
            tail = data[self._end:]
            if tail.count(0) != len(tail):
                log.warning(
                    "journal %s: torn or damaged tail at byte %d, %d bytes dropped; "
                    "the entries will be recovered from peers",
                    path, self._end, len(tail.rstrip(b"\0")),
                )
                # Zero the garbage in place: truncating would give back the space reserved
                # past the end, which a restart on a full volume needs for its first entries.
                os.pwrite(self._fd, bytes(len(tail)), self._end)
                os.fsync(self._fd)
            self._allocated = len(data)
        self._reserve_space()
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
        if self._cut is not None:
            if self._entries[self._cut] == (command, idx, term):
                self._cut += 1  # the same entry again: it stays where it is, on disk too
                if self._cut == len(self._entries):
                    self._cut = None
                return
            self._apply_cut()
        if self._fd >= 0:
            self._check_not_failed()
            header = _record_header(command, idx, term)  # written beside, not joined to, the command
            size = len(header) + len(command)
            if self._end + size > self._allocated:
                self._reserve_space(size)
            self._write_at((header, command), self._end)
            self._offsets.append(self._end)
            self._end += size
            self._dirty = True
            self._writes += 1
        self._entries.append((command, idx, term))
        self._bytes += len(command)

    def clear(self):
        self._cut = None
        self._truncate_to(0)

    def deleteEntriesFrom(self, entryFrom):
        """Drop entries from ``entryFrom`` on, lazily: see ``_apply_cut``."""
        self._apply_cut()
        if entryFrom < len(self._entries):
            self._cut = entryFrom

    def _apply_cut(self) -> None:
        """Carry out a pending ``deleteEntriesFrom``.

        pysyncobj's follower drops every entry after the leader's previous index and adds the
        leader's entries again, even when they are the ones it holds (a late ack makes the
        leader resend). Dropping them on disk first would open a window in which a crash loses
        entries this node already acknowledged. So the cut waits: entries added again unchanged
        are kept in place, and the cut happens at the first entry that differs, or before
        anything else reads the journal.
        """
        if self._cut is not None:
            cut, self._cut = self._cut, None
            self._truncate_to(cut)

    def deleteEntriesTo(self, entryTo):
        self._apply_cut()
        keep = self._entries[entryTo:]
        kept_bytes = sum(len(c) for c, _i, _t in keep)
        if self._fd >= 0:
            on_disk_before = (self._offsets[entryTo] if entryTo < len(self._offsets)
                              else self._end) - len(MAGIC)
            big = kept_bytes > REWRITE_KEEP_BYTES and on_disk_before < kept_bytes
            if big or not self._rewrite(entryTo):
                # The file keeps its prefix, and loading drops it again (``_trim_to_snapshot``):
                # either copying a big entry that must stay (the snapshot's anchor is often the
                # job just applied) would stall the Raft thread for little gain, until that
                # prefix outweighs what stays (so the file is never more than twice what it
                # holds); or the rewrite failed (a full volume), and ``drop_stale_prefix`` tries
                # again once there is room. The entries are dropped all the same: pysyncobj
                # takes a journal that does not start at the snapshot's anchor for a stale one
                # and clears it, and with it every entry after the snapshot.
                self._offsets = self._offsets[entryTo:]
        self._entries = keep
        self._bytes = kept_bytes

    @property
    def stale_prefix_bytes(self) -> int:
        """Bytes of records a snapshot already covers that the file still holds (see above)."""
        if self._fd < 0 or not self._offsets:
            return 0
        return self._offsets[0] - len(MAGIC)

    def drop_stale_prefix(self) -> bool:
        """Rewrite the file without the records a snapshot covers; True if it was done.

        Called while the volume is tight: the prefix kept after a compaction that left much in
        the journal is then the space a full volume needs back.
        """
        self._apply_cut()
        return self.stale_prefix_bytes > 0 and self._rewrite(0)

    def _rewrite(self, entry_to: int) -> bool:
        """Replace the file by one holding only the records from ``entry_to`` on; False (old file
        intact) on failure. The records are copied by the kernel, not encoded again."""
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = self.path + REWRITE_SUFFIX
        start = self._offsets[entry_to] if entry_to < len(self._offsets) else self._end
        shift = start - len(MAGIC)
        offsets = [offset - shift for offset in self._offsets[entry_to:]]
        end = self._end - shift
        fd = -1
        renamed = False
        try:
            fsync_dir(directory)  # the snapshot's rename must be durable before its prefix goes
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.pwrite(fd, MAGIC, 0)
            _copy_range(self._fd, fd, start, len(MAGIC), self._end - start)
            os.fsync(fd)
            os.replace(tmp, self.path)
            renamed = True
            fsync_dir(directory)
        except OSError as exc:
            if not renamed:
                log.error("journal %s: cannot rewrite after snapshot (%s); keeping the old one",
                          self.path, exc)
                if fd >= 0:
                    os.close(fd)
                _unlink_quietly(tmp)
                return False
            # The old file has no name any more: what was appended to it would be gone at the
            # next load. Go on in the new one; the disk failed an fsync, so nothing more is
            # acknowledged (``failed``), as after any failed fsync.
            self._mark_failed(exc, "directory fsync after the rewrite: ")
        os.close(self._fd)
        self._fd, self._offsets, self._end, self._dirty = fd, offsets, end, False
        self._allocated = end
        self._reserve_space()
        return True

    def __getitem__(self, item):
        if self._cut is not None:
            self._apply_cut()
        return self._entries[item]

    def __len__(self):
        if self._cut is not None:
            self._apply_cut()
        return len(self._entries)

    def _destroy(self):
        self._apply_cut()
        try:
            if self._fd >= 0 and self.failed is None:  # a failed journal claims nothing more
                self.sync()
                self._store_meta(durable=True)
        finally:
            self._close_files()

    def _close_files(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._votes is not None:
            self._votes.close()
            self._votes = None

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
        """Make every record written so far durable. Once a write or an fsync has failed, it
        raises every time: Linux reports a lost writeback to one fsync only, and the next one
        succeeds over pages that never reached the disk."""
        self._check_not_failed()
        self._apply_cut()
        if self._dirty and self._fd >= 0:
            fd, writes = self.begin_sync()
            try:
                os.fdatasync(fd)
            except OSError as exc:
                self._fail(exc)
            self.end_sync(writes, None)

    def sync_for_ack(self) -> None:
        """Called before anything is acknowledged: sync if the policy asks for it now. Raises
        once the journal has failed, whatever the policy: nothing is acknowledged after."""
        self._check_not_failed()
        if not self._dirty or self.policy.mode == "never":
            return
        if self.policy.mode == "interval":
            if (time.monotonic() - self._last_sync) * 1000 < self.policy.interval_ms:
                return
        self.sync()

    def sync_wanted(self) -> bool:
        """Must what was written be synced before it is acknowledged (the ``always`` policy on a
        file with unsynced writes)? Raises once the journal has failed."""
        self._check_not_failed()
        self._apply_cut()
        return self._dirty and self._fd >= 0 and self.policy.mode == "always"

    def begin_sync(self) -> tuple[int, int]:
        """For an fdatasync elsewhere (a lone node's sync helper, ``background_sync.py``): the
        file descriptor and the generation of writes it makes durable. Until ``end_sync``, the
        caller keeps everything but ``add`` away from the file (no rewrite, truncation or
        close). ``sync`` itself goes through the pair."""
        return self._fd, self._writes

    def end_sync(self, writes: int, error: OSError | None) -> None:
        """The fdatasync of ``begin_sync`` returned: the writes up to ``writes`` are durable (or
        the journal fails, and this raises, as ``sync`` does; so it does if the journal failed
        meanwhile: nothing is acknowledged after a failure)."""
        self._check_not_failed()
        if error is not None:
            self._fail(error)
        if writes == self._writes:
            self._dirty = False
        self._last_sync = time.monotonic()

    def sync_due(self) -> None:
        """Called from the tick loop: under ``interval`` make old writes durable in time;
        while space is low, try again to reserve it."""
        if self.policy.mode == "interval" and self._dirty:
            if (time.monotonic() - self._last_sync) * 1000 >= self.policy.interval_ms:
                self.sync()
        if (self._fd >= 0 and self._reserve_failed
                and time.monotonic() - self._space_checked >= RETRY_SPACE_S):
            self._reserve_space()

    @property
    def low_space(self) -> bool:
        """True while new jobs must be refused: the journal cannot reserve space ahead."""
        return self._reserve_failed

    def _reserve_space(self, needed: int = 0) -> None:
        """Keep space reserved past the end; raise only if ``needed`` bytes do not fit.

        Normally PREALLOCATE_BYTES are reserved whenever less than LOW_SPACE_BYTES are left; while
        the volume is tight, only TIGHT_PREALLOCATE_BYTES at a time, and only once they run out.
        """
        if self._fd < 0:
            return
        self._space_checked = time.monotonic()
        ahead, keep = ((TIGHT_PREALLOCATE_BYTES, 0) if self.tight
                       else (PREALLOCATE_BYTES, LOW_SPACE_BYTES))
        retry = needed == 0 and self._reserve_failed
        if self._allocated - self._end >= keep + needed and not retry:
            return
        want = self._end + max(needed, 0) + ahead
        if want <= self._allocated:
            self._reserve_failed = False
            return
        error = self._allocate(want)
        if error is not None and self._end + needed > self._allocated and self.release_reserve():
            error = self._allocate(want)  # the record itself did not fit: use the reserve file's room
        if error is None:
            if self._reserve_failed:
                log.info("journal %s: disk space reserved again", self.path)
            self._reserve_failed = False
            return
        if not self._reserve_failed:
            log.error("journal %s: cannot reserve disk space (%s): refusing new jobs", self.path, error)
        self._reserve_failed = True
        if self._end + needed > self._allocated:
            raise JournalWriteError(error.errno, f"no space for a journal record: {error}") from error

    def _allocate(self, want: int) -> OSError | None:
        try:
            os.posix_fallocate(self._fd, self._allocated, want - self._allocated)
        except OSError as exc:
            return exc
        self._allocated = want
        return None

    # -- helpers ---------------------------------------------------------------------------

    def _write_at(self, parts: tuple[bytes, ...], offset: int) -> None:
        try:
            written = os.pwritev(self._fd, parts, offset)
            if written != sum(len(p) for p in parts):
                raise OSError(28, "short write to journal")
        except OSError as exc:
            try:
                os.ftruncate(self._fd, offset)  # never leave a partial record behind
                self._allocated = offset
            except OSError:
                pass
            self._fail(exc)

    def _check_not_failed(self) -> None:
        if self.failed is not None:
            raise JournalWriteError(self.failed.errno, f"journal failed earlier: {self.failed}")

    def _fail(self, exc: OSError) -> None:
        self._mark_failed(exc)
        raise JournalWriteError(exc.errno, str(exc))

    def _mark_failed(self, exc: OSError, what: str = "") -> None:
        """Nothing more is acknowledged (``failed``); ``on_failed`` is told the first time."""
        first = self.failed is None
        self.failed = exc
        log.error("journal %s: write failed: %s%s", self.path, what, exc)
        if first:
            self.on_failed()

    def _truncate_to(self, index: int) -> None:
        del self._entries[index:]
        self._bytes = sum(len(c) for c, _i, _t in self._entries)
        if self._fd >= 0:
            if index == 0:
                end = len(MAGIC)  # also drops a prefix that compaction left on disk
            else:
                end = self._offsets[index] if index < len(self._offsets) else self._end
            del self._offsets[index:]
            try:
                os.ftruncate(self._fd, end)  # what was reserved past ``end`` comes back as zeros
            except OSError as exc:  # the records past ``end`` stay: nothing may follow them
                self._fail(exc)
            self._end = self._allocated = end
            self._dirty = True
            self._writes += 1
            self._reserve_space()

    def _store_meta(self, durable: bool) -> None:
        if self._votes is None:
            return
        try:
            self._votes.store(self._meta, durable)
        except OSError as exc:
            if durable:  # a vote that is not on disk must not be sent
                raise JournalWriteError(exc.errno, f"cannot store term and vote: {exc}") from exc
            log.warning("journal %s: commit index hint not saved: %s", self.path, exc)
            return
        self._meta_dirty = False


def _record_header(command: bytes, idx: int, term: int) -> bytes:
    header = _RECORD.pack(len(command), 0, idx, term)
    crc = zlib.crc32(command, zlib.crc32(header[8:]))
    return _RECORD.pack(len(command), crc, idx, term)


def _copy_range(src: int, dst: int, src_at: int, dst_at: int, size: int) -> None:
    """Copy ``size`` bytes between files inside the kernel (read and write where it cannot)."""
    while size > 0:
        try:
            done = os.copy_file_range(src, dst, size, src_at, dst_at)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = os.pwrite(dst, os.pread(src, min(size, 1 << 20), src_at), dst_at)
        if done <= 0:
            raise OSError(errno.EIO, "journal shorter than its records")
        size, src_at, dst_at = size - done, src_at + done, dst_at + done


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""
