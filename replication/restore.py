"""Seed a data directory from a backup, and the guard a restored node starts behind.

Theory of operation.
* ``restore_data_dir`` checks the whole backup (``backup_file``) and prepares its state for a new
  cluster (``jobs.restore``) before it writes anything. It then writes a complete data directory
  into a staging directory and moves it into place: a refused or failed restore leaves nothing,
  and a node never starts on half a restore. The target must be new, or empty but for a file
  system's ``lost+found``.
* A new target: the staging directory is beside it, and one rename makes it the target. The
  restore holds the staging directory's lock meanwhile, so that the next restore into the same
  parent tells a staging directory left by a restore that was killed, which it removes, from
  one still being written (``leftovers.py``).
* An existing target may be a volume's mount point, which no rename can replace: the staging
  directory is then inside it (``STAGING_PREFIX``), its files are renamed into the target one by
  one, and it is removed once empty. A node that finds a staging directory still holding files
  in its data directory refuses to start (``check_restored``): the restore was cut short. One
  that finds it empty removes it: every file had been moved. The restore holds the directory's
  lock meanwhile, as a node does, so that no node starts on it then (a service manager
  restarting one) and no restore replaces the files of a node that runs on it.
* The directory holds what a node finds after a snapshot: ``raft.snapshot`` at the backup's
  index, a journal holding the snapshot's two anchor entries, and its term and commit index.
  The anchor entries are no-ops: they are never applied (the snapshot covers them).
* Their term is the backup's term plus ``RESTORE_TERM_STEP`` (2**32). A node restored from a
  backup therefore holds a log whose last term no node started empty can reach (each election
  adds one to a term), and Raft's election rule does the rest: a voter refuses a candidate whose
  log ends in a lower term. Empty nodes may elect a leader among themselves while no restored node
  is reachable, but they can never overwrite a restored node: the restored state wins whenever
  they meet. Restoring the same file into every node of the new cluster gives every node the
  same log and leaves no empty node at all, which is the procedure the docs give.
* ``restore.json`` records the cluster's members (by default those of the backup). A node started
  on a restored directory (``check_restored``) refuses to start unless its ``--raft`` and
  ``--peer`` name exactly those members, until it has applied an entry past the restore: a
  node started with other peers might be joined to the wrong nodes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

from beanraft.jobs.restore import for_new_cluster

from . import leftovers, seam
from .backup_file import BackupFileError, BackupHeader, read_backup
from .datadir import (JOURNAL_NAME, LOCK_NAME, SNAPSHOT_NAME, DataDirLocked, lock_directory,
                      make_private)
from .journal import DurableJournal
from .snapshot_file import SnapshotAnchor, fsync_dir, write_snapshot

log = logging.getLogger("beanraft.restore")

RESTORE_NAME = "restore.json"
RESTORE_TERM_STEP = 1 << 32
STAGING_PREFIX = ".beanraft-restore-"
# What a target may hold and still count as empty: the directory mkfs puts at a volume's root,
# and the lock file a node (or a restore) creates first.
IGNORED_IN_TARGET = ("lost+found", LOCK_NAME)


class RestoreError(OSError):
    """A restore that cannot be done, or a restored node started against its record."""


def restore_data_dir(backup_path: str, directory: str, members: list[str] | None = None,
                     now_ns: int | None = None) -> dict:
    """Write a data directory for ``directory`` from the backup at ``backup_path``.

    ``members``: the Raft addresses of the new cluster (default: the backup's own). Returns a
    summary. Raises BackupFileError (a file that is not an intact backup) or RestoreError.
    """
    header, body = read_backup(backup_path)
    _check_target(directory)
    members = sorted(set(members or header.members))
    try:
        state, summary = for_new_cluster(body, time.time_ns() if now_ns is None else now_ns)
    except ValueError as exc:
        raise BackupFileError(f"the backup's state cannot be read: {exc}") from None
    if os.path.isdir(directory):
        index, term = _write_inside(directory, header, state, members)
    else:
        index, term = _write_beside(directory, header, state, members)
    summary.update(index=index, term=term, members=members, source_index=header.index,
                   source_node=header.node)
    log.info("restored %d jobs from %s (index %d of %s) into %s", summary["jobs"], backup_path,
             header.index, header.node, directory)
    return summary


def _check_target(directory: str) -> None:
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise RestoreError(f"{directory} exists and is not a directory")
        if set(os.listdir(directory)) - set(IGNORED_IN_TARGET):
            raise RestoreError(f"{directory} is not empty: restore writes only into a new or "
                               "empty directory")


def _write_beside(directory: str, header: BackupHeader, state: bytes,
                  members: list[str]) -> tuple[int, int]:
    """Restore into a new ``directory``: staged beside it, under a lock of its own, then renamed
    into place. The staging directories of restores killed before they could remove theirs go
    first (``leftovers``)."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    leftovers.remove_abandoned(parent, STAGING_PREFIX)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent)
    lock = None
    try:
        lock = lock_directory(staging)  # the lock file goes along, as a node makes one anyway
        written = _write(staging, header, state, members)
        os.rename(staging, directory)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return written


def _write_inside(directory: str, header: BackupHeader, state: bytes,
                  members: list[str]) -> tuple[int, int]:
    """Restore into an existing, empty ``directory`` (perhaps a mount point): staged inside it,
    then its files renamed into it one by one; the staging directory goes once empty."""
    lock_path = os.path.join(directory, LOCK_NAME)
    had_lock_file = os.path.exists(lock_path)
    try:
        lock = lock_directory(directory)
    except DataDirLocked:
        raise RestoreError(f"{directory} is in use by another process (a node running on it?): "
                           "stop it first") from None
    try:
        _check_target(directory)  # again, under the lock: nothing was put there meanwhile
        return _move_in(directory, header, state, members)
    except BaseException:
        if not had_lock_file:  # a failed restore leaves nothing, not even the lock it took
            _unlink(lock_path)
        raise
    finally:
        os.close(lock)


def _move_in(directory: str, header: BackupHeader, state: bytes,
             members: list[str]) -> tuple[int, int]:
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory)
    moved: list[str] = []
    try:
        written = _write(staging, header, state, members)
        for name in sorted(os.listdir(staging)):
            os.rename(os.path.join(staging, name), os.path.join(directory, name))
            moved.append(name)
        fsync_dir(directory)
        os.rmdir(staging)  # the restore is complete: a node may start on it from here on
        os.chmod(directory, 0o700)
        fsync_dir(directory)
    except BaseException:
        for name in moved:  # the target was empty: every one of these names is ours
            _unlink(os.path.join(directory, name))
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write(staging: str, header: BackupHeader, state: bytes, members: list[str]) -> tuple[int, int]:
    make_private(staging)
    index = max(header.index, 2)
    term = header.term + RESTORE_TERM_STEP
    prev, last = (seam.NO_OP_COMMAND, index - 1, term), (seam.NO_OP_COMMAND, index, term)
    snapshot = os.path.join(staging, SNAPSHOT_NAME)
    write_snapshot(snapshot, SnapshotAnchor(last=last, prev=prev, cluster=tuple(members)), state)
    journal = DurableJournal(os.path.join(staging, JOURNAL_NAME), snapshot)
    try:
        journal.add(*prev)
        journal.add(*last)
        journal.setCurrentTerm(term, None)
        journal.setRaftCommitIndex(index)
        journal.sync()
    finally:
        journal._destroy()
    record = {"members": members, "index": index, "term": term, "source": header.to_json(),
              "restored_at_ns": time.time_ns()}
    del record["source"]["body_sha256"]
    with open(os.open(os.path.join(staging, RESTORE_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                      0o600), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(staging)
    return index, term


def check_restored(directory: str, self_addr: str, peers: list[str]) -> int | None:
    """At start: the restore index if ``directory`` was restored and has not moved past it.

    Raises RestoreError when a restore into ``directory`` was cut short, or a clustered node's
    members differ from those of the restore.
    """
    _check_staging(directory)
    path = os.path.join(directory, RESTORE_NAME)
    try:
        with open(path) as f:
            record = json.load(f)
        members, index = sorted(record["members"]), int(record["index"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"{path} is unreadable ({exc}); it records the restored cluster's "
                           "members") from None
    started = sorted({self_addr, *peers})
    if peers and started != members:
        raise RestoreError(
            f"{directory} was restored for a cluster of {', '.join(members)}, but this node is "
            f"{self_addr} with peers {', '.join(peers)}: start it with --raft and --peer naming "
            "exactly those members (restore again with --member to choose others)")
    log.info("data directory restored at index %d for %s; its record is dropped once the "
             "cluster commits past it", index, ", ".join(members))
    return index


def _check_staging(directory: str) -> None:
    """RestoreError if a restore into ``directory`` was cut short; remove the empty staging
    directory of one that completed."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if not (name.startswith(STAGING_PREFIX) and os.path.isdir(path)):
            continue
        if os.listdir(path):
            raise RestoreError(
                f"{directory} holds a restore that was cut short ({name} still holds files): "
                f"empty {directory} and run beanraft restore again")
        os.rmdir(path)
        log.info("removed %s, the empty staging directory of a completed restore", path)


def forget_restore(directory: str) -> None:
    """The cluster committed past the restore: the record has done its work."""
    try:
        os.unlink(os.path.join(directory, RESTORE_NAME))
        fsync_dir(directory)
        log.info("restored cluster committed past the restore; %s removed", RESTORE_NAME)
    except OSError as exc:
        log.warning("cannot remove %s: %s", RESTORE_NAME, exc)
