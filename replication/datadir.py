"""The data directory: the names of its files, its permissions, its lock, the journal in it."""

from __future__ import annotations

import fcntl
import logging
import os

from .journal import REWRITE_SUFFIX, DurableJournal
from .members_file import MEMBERS_NAME, TEMP_SUFFIX
from .snapshot_file import RECEIVING_SUFFIX
from .snapshot_writer import WRITING_SUFFIX

log = logging.getLogger("beanraft.raft")

JOURNAL_NAME = "raft.journal"
SNAPSHOT_NAME = "raft.snapshot"
LOCK_NAME = "lock"


class DataDirLocked(OSError):
    """Another process already uses this data directory."""


def make_private(directory: str) -> None:
    """Create ``directory`` as 0700, or make an existing one 0700 and its files 0600.

    The journal and snapshots hold every job body, and the data directory is the node's alone.
    A directory made by an older version (0755, files 0644) is tightened at start.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tightened = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
                os.chmod(entry.path, 0o600)
                tightened += 1
    if tightened:
        log.info("made %d files in %s readable by their owner only (0600)", tightened, directory)


def lock_directory(directory: str) -> int:
    """Hold an exclusive lock on DIR/lock for the life of the process (as beanstalkd does)."""
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DataDirLocked(f"cannot lock {directory}: another process is using it") from None
    return fd


# Files a write in progress leaves behind when the process dies: never read, only replaced.
# (``SNAPSHOT_NAME + ".tmp"`` is the name pysyncobj gives a snapshot it asks for.)
STALE_NAMES = (JOURNAL_NAME + REWRITE_SUFFIX, SNAPSHOT_NAME + WRITING_SUFFIX,
               SNAPSHOT_NAME + RECEIVING_SUFFIX, SNAPSHOT_NAME + ".tmp", MEMBERS_NAME + TEMP_SUFFIX)


def remove_stale_files(directory: str) -> None:
    """Delete what interrupted writes left in ``directory`` (call with the lock held): on a
    nearly full volume their space is wanted."""
    for name in STALE_NAMES:
        path = os.path.join(directory, name)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            continue
        log.info("removed %s, left by an interrupted write (%d bytes)", path, size)


def create_journal(journal_file):
    """Replacement for pysyncobj's journal factory (see journal.py for why)."""
    if journal_file is None:
        return DurableJournal(None)
    snapshot = os.path.join(os.path.dirname(journal_file), SNAPSHOT_NAME)
    return DurableJournal(journal_file, snapshot)
