"""What a killed ``beanraft backup`` or ``beanraft restore`` leaves beside its target is removed
by the next one into the same directory, and never what one still running is writing, nor an
entry made a moment ago (the moment between its creation and its lock).

Method: real commands as subprocesses, killed with SIGKILL half-way. A backup is held half-way
by a small HTTP server of this test that sends part of a real backup file and then waits, and
killed from here. A restore runs under strace, which either sends it SIGKILL as it enters its
first rename (its staging directory then exists, locked, with files in it), or holds that rename
until strace is killed at the end of the test, when the restore goes on and completes. The held
ones are the backup and the restore "still running"; their entries are dated back an hour, so
that only their lock keeps them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backup_kit import HOST, beanraft_argv, clean_env
from test_backup_download import FILE, OneAnswer, chunked
from test_backup_units import backup_file, busy_state

from beanraft.replication.restore import STAGING_PREFIX

BACKUP_PREFIX = ".beanraft-backup-"
AN_HOUR_AGO = time.time() - 3600


class Holding:
    """Answers one POST /admin/backup with a 200 and a MiB and more of FILE (chunked), then keeps
    the connection open until ``close`` (at most 120 s)."""

    def __init__(self):
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(30)
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            conn.sendall(chunked(FILE, cut_at=(1 << 20) + 5000))
            self.released.wait(120)

    def close(self) -> None:
        self.released.set()
        self.thread.join(10)
        self.listener.close()


def wait_for(what: str, check, timeout_s: float = 30.0):
    for _attempt in range(int(timeout_s / 0.01)):
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def entries(directory: Path, prefix: str) -> set[str]:
    return {name for name in os.listdir(directory) if name.startswith(prefix)}


def start_backup(address: str, target: Path) -> subprocess.Popen:
    return subprocess.Popen([*beanraft_argv(), "backup", address, str(target), "--exact"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(BEANRAFT_ADMIN_TOKEN="t"))


def backdate(path: Path) -> None:
    os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))


def test_the_next_backup_removes_a_killed_backups_file_and_keeps_a_running_ones(tmp_path):
    directory = tmp_path / "backups"
    directory.mkdir()
    running_node, killed_node = Holding(), Holding()
    running = start_backup(running_node.address, directory / "running.backup")
    try:
        (running_file,) = wait_for("the running backup's file",
                                   lambda: entries(directory, BACKUP_PREFIX))
        killed = start_backup(killed_node.address, directory / "killed.backup")
        (killed_file,) = wait_for("the killed backup's file", lambda: entries(
            directory, BACKUP_PREFIX) - {running_file})
        wait_for("a MiB received", lambda: os.path.getsize(directory / killed_file) >= 1 << 20)
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(30) == -signal.SIGKILL
        killed.communicate(timeout=30)
        assert entries(directory, BACKUP_PREFIX) == {running_file, killed_file}  # left behind
        for name in (running_file, killed_file):
            backdate(directory / name)
        (directory / f"{BACKUP_PREFIX}just-made").write_bytes(b"")  # not locked yet

        whole = OneAnswer(chunked(FILE))
        done = subprocess.run([*beanraft_argv(), "backup", whole.address,
                               str(directory / "next.backup"), "--exact"], capture_output=True,
                              text=True, timeout=60, env=clean_env(BEANRAFT_ADMIN_TOKEN="t"))
        whole.close()
        assert done.returncode == 0, done.stderr
        assert (directory / "next.backup").read_bytes() == FILE
        assert entries(directory, BACKUP_PREFIX) == {running_file, f"{BACKUP_PREFIX}just-made"}
        assert running.poll() is None
    finally:
        running_node.close()
        killed_node.close()
        _out, err = running.communicate(timeout=60)
    assert running.returncode == 7 and "broke off the backup" in err  # and removed its file
    assert entries(directory, BACKUP_PREFIX) == {f"{BACKUP_PREFIX}just-made"}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


class RestoreUnderStrace:
    """``beanraft restore`` under strace, which does ``inject`` as it enters its first rename:
    ``signal=SIGKILL`` kills it there, ``delay_enter=120s`` holds it until ``release``."""

    def __init__(self, backup: str, target: Path, inject: str):
        self.tracer = subprocess.Popen(
            ["strace", "-f", "-o", "/dev/null", "-e", "trace=/^rename",
             "-e", f"inject=/^rename:{inject}", *beanraft_argv(), "restore", backup,
             "-b", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=clean_env())
        (self.pid,) = wait_for("the restore under strace", lambda: children_of(self.tracer.pid))

    def release(self) -> None:
        """Kill strace (by its pid, SIGKILL): the restore is let go, its rename runs."""
        self.tracer.kill()
        self.tracer.wait(30)
        wait_for("the restore to end", lambda: not os.path.exists(f"/proc/{self.pid}"))


def staging_with_files(parent: Path, known: set[str]) -> str | None:
    """A new staging directory holding its lock and at least one file of the restore."""
    for name in entries(parent, STAGING_PREFIX) - known:
        if len(os.listdir(parent / name)) >= 2:
            return name
    return None


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to hold a restore")
def test_the_next_restore_removes_a_killed_restores_staging_and_keeps_a_running_ones(tmp_path):
    h, _ids = busy_state()
    backup = backup_file(tmp_path, h.m.snapshot())
    parent = tmp_path / "nodes"
    parent.mkdir()
    killed = RestoreUnderStrace(backup, parent / "killed", "signal=SIGKILL")
    killed.tracer.wait(60)
    (killed_staging,) = entries(parent, STAGING_PREFIX)  # left behind, with files in it
    assert len(os.listdir(parent / killed_staging)) >= 2 and not (parent / "killed").exists()
    running = RestoreUnderStrace(backup, parent / "running", "delay_enter=120s")
    try:
        running_staging = wait_for("the running restore's staging", lambda: staging_with_files(
            parent, {killed_staging}))
        assert entries(parent, STAGING_PREFIX) == {killed_staging, running_staging}
        for name in (killed_staging, running_staging):
            backdate(parent / name)
        (parent / f"{STAGING_PREFIX}just-made").mkdir()  # no lock file in it yet

        done = subprocess.run([*beanraft_argv(), "restore", backup, "-b", str(parent / "next")],
                              capture_output=True, text=True, timeout=60, env=clean_env())
        assert done.returncode == 0, done.stderr
        assert "raft.snapshot" in os.listdir(parent / "next")
        assert entries(parent, STAGING_PREFIX) == {running_staging, f"{STAGING_PREFIX}just-made"}
        assert running.tracer.poll() is None
    finally:
        running.release()
    assert sorted(os.listdir(parent)) == [f"{STAGING_PREFIX}just-made", "next", "running"]
    assert sorted(os.listdir(parent / "running")) == sorted(os.listdir(parent / "next"))
