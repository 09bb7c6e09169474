"""Snapshots are encoded and written by a forked child, so the Raft thread never does that work,
and pysyncobj hears of the outcome only once the snapshot is durable under its final name.

Method: a real ``SnapshotWriter`` forks real children. The state's encoder records the process
that runs it; the checker is polled as pysyncobj polls it; the file is read back with the
reader the node uses at start. A failing encoder and a refused start must report FAILED once and
leave the previous snapshot and no partial file behind.
"""

from __future__ import annotations

import os
import time

from pysyncobj.config import SERIALIZER_STATE

from beanraft.replication.snapshot_file import SnapshotAnchor, read_snapshot, write_snapshot
from beanraft.replication.snapshot_writer import SnapshotWriter

ANCHOR = SnapshotAnchor(last=(b"last", 12, 3), prev=(b"prev", 11, 3), cluster=("a:1", "b:2"))


def wait_outcome(writer: SnapshotWriter, seconds: float = 20.0) -> tuple[int, int]:
    """(the final outcome, how many polls said SERIALIZING first)."""
    polls = 0
    end = time.monotonic() + seconds
    for _poll in range(int(seconds / 0.005) + 2):
        state = writer.check()
        if state != SERIALIZER_STATE.SERIALIZING or time.monotonic() > end:
            return state, polls
        polls += 1
        time.sleep(0.005)
    return writer.check(), polls


def test_the_state_is_encoded_and_written_by_a_child_and_success_is_reported_once(tmp_path):
    path = str(tmp_path / "raft.snapshot")
    pid_file = tmp_path / "encoded-by"
    state = os.urandom(4 * 1024 * 1024)

    def encode() -> bytes:
        pid_file.write_text(str(os.getpid()))
        time.sleep(0.2)  # a slow encoding: the parent must not wait for it
        return state

    writer = SnapshotWriter(path)
    began = time.monotonic()
    writer.start(ANCHOR, encode, path + ".tmp")
    returned_after = time.monotonic() - began
    outcome, polls = wait_outcome(writer)

    assert outcome == SERIALIZER_STATE.SUCCESS and polls > 0
    assert int(pid_file.read_text()) != os.getpid()
    assert returned_after < 0.2, "start waited for the encoding"
    assert read_snapshot(path) == (ANCHOR, state)
    assert not os.path.exists(path + ".tmp") and not os.path.exists(path + ".writing")
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING


def test_a_failed_child_reports_failure_and_keeps_the_previous_snapshot(tmp_path):
    path = str(tmp_path / "raft.snapshot")
    write_snapshot(path, ANCHOR, b"the previous state")

    def encode() -> bytes:
        raise MemoryError("no room to encode")

    writer = SnapshotWriter(path)
    writer.start(ANCHOR, encode, path + ".tmp")
    assert wait_outcome(writer)[0] == SERIALIZER_STATE.FAILED
    assert read_snapshot(path) == (ANCHOR, b"the previous state")
    assert not os.path.exists(path + ".writing")


def test_a_refused_snapshot_is_reported_failed_once_so_pysyncobj_asks_again_later(tmp_path):
    writer = SnapshotWriter(str(tmp_path / "raft.snapshot"))
    writer.refuse()
    assert writer.check() == SERIALIZER_STATE.FAILED
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING
