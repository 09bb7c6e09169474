"""The pieces of backup and restore without a cluster: the file format's checks, a state made
ready for a new cluster, the data directory restore writes, and which HTTP requests need a token.

Method: real files in a temporary directory and a real state machine driven by the jobs harness;
each damaged file is made from a good one by one precise change, and must be refused by name.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import pytest

from beanraft.jobs.commands import Op
from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine
from beanraft.jobs.restore import for_new_cluster
from beanraft.node.auth import cli_token, needs_token
from beanraft.node.principals import Authenticator
from beanraft.replication.backup_file import (BackupFileError, BackupReader, encode_head,
                                              header_for, read_backup)
from beanraft.replication.restore import (RESTORE_TERM_STEP, RestoreError, check_restored,
                                          restore_data_dir)
from beanraft.replication.snapshot_file import read_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from jobs_harness import Harness, S  # noqa: E402  (tests/jobs, beside this directory)

MEMBERS = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")


def busy_state() -> tuple[Harness, dict]:
    """A machine with a job in every state, a paused tube and a put key; and its job ids."""
    h = Harness()
    producer, worker = h.open(), h.open()
    assert h.cmd(producer, Op.USE, "mail") == ("USING", "mail")
    ids = {"ready": h.put(producer, b"r", pri=5, ttr=30),
           "delayed": h.put(producer, b"d", pri=6, delay=600, ttr=40),
           "reserved": h.put(producer, b"v", pri=1, ttr=500),
           "buried": h.put(producer, b"b", pri=2, ttr=70)}
    h.cmd(worker, Op.WATCH, "mail")
    assert h.cmd(worker, Op.RESERVE, 0)[1] == ids["reserved"]
    assert h.cmd(worker, Op.RESERVE, 0)[1] == ids["buried"]
    assert h.cmd(worker, Op.BURY, ids["buried"], 9) == ("BURIED",)
    reply = h.cmd(producer, Op.PUT_KEY, "order-1", 3600 * S, 100, 3, 0, 60 * S, b"k")
    ids["keyed"] = reply[1]
    assert h.cmd(producer, Op.PAUSE_TUBE, "mail", 900 * S) == ("PAUSED",)
    h.advance(seconds=100)
    return h, ids


def backup_file(tmp_path, body: bytes, index: int = 40, term: int = 3) -> str:
    head = encode_head(header_for(body, index=index, term=term, members=MEMBERS,
                                  node=MEMBERS[0], cluster_time_ns=123, jobs=5))
    path = tmp_path / "good.backup"
    path.write_bytes(head + body)
    return str(path)


def test_a_state_for_a_new_cluster_keeps_every_job_and_the_remaining_delays_and_pause():
    h, ids = busy_state()
    before = h.m
    later = before.now_ns + 86_400 * S  # restored a day later
    data, summary = for_new_cluster(before.snapshot(), later)
    after = Machine.restore(data)
    assert problems(after) == []
    assert summary["reserved_released"] == 1 and summary["jobs"] == 5
    assert not after.sessions and not after.epochs and not after.tokens
    assert after.now_ns == later
    for name, job_id in ids.items():
        old, new = before.jobs[job_id], after.jobs[job_id]
        assert (new.tube.name, new.pri, new.ttr_ns, new.body) == (old.tube.name, old.pri,
                                                                 old.ttr_ns, old.body), name
        assert new.state == ("ready" if name in ("reserved", "keyed") else name), name
        assert before.now_ns - old.created_ns == after.now_ns - new.created_ns  # same age
    delayed_old, delayed_new = before.jobs[ids["delayed"]], after.jobs[ids["delayed"]]
    assert delayed_new.deadline_ns - later == delayed_old.deadline_ns - before.now_ns == 500 * S
    tube_old, tube_new = before.tubes["mail"], after.tubes["mail"]
    assert tube_new.unpause_at_ns - later == tube_old.unpause_at_ns - before.now_ns == 800 * S
    assert after.dedup["order-1"] == (ids["keyed"], before.dedup["order-1"][1] + 86_400 * S)
    assert after.next_id == before.next_id


def test_a_backup_file_reads_back_whole_and_fed_byte_by_byte(tmp_path):
    body = Harness().m.snapshot()
    path = backup_file(tmp_path, body)
    header, read = read_backup(path)
    assert (header.index, header.term, header.members, read) == (40, 3, MEMBERS, body)
    reader = BackupReader()
    for byte in open(path, "rb").read():
        reader.feed(bytes([byte]))
    assert reader.finish() == header


def damaged(data: bytes, how: str) -> bytes:
    head_len = 14 + struct.unpack_from("<I", data, 10)[0] + 4
    if how == "foreign":
        return b"BRS1" + data[4:]
    if how == "version":
        raw = bytearray(data[:head_len - 4])
        raw[8:10] = struct.pack("<H", 99)
        return bytes(raw) + struct.pack("<I", zlib.crc32(bytes(raw))) + data[head_len:]
    if how == "header":
        return data[:20] + bytes([data[20] ^ 1]) + data[21:]
    if how == "body":
        return data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:]
    if how == "truncated":
        return data[:-10]
    if how == "in-header":
        return data[:head_len - 6]
    if how == "longer":
        return data + b"\0"
    raise AssertionError(how)


@pytest.mark.parametrize("how, message", [
    ("foreign", "not a BeanRaft backup"), ("version", "format version 99"),
    ("header", "header is damaged"), ("body", "does not match its checksum"),
    ("truncated", "truncated"), ("in-header", "ends inside its header"),
    ("longer", "past the end")])
def test_a_damaged_truncated_or_foreign_file_is_refused_and_restore_writes_nothing(
        tmp_path, how, message):
    h, _ids = busy_state()
    good = open(backup_file(tmp_path, h.m.snapshot()), "rb").read()
    bad = tmp_path / "bad.backup"
    bad.write_bytes(damaged(good, how))
    with pytest.raises(BackupFileError, match=message):
        restore_data_dir(str(bad), str(tmp_path / "data"))
    assert sorted(os.listdir(tmp_path)) == ["bad.backup", "good.backup"]


def test_restore_writes_a_snapshot_and_journal_a_node_loads_and_refuses_a_used_directory(
        tmp_path):
    h, _ids = busy_state()
    path = backup_file(tmp_path, h.m.snapshot(), index=40, term=3)
    summary = restore_data_dir(path, str(tmp_path / "data"))
    assert summary["index"] == 40 and summary["term"] == 3 + RESTORE_TERM_STEP
    anchor, state = read_snapshot(str(tmp_path / "data" / "raft.snapshot"))
    assert anchor.last[1:] == (40, 3 + RESTORE_TERM_STEP) and anchor.cluster == MEMBERS
    assert len(Machine.restore(state).jobs) == 5
    with pytest.raises(RestoreError, match="not empty"):
        restore_data_dir(path, str(tmp_path / "data"))
    assert check_restored(str(tmp_path / "data"), MEMBERS[1], [MEMBERS[0], MEMBERS[2]]) == 40
    with pytest.raises(RestoreError, match="restored for a cluster of"):
        check_restored(str(tmp_path / "data"), MEMBERS[1], [MEMBERS[0], "127.0.0.1:9999"])


@pytest.mark.parametrize("method, path, closed, needed", [
    ("GET", "/status", False, False), ("GET", "/metrics", False, False),
    ("POST", "/api/jobs/1/kick", False, True), ("DELETE", "/api/jobs/1", False, True),
    ("POST", "/admin/backup", False, True), ("GET", "/admin/backup", False, True),
    ("GET", "/status", True, True), ("GET", "/healthz", True, True),
    ("GET", "/api/tubes", True, True), ("GET", "/", True, False),
    ("GET", "/dashboard/app.js", True, False), ("OPTIONS", "/status", True, False)])
def test_which_requests_need_the_admin_token(method, path, closed, needed):
    assert needs_token(method, path, closed) is needed


def test_the_token_check_and_where_the_cli_finds_the_token(tmp_path, monkeypatch):
    admin = Authenticator(None, "abc")
    assert admin.bearer("Bearer abc") is admin.admin
    assert admin.bearer("Bearer abd") is None and admin.bearer("Bearer ") is None
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        cli_token(str(token_file))
    token_file.chmod(0o600)
    monkeypatch.setenv("BEANRAFT_ADMIN_TOKEN", "from-env")
    assert cli_token(str(token_file)) == "from-file"
    assert cli_token(None) == "from-env"
