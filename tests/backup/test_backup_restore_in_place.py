"""``beanraft restore`` into a directory that already exists, as a volume's mount point does (which
no rename can replace) and as a fresh ext4 volume does (``lost+found`` in it): the restore
completes, a node serves it, a directory whose lock a process holds is refused, and a restore
cut short in place is never started on.

Method: real files; the real command into a real tmpfs mount point (skipped without root to
mount it), then a real ``beanraft serve`` on it asked over the wire; a cut-short restore is the
staging directory a killed restore leaves inside the target, still holding files, and the node
must exit 111 naming it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess

import pytest

from backup_kit import cli
from cluster_harness import HOST, LineClient, beanraft_argv, clean_env, free_ports, wait_for
from hardening.test_hardening_disk_full import tmpfs
from test_backup_http_guard import _serves
from test_backup_units import backup_file, busy_state

from beanraft.node import launcher
from beanraft.replication.restore import RestoreError, check_restored, restore_data_dir
from beanraft.replication.snapshot_file import read_snapshot


def test_restore_into_a_mount_point_completes_and_a_node_serves_it(tmp_path):
    h, ids = busy_state()
    path = backup_file(tmp_path, h.m.snapshot())
    raft = free_ports(1)[0]
    with tmpfs(tmp_path / "volume", size_mb=64) as volume:
        done = cli("restore", path, "-b", str(volume), "--member", f"{HOST}:{raft}",
                   env=clean_env())
        assert done.returncode == 0, done.stderr
        assert sorted(os.listdir(volume)) == ["lock", "raft.journal", "raft.journal.meta",
                                              "raft.snapshot", "restore.json"]
        assert os.stat(volume).st_mode & 0o777 == 0o700
        client = launcher.free_ports(1)[0]
        spec = launcher.NodeSpec("restored", HOST, client, raft, None, volume)
        node = launcher.ServeProcess(spec, [], log_path=tmp_path / "restored.log")
        node.start()
        try:
            wait_for("the restored node serves", lambda: _serves(client), timeout_s=30)
            with LineClient((HOST, client)) as conn:
                assert conn.yaml(b"stats-job %d" % ids["buried"])["state"] == "buried"
                assert conn.yaml(b"stats")["current-jobs-ready"] == "3"
        finally:
            node.terminate()


def test_restore_into_a_directory_holding_only_lost_and_found_keeps_it(tmp_path):
    h, _ids = busy_state()
    path = backup_file(tmp_path, h.m.snapshot())
    target = tmp_path / "data"
    (target / "lost+found").mkdir(parents=True)
    summary = restore_data_dir(path, str(target))
    assert summary["jobs"] == 5
    assert sorted(os.listdir(target)) == ["lock", "lost+found", "raft.journal",
                                          "raft.journal.meta", "raft.snapshot", "restore.json"]
    anchor, _state = read_snapshot(str(target / "raft.snapshot"))
    assert anchor.last[1] == summary["index"]


def test_restore_refuses_a_directory_whose_lock_a_process_holds(tmp_path):
    # A node that has just started on the empty directory: it holds the lock and has written
    # nothing else yet. Its files must not be replaced under it.
    h, _ids = busy_state()
    path = backup_file(tmp_path, h.m.snapshot())
    target = tmp_path / "data"
    target.mkdir()
    holder = os.open(target / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RestoreError, match="in use by another process"):
            restore_data_dir(path, str(target))
    finally:
        os.close(holder)
    assert os.listdir(target) == ["lock"]
    restore_data_dir(path, str(target))  # once it is gone, the lock file left is no obstacle
    assert "raft.snapshot" in os.listdir(target)


def test_a_node_refuses_a_restore_cut_short_in_place_and_tidies_a_completed_one(tmp_path):
    h, _ids = busy_state()
    path = backup_file(tmp_path, h.m.snapshot())
    target = tmp_path / "data"
    target.mkdir()
    restore_data_dir(path, str(target), members=[f"{HOST}:{free_ports(1)[0]}"])
    # What a restore killed between two of its renames leaves: some files in place, the rest
    # still in its staging directory.
    staging = target / ".beanraft-restore-cut"  # the prefix restore gives its staging
    staging.mkdir()
    os.rename(target / "raft.snapshot", staging / "raft.snapshot")
    serve = subprocess.run([*beanraft_argv(), "serve", "-l", HOST, "-p", "0", "-b", str(target)],
                           capture_output=True, text=True, timeout=20, env=clean_env())
    assert serve.returncode == 111, serve.stderr
    assert "a restore that was cut short" in serve.stderr and staging.name in serve.stderr
    # Once every file was moved, only the empty staging directory is left: it is removed.
    os.rename(staging / "raft.snapshot", target / "raft.snapshot")
    restored = check_restored(str(target), "127.0.0.1:1", [])
    assert restored is not None and not staging.exists()
