"""Data written under a rules version this BeanRaft cannot apply stop it, with the reason.

Method: a backup of a state under rules version 2 (a snapshot of format 4) is restored into a
data directory, as ``beanraft restore`` writes one; then its snapshot is rewritten to claim the
version after the highest this code applies, as a newer BeanRaft would leave it, with a valid
checksum. ``beanraft serve`` on that directory must exit with status 65 and say which version
it met, instead of applying the log by rules it does not know. A backup that claims that
version is refused by ``restore``.
"""

from __future__ import annotations

import time

import msgpack
from backup_kit import cli
from cluster_harness import HOST, free_ports

from beanraft.jobs.commands import RULES_SUPPORTED, Op
from beanraft.jobs.machine import Machine
from beanraft.replication.backup_file import encode_head, header_for
from beanraft.replication.datadir import SNAPSHOT_NAME
from beanraft.replication.rules import EXIT_NEWER_RULES
from beanraft.replication.snapshot_file import read_snapshot, write_snapshot

NEWER = RULES_SUPPORTED + 1
_RULES_FIELD = 13  # of a version 4 snapshot body (jobs/snapshot.py)


def state_bytes(rules: int) -> bytes:
    """A state under rules version 2 holding three jobs, its rules field set to ``rules``."""
    machine = Machine()
    now = time.time_ns()
    replies, _ = machine.apply_batch(now, [(Op.RULES, 0, 0, 2),
                                           (Op.NODE_START, 0, 0, "127.0.0.1:1")])
    assert replies[0] == ("RULES", 2) and replies[1][0] == "EPOCH"
    sid = (replies[1][1] << 32) | 1
    machine.apply_batch(now, [(Op.OPEN, sid, 1)] + [
        (Op.PUT, sid, 2 + i, 10, 0, 60 * 10**9, b"job %d" % i) for i in range(3)])
    data = machine.snapshot()
    assert data[0] == 4
    body = msgpack.unpackb(data[1:], raw=False)
    body[_RULES_FIELD] = rules
    return data[:1] + msgpack.packb(body, use_bin_type=True)


def write_backup(path, rules: int) -> None:
    body = state_bytes(rules)
    path.write_bytes(encode_head(header_for(body, index=500, term=0, members=("127.0.0.1:1",),
                                            node="127.0.0.1:1", cluster_time_ns=time.time_ns(),
                                            jobs=3)) + body)


def test_a_snapshot_of_newer_rules_stops_the_node_with_the_reason(tmp_path):
    backup, data = tmp_path / "b.backup", tmp_path / "node"
    write_backup(backup, 2)
    member = f"{HOST}:{free_ports(1)[0]}"
    done = cli("restore", str(backup), "-b", str(data), "--member", member)
    assert done.returncode == 0, done.stderr
    snapshot = str(data / SNAPSHOT_NAME)
    anchor, state = read_snapshot(snapshot)
    body = msgpack.unpackb(state[1:], raw=False)
    assert state[0] == 4 and body[_RULES_FIELD] == 2
    body[_RULES_FIELD] = NEWER
    write_snapshot(snapshot, anchor, state[:1] + msgpack.packb(body, use_bin_type=True))
    done = cli("serve", "-l", HOST, "-p", "0", "-b", str(data), "--raft", member, "--insecure",
               timeout_s=60)
    assert done.returncode == EXIT_NEWER_RULES, done.stderr
    assert f"follows rules version {NEWER}, above {RULES_SUPPORTED}" in done.stderr
    assert "CRITICAL" in done.stderr


def test_restore_refuses_a_backup_of_newer_rules(tmp_path):
    backup, data = tmp_path / "b.backup", tmp_path / "node"
    write_backup(backup, NEWER)
    done = cli("restore", str(backup), "-b", str(data), "--member", "127.0.0.1:7101")
    assert done.returncode != 0
    assert f"rules version {NEWER}" in done.stderr and "run a newer version" in done.stderr
    assert not data.exists() or not any(data.iterdir())
