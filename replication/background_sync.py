"""A lone node's fdatasync in a helper process, while the event loop goes on.

Theory of operation. A lone node commits on its event loop (``lone_loop.py``): it appends a batch to
the journal, makes it durable, applies it and writes the replies. An fdatasync in the middle
blocks the loop for as long as the disk takes, ~0.2 ms on a good disk and far longer on a busy
one, while the clients' next requests wait unread. Here the loop appends the batch, hands the
fdatasync to a helper and goes on reading and parsing; when the helper answers (the loop reads
its socket), and only then, the batch is committed, applied and answered. Nothing is
acknowledged, and no read sees an entry, before it is durable.

Why a process and not a thread: a thread coming back from fdatasync needs the GIL to say so,
and the loop, busy parsing, holds it until the interpreter's switch interval forces it to let
go; the batch then waits for the GIL longer than for the disk. The helper (``sync_helper.py``,
a short standard-library script) gets the journal's descriptor with each request (SCM_RIGHTS):
an fdatasync through it covers the same open file, so the same writes, as one of the node's own.

The rules that keep the journal's file safe:

* The helper only calls fdatasync, on the descriptor sent with the request; the loop may
  meanwhile append (``pwritev``, ``posix_fallocate``), which Linux allows beside an fdatasync
  of the same file; writes after ``begin_sync`` are simply not counted as durable by it.
* Everything else that touches the file (a tick: a compaction's rewrite, a truncation, the
  journal's close at stop) first waits for the answer (``wait``).
* One sync at a time: a batch appended while one runs is synced by the next, which the loop
  starts when it hears of the first.
* A helper that dies leaves its sync's outcome unknown: the caller syncs in the loop itself, as
  before, and so it does while there is no helper (``broken``). A new helper is started at the
  first batch ``RETRY_S`` later (a flood of connections may have taken every descriptor, the
  kernel's OOM killer may have picked the helper): one warning per outage, one line when a
  helper runs again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import subprocess
import sys
import time
from typing import Callable

from .sync_helper import ANSWER, REQUEST

log = logging.getLogger("beanraft.journal")

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sync_helper.py")
STOP_WAIT_S = 5.0  # how long stop waits for the helper to exit before it is killed
RETRY_S = 30.0  # after a helper died or could not start, syncs stay in the loop this long
LOST = "lost"  # the outcome of a sync whose helper died: unknown


class BackgroundSync:
    """The helper process and the one sync it runs at a time (loop thread only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done: Callable[[], None]):
        self._loop = loop
        self._on_done = on_done
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._seq = 0
        self._answer: int | str | None = None  # errno of the sync under way once answered
        self.token: tuple[int, int] | None = None  # (writes, last index) of the sync under way
        self.broken = False  # no helper since it died or failed to start: syncs in the loop
        self._retry_at = 0.0  # monotonic time from which a new helper may be started

    @property
    def busy(self) -> bool:
        """Is a sync started and not yet taken back by ``finish``?"""
        return self.token is not None

    def open(self) -> bool:
        """Start the helper (idempotent); False if there is none (``broken``, until RETRY_S
        passed). ``start`` calls it for the first batch, so that the helper runs as the user
        ``-u`` made the node."""
        if self._sock is not None:
            return True
        if self.broken and time.monotonic() < self._retry_at:
            return False
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:
            return self._give_up(f"no socket pair for the sync helper: {exc}")
        try:
            # Its own process group: a terminal's ^C reaches the node, which stops it in order.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", HELPER, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, process_group=0)
        except OSError as exc:
            ours.close()
            return self._give_up(f"cannot start the sync helper: {exc}")
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop.add_reader(ours.fileno(), self._on_readable)
        if self.broken:
            self.broken = False
            log.info("sync helper running again: the journal is synced beside the event loop")
        return True

    def start(self, fd: int, writes: int, upto: int) -> bool:
        """Ask the helper to sync ``fd``; False if it cannot (the caller syncs itself).
        ``writes`` and ``upto`` come back from ``finish``."""
        assert self.token is None, "one sync at a time"
        if not self.open():
            return False
        self._seq += 1
        try:
            socket.send_fds(self._sock, [REQUEST.pack(self._seq)], [fd])
        except OSError as exc:
            self._lose(f"the sync helper is gone ({exc})")
            return False
        self.token = (writes, upto)
        self._answer = None
        return True

    def done(self) -> bool:
        """Has the sync under way been answered (its outcome awaits ``finish``)?"""
        return self.token is not None and self._answer is not None

    def wait(self) -> None:
        """Block until the sync under way is answered."""
        while self.token is not None and self._answer is None:
            poller = select.poll()  # not select(): the descriptor may be past FD_SETSIZE
            poller.register(self._sock, select.POLLIN)
            poller.poll()
            self._read()

    def finish(self) -> tuple[int, int, OSError | None, bool]:
        """Take back the answered sync: (writes, last index, error, lost). ``lost``: the
        helper died, nothing is known to be durable."""
        assert self.done()
        (writes, upto), self.token = self.token, None
        answer, self._answer = self._answer, None
        if answer == LOST:
            return writes, upto, None, True
        error = OSError(answer, os.strerror(answer)) if answer else None
        return writes, upto, error, False

    def close(self) -> None:
        """Stop the helper once the sync under way is answered (idempotent)."""
        self.wait()
        self._close_socket()
        self._reap()

    def _on_readable(self) -> None:
        self._read()
        if self.done():
            self._on_done()

    def _read(self) -> None:
        while self._sock is not None:
            try:
                message = self._sock.recv(ANSWER.size)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lose(f"the sync helper is gone ({exc})")
                return
            if not message:
                self._lose("the sync helper exited")
                return
            seq, error = ANSWER.unpack(message)
            if seq == self._seq and self.token is not None:
                self._answer = error

    def _lose(self, why: str) -> None:
        """The helper died: the sync under way has no known outcome."""
        if self.token is not None and self._answer is None:
            self._answer = LOST
        self._close_socket()
        self._reap()
        self._give_up(why)

    def _give_up(self, why: str) -> bool:
        if not self.broken:
            log.warning("%s: the journal is synced in the event loop (a new helper is tried "
                        "every %.0f s)", why, RETRY_S)
        self.broken = True
        self._retry_at = time.monotonic() + RETRY_S
        return False

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()  # the helper reads the end of its input and exits

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
