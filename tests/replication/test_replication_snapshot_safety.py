"""Snapshots on disk stay loadable and current: a snapshot the leader sends is durable before it
replaces anything, an older snapshot still being written cannot land on it, a failed fork does
not stop snapshots for good, and a node does not start on a damaged snapshot.

Method: real files in a temporary directory. The receiver is fed the chunks pysyncobj would
feed it while ``os.fsync`` and ``os.replace`` are watched (they still run), and the bytes its
thread reads are counted by Linux (``/proc/thread-self/io``): it checks a snapshot as it
writes it, and that check must agree with ``verify_snapshot`` on every damage and chunking.
The writer forks a real child that is slowed down on purpose. One real RaftNode on the running loop
(``lone_node.Harness``) is made to snapshot with a small entry threshold; ``os.fork`` fails
once; a snapshot file is damaged between two starts of a node.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

import pytest
from lone_node import Harness

from beanraft.replication.raft import RaftConfig, RaftNode
from beanraft.replication.snapshot_file import (DamagedSnapshot, SnapshotAnchor, SnapshotCheck,
                                                SnapshotError, SnapshotReceiver, read_snapshot,
                                                verify_snapshot, write_snapshot)
from beanraft.replication.snapshot_writer import SnapshotWriter
from pysyncobj.config import SERIALIZER_STATE

NEW = SnapshotAnchor(last=(b"n", 20, 2), prev=(b"m", 19, 2), cluster=("127.0.0.1:1",))
OLD = SnapshotAnchor(last=(b"o", 10, 1), prev=(b"p", 9, 1), cluster=("127.0.0.1:1",))


def _chunks(path: str, size: int = 100) -> list[tuple[bytes, bool, bool]]:
    """What pysyncobj hands the receiver for the file at ``path``: chunks, then an empty last."""
    data = open(path, "rb").read()
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return [(p, i == 0, False) for i, p in enumerate(pieces)] + [(b"", False, True)]


def test_a_received_snapshot_is_fsynced_before_its_rename_and_the_directory_after(
        tmp_path, monkeypatch):
    sent = tmp_path / "sent"
    write_snapshot(str(sent), NEW, b"state" * 1000)
    path = str(tmp_path / "raft.snapshot")
    write_snapshot(path, OLD, b"old")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    receiver = SnapshotReceiver(path, lambda: events.append("before replace"))
    results = [receiver.receive(chunk) for chunk in _chunks(str(sent))]
    assert results[-1] is True and not any(results[:-1])
    assert events == ["fsync file", "before replace", "replace", "fsync dir"], events
    assert read_snapshot(path)[0] == NEW
    assert not os.path.exists(path + ".1.tmp")


def test_a_damaged_transmission_never_replaces_the_snapshot_in_place(tmp_path):
    sent = tmp_path / "sent"
    write_snapshot(str(sent), NEW, b"state" * 1000)
    data = bytearray(sent.read_bytes())
    data[len(data) // 2] ^= 1
    sent.write_bytes(bytes(data))
    path = str(tmp_path / "raft.snapshot")
    write_snapshot(path, OLD, b"old")
    replaced = []
    receiver = SnapshotReceiver(path, lambda: replaced.append(1))
    assert not any(receiver.receive(chunk) for chunk in _chunks(str(sent)))
    assert read_snapshot(path) == (OLD, b"old") and not replaced


def _bytes_read_by_this_thread() -> int:
    with open("/proc/thread-self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def test_a_received_snapshot_is_checked_as_it_is_written_not_read_back(tmp_path):
    if not os.path.exists("/proc/thread-self/io"):
        pytest.skip("this kernel does not count a thread's reads")
    sent = tmp_path / "sent"
    state = os.urandom(4 * 1024 * 1024)
    write_snapshot(str(sent), NEW, state)
    chunks = _chunks(str(sent), size=64 * 1024)
    path = str(tmp_path / "raft.snapshot")
    receiver = SnapshotReceiver(path, lambda: None)
    before = _bytes_read_by_this_thread()
    results = [receiver.receive(chunk) for chunk in chunks]
    read = _bytes_read_by_this_thread() - before
    assert results[-1] is True
    assert read < len(state) // 4, f"the receiver read {read} bytes back"
    assert read_snapshot(path) == (NEW, state)


def _damaged(data: bytes, damage: str) -> bytes:
    where = {"magic": 1, "header length": 5, "header": 12, "state": len(data) // 2,
             "checksum": len(data) - 2}
    if damage in where:
        out = bytearray(data)
        out[where[damage]] ^= 0x10
        return bytes(out)
    return {"none": data, "cut": data[:-7], "cut to the header": data[:20], "longer": data + b"x",
            "tiny": data[:3], "empty": b""}[damage]


@pytest.mark.parametrize("damage", ["none", "magic", "header length", "header", "state",
                                    "checksum", "cut", "cut to the header", "longer", "tiny",
                                    "empty"])
def test_the_check_while_receiving_agrees_with_verify_snapshot_for_any_chunking(tmp_path, damage):
    whole = tmp_path / "whole"
    write_snapshot(str(whole), NEW, bytes(range(256)) * 40)
    data = _damaged(whole.read_bytes(), damage)
    whole.write_bytes(data)
    try:
        expected: object = verify_snapshot(str(whole))
    except SnapshotError as exc:
        expected = SnapshotError
        assert damage != "none", exc
    for size in (1, 2, 3, 4, 5, 7, 64, 1000, len(data) or 1):
        check = SnapshotCheck(str(whole))
        for i in range(0, len(data), size):
            check.feed(data[i:i + size])
        try:
            got: object = check.finish()
        except SnapshotError:
            got = SnapshotError
        assert got == expected, (damage, size)
    assert expected == (NEW if damage == "none" else SnapshotError)


def test_a_receiver_that_missed_the_first_chunk_waits_for_the_next_transmission(tmp_path):
    sent = tmp_path / "sent"
    write_snapshot(str(sent), NEW, b"state" * 1000)
    path = str(tmp_path / "raft.snapshot")
    receiver = SnapshotReceiver(path, lambda: None)
    chunks = _chunks(str(sent))
    assert not any(receiver.receive(chunk) for chunk in chunks[1:])  # no first chunk: ignored
    assert not os.path.exists(path)
    assert [receiver.receive(chunk) for chunk in chunks][-1] is True


def test_an_older_snapshot_still_being_written_never_lands_on_the_one_the_leader_sent(tmp_path):
    path = str(tmp_path / "raft.snapshot")
    writer = SnapshotWriter(path)

    def slow_encode() -> bytes:  # runs in the forked child
        time.sleep(1.5)
        return b"older state"

    writer.start(OLD, slow_encode, str(tmp_path / "raft.snapshot.tmp"))
    assert writer.check() == SERIALIZER_STATE.SERIALIZING
    sent = tmp_path / "sent"
    write_snapshot(str(sent), NEW, b"newer state")
    receiver = SnapshotReceiver(path, writer.abandon)
    assert [receiver.receive(chunk) for chunk in _chunks(str(sent))][-1] is True
    time.sleep(2.0)  # past the moment the child would have renamed its older snapshot
    assert read_snapshot(path) == (NEW, b"newer state")
    assert not os.path.exists(path + ".writing")
    assert writer.check() == SERIALIZER_STATE.FAILED  # pysyncobj asks for snapshots again
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING


def _snapshot_index(directory: str) -> int:
    path = os.path.join(directory, "raft.snapshot")
    return read_snapshot(path)[0].last[1] if os.path.exists(path) else 0


async def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def test_a_failed_fork_is_a_failed_snapshot_and_the_next_one_is_written(tmp_path, monkeypatch):
    data_dir = str(tmp_path / "data")
    real_fork, failures = os.fork, []

    def fork():
        if not failures:
            failures.append(1)
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_fork()

    async def scenario():
        async with Harness(data_dir, compact_entries=20) as node:
            monkeypatch.setattr(os, "fork", fork)
            await node.put(30)
            assert await _until(lambda: failures, 10), "no snapshot was asked for"
            for _ in range(20):  # pysyncobj asks again once it has seen the failure
                await node.put(25)
                if _snapshot_index(data_dir):
                    break
            assert await _until(lambda: _snapshot_index(data_dir) > 0, 10)

    asyncio.run(scenario())


@pytest.mark.parametrize("damage", ["flip", "cut", "empty"])
def test_a_node_does_not_start_on_a_damaged_snapshot(tmp_path, damage):
    data_dir = str(tmp_path / "data")

    async def fill():
        async with Harness(data_dir, compact_entries=20) as node:
            await node.put(60)
            assert await _until(lambda: _snapshot_index(data_dir) > 0, 10)

    asyncio.run(fill())
    path = os.path.join(data_dir, "raft.snapshot")
    data = bytearray(open(path, "rb").read())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "cut":
        del data[-10:]
    else:
        data.clear()
    open(path, "wb").write(bytes(data))

    async def start():
        node = RaftNode(RaftConfig(self_addr="127.0.0.1:1", data_dir=data_dir),
                        asyncio.get_running_loop(), lambda events: None)
        node.stop()

    with pytest.raises(DamagedSnapshot, match="this node cannot start on it"):
        asyncio.run(start())


def test_a_start_removes_what_interrupted_writes_left_in_the_data_directory(tmp_path):
    data_dir = str(tmp_path / "data")

    async def fill():
        async with Harness(data_dir, compact_entries=20) as node:
            await node.put(30)

    asyncio.run(fill())
    stale = ["raft.journal.tmp", "raft.snapshot.writing", "raft.snapshot.1.tmp",
             "raft.snapshot.tmp", "members.json.tmp"]
    for name in stale:
        with open(os.path.join(data_dir, name), "wb") as f:
            f.write(b"x" * 4096)
    asyncio.run(fill())  # a second start
    assert not [name for name in stale if os.path.exists(os.path.join(data_dir, name))]
