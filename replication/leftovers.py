"""What a backup or restore killed half-way leaves beside its target, and its removal.

Theory of operation. ``beanraft backup`` writes beside FILE under a name of its own
(``.beanraft-backup-*``), and ``beanraft restore`` into a new directory stages it beside it
(``.beanraft-restore-*``); both rename their work into place once it is complete and remove it
when they fail. A writer that is killed (SIGKILL, the machine going down) removes nothing. The
next writer into the same directory removes what such a writer left (``remove_abandoned``), and
never what a writer still alive is using, by two rules:

* A writer holds an exclusive ``flock`` on its work for as long as it runs: on the file itself
  (``hold``), or on the ``lock`` file inside the directory, as a node holds its data directory.
  The kernel drops the lock when the writer dies, however it dies, so an entry whose lock can be
  taken has no writer. The remover keeps that lock while it removes the entry.
* A writer creates its entry a moment before it locks it. An entry changed within the last
  ``STALE_AFTER_S`` is left alone, so that this moment is never taken for a dead writer.

On a file system without locks the writer's ``flock`` fails and so does the remover's: its
entries are kept, as they were before.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import time

from .datadir import LOCK_NAME

log = logging.getLogger("beanraft.leftovers")

STALE_AFTER_S = 10.0


def hold(fd: int) -> None:
    """Lock the work open on ``fd`` for as long as it stays open (see the module docstring);
    without locks on its file system it stays unlocked, and is then never removed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass


def remove_abandoned(directory: str, prefix: str, now_s: float | None = None) -> list[str]:
    """Remove the files and directories named ``prefix``* in ``directory`` that no writer holds
    and that did not change for ``STALE_AFTER_S``; the names removed."""
    now_s = time.time() if now_s is None else now_s
    try:
        names = sorted(name for name in os.listdir(directory) if name.startswith(prefix))
    except OSError:
        return []
    removed = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            if _remove_if_abandoned(path, now_s):
                removed.append(name)
                log.info("removed %s, left by a writer that did not finish", path)
        except OSError:  # gone meanwhile, or not ours to open: left alone
            continue
    return removed


def _remove_if_abandoned(path: str, now_s: float) -> bool:
    found = os.lstat(path)
    if now_s - found.st_mtime < STALE_AFTER_S:
        return False
    if stat.S_ISREG(found.st_mode):
        lock_path = path
    elif stat.S_ISDIR(found.st_mode):
        lock_path = os.path.join(path, LOCK_NAME)
    else:  # a link or a device is none of ours
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if lock_path == path:
            return False
        # A directory whose writer died before it made its lock file.
        shutil.rmtree(path)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its writer is alive (or the file system has no locks)
            return False
        if os.lstat(path).st_ino != found.st_ino:  # replaced meanwhile: not the one judged
            return False
        if lock_path == path:
            os.unlink(path)
        else:
            shutil.rmtree(path)
        return True
    finally:
        os.close(fd)
