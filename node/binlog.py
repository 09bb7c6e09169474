"""Reading a beanstalkd 1.12 binlog directory (``beanstalkd -b DIR``) into the jobs it holds.

Theory of operation
-------------------
beanstalkd appends one record per change of a job to files ``DIR/binlog.N`` (N = 1, 2, ...) and
replays them in increasing N at start-up. This module replays them the same way, without running
beanstalkd, so ``beanraft import-binlog`` can load the jobs into a cluster. The format (version
7, x86-64 little-endian, learnt from beanstalkd's walg.c/file.c and by experiment):

* every file starts with the version, a 4-byte int;
* then records: a 4-byte int ``namelen``; ``namelen`` bytes of tube name; an 80-byte job record
  (``_JOBREC``: id, pri, delay, ttr, body size, created_at, deadline_at, five counters, state);
  and, when ``namelen`` > 0 (a *full* record), the body, whose size includes its final CRLF;
* a record with ``namelen`` 0 (a *short* record) updates a job already seen: its state,
  priority, deadline and counters. State 0 means the job was deleted. A short record for a job
  no full record introduced belongs to a job whose file beanstalkd already removed: ignored;
* beanstalkd preallocates its files with zeros, so a record whose id is 0 ends the file's data.

A reserved job comes back ready, as beanstalkd restores it. A delayed job keeps its deadline,
which is wall-clock time: what is left of it is computed against ``now_ns``. The jobs keep the
order in which beanstalkd first saw them, which is the order its replay buries them in.

Nothing is guessed: an unknown version, a record cut short, a bad tube name, state, body size
(at most beanstalkd's largest -z) or TTR (beanstalkd keeps whole seconds below 2**32: a TTR
that is not positive, or more, is no beanstalkd's and cannot be imported), or bytes after the
zero padding make ``BinlogError`` naming the file and offset, so that an import never starts from a
binlog it could only half read.

A file is never read whole: each record's parts are read where they are (``_FileBytes``), and
the zero padding a piece at a time, so the memory the reader takes is the bodies of the jobs it
keeps, whatever a file's size (a sparse file of any length costs no disk, and costs no memory).
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_VERSION = 7
MAX_TUBE_NAME_LEN = 200
MAX_TTR_NS = (2**32 - 1) * 1_000_000_000  # beanstalkd's TTR is whole seconds, a u32
MAX_BODY_SIZE = (1 << 30) + 2  # beanstalkd's largest -z, and the body's final CRLF
_ZERO_PIECE = 1 << 20  # the zero padding is checked this many bytes at a time
_ZEROS = bytes(_ZERO_PIECE)
_NAMELEN = struct.Struct("<i")
# id u64, pri u32 (+4 pad), delay i64, ttr i64, body_size i32 (+4 pad), created_at i64,
# deadline_at i64, reserve/timeout/release/bury/kick counts u32, state u8 (+3 pad): 80 bytes.
_JOBREC = struct.Struct("<QI4xqqi4xqq5IB3x")
_FILE_NAME = re.compile(r"binlog\.([0-9]+)")
_TUBE_NAME = re.compile(rb"[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()\-]*")
# beanstalkd's Jobrec.state values.
_DELETED, _READY, _RESERVED, _BURIED, _DELAYED = range(5)
_STATE_WORDS = {_READY: "ready", _RESERVED: "ready", _BURIED: "buried", _DELAYED: "delayed"}


class BinlogError(Exception):
    """The binlog cannot be imported as a whole; ``str()`` says which file, where and why."""


@dataclass
class BinlogJob:
    """One job as beanstalkd would restore it. ``deadline_ns`` is when a delayed job becomes
    ready (wall clock); ``body`` is without beanstalkd's final CRLF."""

    id: int
    tube: str
    pri: int
    ttr_ns: int
    created_ns: int
    deadline_ns: int
    state_code: int
    body: bytes

    @property
    def key(self) -> str:
        """The import key: beanstalkd's job id and creation time, unique across servers."""
        return f"binlog:{self.id}.{self.created_ns}"

    def state_at(self, now_ns: int) -> str:
        """ready, delayed or buried, as beanstalkd would restore the job at ``now_ns``."""
        word = _STATE_WORDS[self.state_code]
        if word == "delayed" and self.deadline_ns <= now_ns:
            return "ready"
        return word

    def delay_left_s(self, now_ns: int) -> int:
        """Whole seconds (rounded up) until a delayed job is ready; 0 when it is not delayed."""
        if self.state_at(now_ns) != "delayed":
            return 0
        return -(-(self.deadline_ns - now_ns) // 1_000_000_000)


def binlog_files(directory: Path) -> list[Path]:
    """The ``binlog.N`` files of ``directory`` in the order beanstalkd replays them."""
    numbered = []
    for entry in directory.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match and entry.is_file():
            numbered.append((int(match.group(1)), entry))
    return [path for _, path in sorted(numbered)]


def check_not_running(directory: Path) -> None:
    """BinlogError if a beanstalkd still holds ``directory``'s lock: its jobs are still changing."""
    try:
        fd = os.open(directory / "lock", os.O_RDWR)
    except OSError:
        return  # no lock file (or not ours to open): no beanstalkd can be holding it
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise BinlogError(f"{directory}/lock is held: a beanstalkd is still running on this "
                          "directory; stop it first") from None
    finally:
        os.close(fd)


class _FileBytes:
    """An open file seen as the parser sees a bytes object (its length and slices), read only
    where it is sliced. A file that shrinks meanwhile reads short, as a truncated one."""

    def __init__(self, f) -> None:
        self._f = f
        self._size = os.fstat(f.fileno()).st_size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, piece: slice) -> bytes:
        start, stop, _step = piece.indices(self._size)
        if stop <= start:
            return b""
        self._f.seek(start)
        data = self._f.read(stop - start)
        if len(data) != stop - start:
            raise OSError("the file shrank while it was read")
        return data


class _Replay:
    """The jobs of the files read so far, keyed by beanstalkd id in first-seen order."""

    def __init__(self) -> None:
        self.jobs: dict[int, BinlogJob] = {}
        self.records = 0

    def read_file(self, path: Path) -> None:
        with open(path, "rb") as f:
            data = _FileBytes(f)
            if len(data) < 4:
                raise BinlogError(f"{path}: truncated: {len(data)} bytes, not even a version")
            self._replay(path, data)

    def _replay(self, path: Path, data: _FileBytes) -> None:
        (version,) = _NAMELEN.unpack(data[0:4])
        if version != SUPPORTED_VERSION:
            raise BinlogError(f"{path}: binlog version {version} is not supported: this import "
                              f"reads version {SUPPORTED_VERSION}, which beanstalkd 1.12 writes")
        at = 4
        while at < len(data):
            at = self._record(path, data, at)

    def _record(self, path: Path, data: _FileBytes, at: int) -> int:
        """Apply the record at ``at``; returns where the next one starts (len(data) at the end)."""
        start = at
        if len(data) - at < _NAMELEN.size:
            return _padding(path, data, at)
        (namelen,) = _NAMELEN.unpack(data[at:at + _NAMELEN.size])
        at += _NAMELEN.size
        if not 0 <= namelen <= MAX_TUBE_NAME_LEN:
            raise BinlogError(f"{path}: corrupt at offset {start}: tube name length {namelen}")
        name = data[at:at + namelen]
        at += namelen
        if len(data) - at < _JOBREC.size:
            if _zeros_from(data, start):
                return len(data)
            raise BinlogError(f"{path}: truncated at offset {start}: a record is cut short")
        (job_id, pri, _delay, ttr, size, created, deadline, *_counts, state) = \
            _JOBREC.unpack(data[at:at + _JOBREC.size])
        at += _JOBREC.size
        if job_id == 0:
            return _padding(path, data, start)
        if namelen and _TUBE_NAME.fullmatch(name) is None:
            raise BinlogError(f"{path}: corrupt at offset {start}: invalid tube name {name!r}")
        if state not in _STATE_WORDS and state != _DELETED:
            raise BinlogError(f"{path}: corrupt at offset {start}: job {job_id} has state {state}")
        if namelen and not 0 < ttr <= MAX_TTR_NS:
            raise BinlogError(f"{path}: corrupt at offset {start}: job {job_id} has a TTR of "
                              f"{ttr} ns")
        job = self.jobs.get(job_id)
        if not namelen:
            if job is not None:  # a short record: the job's new state
                if state == _DELETED:
                    del self.jobs[job_id]
                else:
                    job.pri, job.deadline_ns, job.state_code = pri, deadline, state
            self.records += 1
            return at
        if not 2 <= size <= MAX_BODY_SIZE or (job is not None and size != len(job.body) + 2):
            raise BinlogError(f"{path}: corrupt at offset {start}: job {job_id} body size {size}")
        body = data[at:at + size]
        if len(body) < size:
            raise BinlogError(f"{path}: truncated at offset {start}: job {job_id}'s body is cut "
                              f"short ({len(body)} of {size} bytes)")
        if body[-2:] != b"\r\n":
            raise BinlogError(f"{path}: corrupt at offset {start}: job {job_id}'s body does not "
                              "end in CRLF")
        self.records += 1
        if state == _DELETED:
            self.jobs.pop(job_id, None)
        elif job is None:
            self.jobs[job_id] = BinlogJob(job_id, name.decode("ascii"), pri, ttr, created,
                                          deadline, state, body[:-2])
        else:  # beanstalkd copied a live job into a newer file while compacting
            job.pri, job.deadline_ns, job.state_code = pri, deadline, state
        return at + size


def _padding(path: Path, data: _FileBytes, at: int) -> int:
    """The end of the file's data: what is left from ``at`` must be beanstalkd's zero padding."""
    if not _zeros_from(data, at):
        raise BinlogError(f"{path}: corrupt or truncated at offset {at}: neither a whole record "
                          "nor zero padding")
    return len(data)


def _zeros_from(data: _FileBytes, at: int) -> bool:
    """Whether every byte of ``data`` from ``at`` on is zero, looked at a piece at a time."""
    for begin in range(at, len(data), _ZERO_PIECE):
        piece = data[begin:begin + _ZERO_PIECE]
        if piece != _ZEROS[:len(piece)]:  # a memcmp; count(0) was 25 times slower
            return False
    return True


@dataclass
class Binlog:
    """A whole binlog directory, read and checked."""

    directory: Path
    files: list[Path]
    records: int
    jobs: list[BinlogJob]


def read_binlog(directory: str | os.PathLike) -> Binlog:
    """Read every ``binlog.N`` of ``directory`` (see the module docstring); BinlogError if any
    of it cannot be read, if there is none, or if a beanstalkd still runs on the directory."""
    path = Path(directory)
    if not path.is_dir():
        raise BinlogError(f"{path} is not a directory")
    check_not_running(path)
    files = binlog_files(path)
    if not files:
        raise BinlogError(f"{path} holds no binlog.N file: is it beanstalkd's -b directory?")
    replay = _Replay()
    for file in files:
        try:
            replay.read_file(file)
        except OSError as exc:
            raise BinlogError(f"cannot read {file}: {exc.strerror or exc}") from None
    return Binlog(path, files, replay.records, list(replay.jobs.values()))
