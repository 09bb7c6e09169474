"""Online backups: the state at one applied index, written by a forked child into a pipe.

Theory of operation.
* A backup is asked for from any thread (``request``), and taken on the Raft tick thread
  (``on_tick``, a pysyncobj tick callback), the only thread that changes the state machine. There,
  between two applied entries, the machine is exactly the state after ``applied_index``: that
  index, its term and the cluster's members as of that index (they change at run time; a
  change appended after it is not counted, ``_members_at``) go into the header
  (``backup_file.py``).
* ``on_tick`` forks. The child's copy of the machine is frozen by copy-on-write while the parent
  goes on ticking at once: the only pause clients see is the fork itself (copying the page
  tables). The child closes every inherited descriptor but the pipe's write end, takes the
  lowest CPU priority (nice 19: unlike a snapshot, nothing waits for it), encodes the machine
  with the snapshot codec, writes the header and the body into the pipe and exits; it dies with
  the tick thread (``PR_SET_PDEATHSIG``). A reader that goes away breaks the pipe, and the
  child exits.
* The caller gets a ``BackupStream``: the pipe's read end and the child's pid. It reads to the
  end of the pipe (``read``) and then reaps the child (``finish``): status 0 means the whole
  file was written. At most ``MAX_RUNNING`` backups run at a time; more are refused at once. A
  caller that gives up before the tick cancels its future, and no child is forked for it; one
  that gives up while the tick forks gets its stream anyway and ends it (``abandon``).
* A child that neither writes nor runs (its CPU time in /proc does not grow) for the caller's
  stall limit is hung: stopped, or blocked for good, as a child forked while another thread
  held a lock it then needs. ``read`` says so and the caller ends it (``abandon``); a child that
  is still encoding a large state before its first byte runs all along and is left to finish.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import importlib.metadata
import logging
import os
import select
import signal
import threading
import time
from dataclasses import dataclass

from . import seam
from .backup_file import encode_head, header_for

log = logging.getLogger("beanraft.backup")

MAX_RUNNING = 1
CHILD_NICE = 19  # the lowest CPU priority: a backup may take longer, clients may not wait
_PR_SET_PDEATHSIG = 1


class BackupBusy(RuntimeError):
    """A backup is already being taken on this node."""


@dataclass
class BackupStream:
    """The reading end of one backup being written by a child process."""

    fd: int
    pid: int
    index: int
    fork_ms: float

    def read(self, max_bytes: int, stall_s: float) -> bytes | None:
        """The next bytes of the file (b"" at its end), waiting for them (blocking); None once
        the child has written nothing and used no CPU time for ``stall_s``: it is hung."""
        poller = select.poll()  # not select.select: a busy node's descriptors pass 1024
        poller.register(self.fd, select.POLLIN)
        ran, quiet_since = _cpu_ticks(self.pid), time.monotonic()
        while True:
            if poller.poll(min(1.0, stall_s) * 1000):
                return os.read(self.fd, max_bytes)
            now_ran = _cpu_ticks(self.pid)
            if now_ran != ran:
                ran, quiet_since = now_ran, time.monotonic()
            elif time.monotonic() - quiet_since >= stall_s:
                return None

    def finish(self) -> bool:
        """Close the pipe and reap the child; True if it wrote the whole backup."""
        try:
            os.close(self.fd)
        except OSError:
            pass
        return self._reap()

    def _reap(self) -> bool:
        try:
            _pid, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return False
        return status == 0

    def abandon(self) -> None:
        """End a stream nobody will read, without waiting (the caller may be the Raft thread):
        kill the child, and reap it on a thread of its own."""
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        threading.Thread(target=self._reap, name="backup-reaper", daemon=True).start()


class BackupTaker:
    """The tick-thread side of backups (see the module docstring)."""

    def __init__(self, raft, sync):
        self._raft = raft
        self._sync = sync
        self._version = _our_version()
        self._pending: collections.deque = collections.deque()
        self._running = 0
        self._lock = threading.Lock()

    def request(self) -> concurrent.futures.Future:
        """A future of a ``BackupStream`` taken at the next tick; BackupBusy if one is running."""
        with self._lock:
            if self._running >= MAX_RUNNING:
                raise BackupBusy("a backup of this node is already being taken")
            self._running += 1
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._pending.append(future)
        return future

    def done(self) -> None:
        """The caller finished with its stream (whatever the outcome)."""
        with self._lock:
            self._running -= 1

    def on_tick(self) -> None:
        while self._pending:
            future = self._pending.popleft()
            # A caller that gave up before this tick (its start timeout) cancelled its future:
            # fork nothing for it (a stream nobody reads would be a child left blocked on a full
            # pipe). From here on the future cannot be cancelled: its stream is the caller's.
            if not future.set_running_or_notify_cancel():
                continue
            try:
                stream = self._fork()
            except BaseException as exc:  # reported to the caller, never to pysyncobj
                log.error("backup not started: %s", exc)
                future.set_exception(exc)
            else:
                future.set_result(stream)

    def _fork(self) -> BackupStream:
        raft = self._raft
        sync = self._sync
        index = raft.applied_index
        journal = seam.journal(sync)
        term = _term_at(journal, index, sync.raftCurrentTerm)
        members = _members_at(journal, index, {str(node) for node in sync.otherNodes})
        fields = dict(index=index, term=term,
                      members=tuple(sorted(members | {raft.config.self_addr})),
                      node=raft.config.self_addr, cluster_time_ns=raft.machine.now_ns,
                      jobs=len(raft.machine.jobs), beanraft=self._version)
        machine = raft.machine
        read_fd, write_fd = os.pipe()
        began = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(write_fd, machine, fields)  # never returns
        fork_ms = (time.perf_counter() - began) * 1000
        os.close(write_fd)
        log.info("backup at index %d (term %d, %d jobs) started; fork took %.1f ms",
                 index, term, fields["jobs"], fork_ms)
        return BackupStream(read_fd, pid, index, fork_ms)


def _cpu_ticks(pid: int) -> int | None:
    """The CPU time ``pid`` has used (user and system, in clock ticks), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def _our_version() -> str:
    try:
        return importlib.metadata.version("beanraft")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _members_at(journal, index: int, members: set[str]) -> set[str]:
    """The members as of ``index``, from ``members`` as pysyncobj lists them now.

    pysyncobj changes its member list when it appends a membership entry (Raft's single-server
    change), so the list counts entries past the applied index too: an addition still being
    committed, say. Those are undone here, newest first, so that the header's members are those
    of the state it holds.
    """
    if not len(journal):
        return members
    first = max(index + 1 - journal[0][1], 0)
    for position in range(len(journal) - 1, first - 1, -1):
        command = journal[position][0]
        if bytes(command[:1]) != seam.MEMBERSHIP_COMMAND:
            continue
        try:  # our own journal, in pysyncobj's shape
            kind, address = seam.membership_change(command)
        except ValueError:
            continue
        if kind == "add":
            members.discard(address)
        elif kind == "rem":
            members.add(address)
    return members


def _term_at(journal, index: int, fallback: int) -> int:
    if len(journal):
        position = index - journal[0][1]
        if 0 <= position < len(journal):
            return journal[position][2]
    return fallback


def _child(fd: int, machine, fields: dict) -> None:
    """In the forked child: encode, write into the pipe, exit. Never returns, never logs."""
    status = 1
    try:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
        os.dup2(fd, 3)
        os.closerange(4, _max_fd())
        os.nice(CHILD_NICE)
        body = machine.snapshot()
        head = encode_head(header_for(body, **fields))
        with open(3, "wb", buffering=0, closefd=True) as pipe:
            _write_all(pipe, memoryview(head))
            _write_all(pipe, memoryview(body))
        status = 0
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _write_all(pipe, view: memoryview) -> None:
    while view:
        written = pipe.write(view[:1 << 20])
        view = view[written:]


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536
