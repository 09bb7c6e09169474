"""Write snapshots in a forked child, so the Raft thread never stalls on a big state.

Theory of operation.
* pysyncobj asks for a snapshot from its tick thread (``serializer(tmp_path, anchors)``) and, since
  we give it a ``serializeChecker``, learns the outcome by polling ``check()`` on later ticks: only
  on SUCCESS does it drop the journal prefix the snapshot replaces.
* ``start`` forks. The fork happens on the tick thread, the only thread that changes the state
  machine, so the child's copy of the machine is the state at the last applied entry, frozen by
  copy-on-write; the parent goes on ticking at once. The child closes every inherited descriptor
  (listening sockets, the journal, the data directory's lock: a restarted node must be able to
  take them), lowers its CPU priority (``CHILD_NICE``), encodes the machine, writes
  ``<snapshot>.writing``, fsyncs it, renames it onto the snapshot and exits 0. It dies with the
  thread that forked it (``PR_SET_PDEATHSIG``), so a killed node leaves no writer behind; a
  half-written ``.writing`` file is ignored and replaced.
* pysyncobj itself renames ``tmp_path`` onto the snapshot right after the serializer returns.
  The child never writes ``tmp_path`` (``start`` removes a stale one), so that rename fails,
  pysyncobj swallows the error, and the outcome comes from ``check`` alone.
* A failed fork is reported to pysyncobj as a failed snapshot (it would otherwise stop asking
  for snapshots for good). A snapshot the leader sends (``snapshot_file.SnapshotReceiver``)
  kills a child still writing an older one first (``abandon``): the child's rename must not
  land on the newer snapshot.
* The tick thread never waits for a child: ``check`` alone reaps it, with ``WNOHANG``, on the
  ticks after it exits or is killed. A killed child can take a while to die (a write or an
  fsync in uninterruptible sleep on a slow disk finishes first), and a tick thread blocked in
  ``waitpid`` meanwhile takes no part in Raft: no acknowledgement, no vote, no heartbeat. Only
  ``stop``, as the node shuts down, polls ``check`` for a bounded time.
* An abandoned child cannot land its rename on the leader's snapshot even before it is reaped.
  Once SIGKILL is pending it never returns to user space, so at most one more system call of
  its completes (the one it is in or entering). ``abandon`` unlinks ``.writing`` before the
  receiver's rename, and the child's rename serialises with that unlink on the directory's
  lock: it either comes first (the leader's snapshot then replaces what it moved) or finds no
  ``.writing`` to move. A ``.writing`` that a dying child created after the unlink is removed
  when ``check`` reaps the child.
* The crash-window rules of ``snapshot_file`` and ``journal`` hold as before: the snapshot is
  durable under its final name before ``check`` reports SUCCESS, and the journal fsyncs the
  directory before it drops the prefix.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from typing import Callable

from pysyncobj.config import SERIALIZER_STATE

from .snapshot_file import SnapshotAnchor, fsync_dir, write_snapshot

log = logging.getLogger("beanraft.snapshot")

_PR_SET_PDEATHSIG = 1
WRITING_SUFFIX = ".writing"  # the child's snapshot until it is complete and renamed
CHILD_NICE = 5  # added to the writer's nice value: it yields to the Raft threads, yet progresses
STOP_POLL_S = 0.01  # how often stop() asks whether the child is gone


class SnapshotWriter:
    """At most one child writing a snapshot at a time."""

    def __init__(self, snapshot_path: str):
        self.path = snapshot_path
        self._pid = 0
        self._index = 0
        self._started = 0.0
        self._refused = False
        self._abandoned = False  # killed for a leader's snapshot, not reaped yet

    def start(self, anchor: SnapshotAnchor, encode: Callable[[], bytes], tmp_path: str) -> None:
        """Fork a child that writes ``encode()`` under ``anchor``; returns in the parent at once."""
        if self._pid:
            log.warning("a snapshot is already being written; not starting another")
            return
        _unlink_quietly(tmp_path)
        self._index = anchor.last[1]
        self._started = time.monotonic()
        try:
            pid = os.fork()
        except OSError as exc:
            # pysyncobj would swallow it and never ask for a snapshot again: report FAILED.
            log.error("snapshot at index %d not started: fork failed (%s); the journal is kept",
                      self._index, exc)
            self.refuse()
            return
        if pid == 0:
            _child(self.path, anchor, encode)  # never returns
        self._pid = pid

    def refuse(self) -> None:
        """No snapshot was started (no room for it): the next ``check`` reports FAILED.

        pysyncobj waits for SUCCESS or FAILED before it asks for another snapshot.
        """
        self._refused = True

    def check(self) -> int:
        """pysyncobj's serializeChecker: SERIALIZING, then SUCCESS or FAILED once, else
        NOT_SERIALIZING.

        The one place that reaps the child, never blocking: a child that has not exited (or,
        killed, is not dead yet) is SERIALIZING until a later tick finds it gone."""
        if self._refused:
            self._refused = False
            return SERIALIZER_STATE.FAILED
        if not self._pid:
            return SERIALIZER_STATE.NOT_SERIALIZING
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, -1
        if pid == 0:
            return SERIALIZER_STATE.SERIALIZING
        self._pid = 0
        took = time.monotonic() - self._started
        if self._abandoned:
            self._abandoned = False
            # Even a child that completed before the kill wrote an older state than the one in
            # place now, and the journal was emptied down to the newer one: report FAILED.
            _unlink_quietly(self.path + WRITING_SUFFIX)
            log.info("abandoned snapshot writer reaped after %.2f s", took)
            return SERIALIZER_STATE.FAILED
        if status == 0:
            log.info("snapshot written at index %d in %.2f s", self._index, took)
            return SERIALIZER_STATE.SUCCESS
        log.error("snapshot at index %d failed (child status %d); the journal is kept",
                  self._index, status)
        return SERIALIZER_STATE.FAILED

    @property
    def busy(self) -> bool:
        return self._pid != 0

    def abandon(self) -> None:
        """A newer snapshot is about to take the snapshot's name (one the leader sent): kill a
        child still writing an older one, so that its rename cannot land on the newer one, and
        report FAILED to pysyncobj once ``check`` has reaped it (it asks for snapshots again
        after that). Returns at once: the tick thread must not wait for the child to die."""
        if not self._pid or self._abandoned:
            return
        self._kill()
        self._abandoned = True
        _unlink_quietly(self.path + WRITING_SUFFIX)
        log.info("snapshot at index %d abandoned: the leader's snapshot replaces it", self._index)

    def stop(self, timeout_s: float = 10.0, reap_s: float = 5.0) -> None:
        """Wait for a running child (bounded), then kill it: its snapshot is simply not used.
        The node is shutting down: a killed child is reaped within ``reap_s``, else left to die
        with this process (``PR_SET_PDEATHSIG`` and init then collect it)."""
        kill_at = time.monotonic() + timeout_s
        give_up_at = kill_at + reap_s
        for _poll in range(int((timeout_s + reap_s) / STOP_POLL_S) + 2):
            if self.check() != SERIALIZER_STATE.SERIALIZING:
                return
            now = time.monotonic()
            if now >= give_up_at:
                break
            if now >= kill_at and not self._abandoned:
                self._kill()
                self._abandoned = True  # its outcome no longer counts
            time.sleep(STOP_POLL_S)
        log.warning("snapshot writer %d not reaped %.1f s after it was killed; leaving it",
                    self._pid, reap_s)

    def _kill(self) -> None:
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # only once reaped is a child's pid gone, and check forgets it then


def _child(path: str, anchor: SnapshotAnchor, encode: Callable[[], bytes]) -> None:
    """In the forked child: write, fsync, rename, exit. Never returns, never logs."""
    status = 1
    writing = path + WRITING_SUFFIX
    try:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
        os.closerange(3, _max_fd())
        os.nice(CHILD_NICE)  # the Raft threads of this node and its neighbours come first
        write_snapshot(writing, anchor, encode())
        os.replace(writing, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
        status = 0
    except BaseException:  # the parent reports the failure; the journal keeps everything
        _unlink_quietly(writing)  # a partial snapshot would hold on to the space it took
        status = 1
    finally:
        os._exit(status)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
