"""Snapshots are encoded and written by a forked child, so the Raft thread never does that work,
and pysyncobj hears of the outcome only once the snapshot is durable under its final name.

Method: a real ``SnapshotWriter`` forks real children. The state's encoder records the process
that runs it; the checker is polled as pysyncobj polls it; the file is read back with the
reader the node uses at start. A failing encoder and a refused start must report FAILED once and
leave the previous snapshot and no partial file behind. A child abandoned while its death cannot
be collected yet must not hold up the caller (the Raft thread): the child is ptrace-attached
by a helper process before it is killed, and Linux shows a traced child's death to its tracer
alone until the tracer lets go, so ``waitpid`` in the real parent blocks or finds nothing
until then, as it would for a child stuck in uninterruptible sleep on a slow disk.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

import pytest
from pysyncobj.config import SERIALIZER_STATE

from beanraft.replication.snapshot_file import SnapshotAnchor, read_snapshot, write_snapshot
from beanraft.replication.snapshot_writer import WRITING_SUFFIX, SnapshotWriter

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


# Attaches to the pid in argv[1] without stopping it (PTRACE_SEIZE), says so, and lets go when a
# line arrives on stdin or after argv[2] seconds, whichever comes first, by exiting.
TRACER = r"""
import ctypes, select, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(0x4206, int(sys.argv[1]), None, None) != 0:
    print("errno", ctypes.get_errno(), flush=True)
    sys.exit(1)
print("attached", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))
"""
TRACER_HOLDS_S = 15.0  # the tracer's own bound: a blocking abandon() returns only after it
_PR_SET_PTRACER, _PR_SET_PTRACER_ANY = 0x59616D61, ctypes.c_ulong(2 ** 64 - 1)


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_abandoning_a_child_whose_death_cannot_be_collected_yet_does_not_wait_for_it(tmp_path):
    path = str(tmp_path / "raft.snapshot")
    write_snapshot(path, ANCHOR, b"the leader's state")
    started = tmp_path / "child"

    def encode() -> bytes:  # runs in the forked child, and is still running when abandoned
        # With Yama's ptrace_scope 1 only an ancestor may attach; let the helper in.
        ctypes.CDLL(None).prctl(_PR_SET_PTRACER, _PR_SET_PTRACER_ANY, 0, 0, 0)
        with open(path + WRITING_SUFFIX, "wb") as partial:  # as a real child has begun to
            partial.write(b"part of an older snapshot")
        started.write_text(str(os.getpid()))
        time.sleep(60)
        return b"never written"

    writer = SnapshotWriter(path)
    writer.start(ANCHOR, encode, path + ".tmp")
    for _poll in range(2000):
        if started.exists() and started.read_text():
            break
        time.sleep(0.005)
    pid = int(started.read_text())
    tracer = subprocess.Popen([sys.executable, "-c", TRACER, str(pid), str(TRACER_HOLDS_S)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        said = tracer.stdout.readline().strip()
        if said != "attached":
            writer.stop(timeout_s=0)
            pytest.skip(f"this system does not let a process ptrace another ({said})")

        writer.abandon()
        # A blocking wait in abandon() returns only once the tracer has let go of the child.
        assert tracer.poll() is None, "abandon() waited until the child could be reaped"
        assert writer.check() == SERIALIZER_STATE.SERIALIZING  # killed, not collected yet
        assert not os.path.exists(path + WRITING_SUFFIX)
        for _poll in range(2000):  # the kill has landed: a zombie only its tracer sees
            if _process_state(pid) == "Z":
                break
            time.sleep(0.005)
        assert _process_state(pid) == "Z"
        assert writer.check() == SERIALIZER_STATE.SERIALIZING
    finally:
        tracer.stdin.close()  # the tracer lets go: the child's death reaches its real parent
        tracer.wait(timeout=30)
        tracer.stdout.close()

    outcome, _polls = wait_outcome(writer)
    assert outcome == SERIALIZER_STATE.FAILED  # pysyncobj asks for a snapshot again after it
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING
    assert _process_state(pid) is None, "the abandoned child was left a zombie"
    assert read_snapshot(path) == (ANCHOR, b"the leader's state")
    assert not os.path.exists(path + WRITING_SUFFIX)
