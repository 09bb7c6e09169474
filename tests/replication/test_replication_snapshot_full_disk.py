"""A follower whose data volume cannot hold the snapshot its leader sends fails cleanly and catches
up once there is room: nothing partial is left behind or put in place, its own snapshot stays
intact, it keeps running and says so once, and the leader's next attempt succeeds.

Method: real tmpfs volumes (the mount helper of the full-volume hardening test; skipped without
root), filled by a filler file to a chosen number of free bytes. First a ``SnapshotReceiver`` is
fed, twice, the chunks pysyncobj would feed it for a snapshot bigger than the free space, then
once more after the filler is deleted. Then a real three-process cluster: a follower's data
directory is moved onto a tmpfs and the follower started again there, then frozen (SIGSTOP)
while the leader takes enough jobs to compact its journal past it and its volume is filled,
leaving less room than the leader's snapshot needs even if the follower gave back its journal
and its reserve file. Once it is thawed and has refused the snapshot three times, the filler is
deleted; the follower must then hold the leader's state.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal

from hardening.test_hardening_disk_full import fill_up, tmpfs

from beanraft.replication.snapshot_file import (RECEIVING_SUFFIX, SnapshotAnchor,
                                                SnapshotReceiver, read_anchor, read_snapshot,
                                                write_snapshot)
from cluster.cluster_harness import Cluster, LineClient, wait_for

NEW = SnapshotAnchor(last=(b"n", 20, 2), prev=(b"m", 19, 2), cluster=("127.0.0.1:1",))
OLD = SnapshotAnchor(last=(b"o", 10, 1), prev=(b"p", 9, 1), cluster=("127.0.0.1:1",))
CHUNK_BYTES = 64 * 1024
FAILED_STORE = "cannot store the leader's snapshot"


def _chunks(path: str) -> list[tuple[bytes, bool, bool]]:
    """What pysyncobj hands the receiver for the file at ``path``: chunks, then an empty last."""
    data = open(path, "rb").read()
    pieces = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    return [(p, i == 0, False) for i, p in enumerate(pieces)] + [(b"", False, True)]


def _leave_free(volume, room_bytes: int):
    """Fill ``volume`` but for ``room_bytes``; the filler's path."""
    filler = fill_up(volume)
    os.truncate(filler, os.path.getsize(filler) - room_bytes)
    return filler


def _free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_snapshot_that_does_not_fit_leaves_nothing_behind_and_the_next_attempt_stores_it(
        tmp_path, caplog):
    sent = str(tmp_path / "sent")
    state = os.urandom(3 * 1024 * 1024)
    write_snapshot(sent, NEW, state)
    with tmpfs(tmp_path / "data", size_mb=8) as data:
        path = str(data / "raft.snapshot")
        write_snapshot(path, OLD, b"the follower's own state")
        filler = _leave_free(data, 1024 * 1024)
        free_before = _free_bytes(data)
        replaced = []
        receiver = SnapshotReceiver(path, lambda: replaced.append(1))
        with caplog.at_level(logging.DEBUG, logger="beanraft.snapshot"):
            for _attempt in range(2):  # the leader sends it again after a failure
                assert not any(receiver.receive(chunk) for chunk in _chunks(sent))
                assert not os.path.exists(path + RECEIVING_SUFFIX)
                assert _free_bytes(data) == free_before, "the partial file still takes space"
                assert read_snapshot(path) == (OLD, b"the follower's own state")
                assert not replaced
            told = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(told) == 1 and told[0].levelno == logging.ERROR, told  # once, not per try
            assert FAILED_STORE in told[0].getMessage()
            assert "No space left on device" in told[0].getMessage()

            os.unlink(filler)
            assert [receiver.receive(chunk) for chunk in _chunks(sent)][-1] is True
        assert read_snapshot(path) == (NEW, state)
        assert not os.path.exists(path + RECEIVING_SUFFIX)
        assert "after 2 failed attempts" in caplog.text, caplog.text


SNAPSHOT_BYTES = 50_000
BODY = b"s" * 60_000
EARLY_PUTS = 6
PUTS_PER_ROUND = 50  # 3 MB while the follower is frozen, until the leader's snapshot is big
MAX_ROUNDS = 20
ROOM_BYTES = 1024 * 1024  # the follower's free space once it is thawed
VOLUME_MB = 96  # the filler aside, room for the follower's files and the leader's snapshot


def _indexes(text: str, said: str) -> list[int]:
    """The index in each line of a node's log that says ``said`` (followed by an index)."""
    return [int(line.rsplit(said, 1)[1].split()[0]) for line in text.splitlines() if said in line]


def test_a_follower_whose_volume_cannot_hold_the_leader_s_snapshot_catches_up_once_it_can(
        tmp_path):
    cluster = Cluster(tmp_path / "cluster", extra_args=("--snapshot-bytes", str(SNAPSHOT_BYTES)))
    saved = tmp_path / "saved"
    try:
        cluster.start()
        leader = cluster.leader()
        puts = 0
        with LineClient(leader.client_address, timeout_s=30) as client:
            for _ in range(EARLY_PUTS):
                puts += client.put(BODY) > 0
        victim = next(n for n in cluster.nodes if n is not leader)
        victim.stop()
        shutil.copytree(victim.data_dir, saved)
        shutil.rmtree(victim.data_dir)
        with tmpfs(victim.data_dir, size_mb=VOLUME_MB):
            for entry in saved.iterdir():
                shutil.copy2(entry, victim.data_dir / entry.name)
            first_life = len(victim.log_text())
            victim.extra_args = (*victim.extra_args, "-V")  # its attempts after the first, too
            cluster.restart(victim)
            cluster.converged(timeout_s=30)
            # Frozen, the follower falls behind while the leader compacts its journal. Thawed,
            # it may give back what its files hold but its snapshot (a journal rewritten by a
            # snapshot of its own, the reserve file): the leader's snapshot must not fit even so.
            victim.signal(signal.SIGSTOP)
            behind_at = (leader.status() or {})["commit_index"]
            too_big = ROOM_BYTES + 1024 * 1024 + sum(
                f.stat().st_blocks * 512 for f in victim.data_dir.iterdir()
                if f.name not in ("raft.snapshot", "filler"))
            sent = leader.data_dir / "raft.snapshot"
            with LineClient(leader.client_address, timeout_s=30) as client:
                for _round in range(MAX_ROUNDS):
                    for _ in range(PUTS_PER_ROUND):
                        puts += client.put(BODY) > 0
                    if sent.stat().st_size > too_big and read_anchor(str(sent)).last[1] > behind_at:
                        break
            sent_from = read_anchor(str(sent)).last[1]
            assert sent.stat().st_size > too_big and sent_from > behind_at, (too_big, sent_from)
            filler = _leave_free(victim.data_dir, ROOM_BYTES)
            victim.signal(signal.SIGCONT)

            wait_for("the leader to send its snapshot twice more in vain", lambda: victim.log_text(
                )[first_life:].count(FAILED_STORE + " (attempt") >= 2, 60)
            wait_for("the follower to name its leader", lambda: (victim.status() or {}).get(
                "leader") == leader.raft_address, 30, describe=cluster.describe)
            # What is in place is a whole snapshot of the follower's own (the entries that
            # reached it before the freeze may have made it write a newer one), not the leader's.
            anchor, _state = read_snapshot(str(victim.data_dir / "raft.snapshot"))
            assert anchor.last[1] < sent_from, (anchor.last[1], sent_from)

            os.unlink(filler)
            restored = "state restored from snapshot at index "
            wait_for("the follower to restore the leader's snapshot", lambda: max(_indexes(
                victim.log_text()[first_life:], restored), default=0) >= sent_from, 60)
            docs = cluster.converged(timeout_s=60)
            assert len({d["digest"] for d in docs.values()}) == 1, docs
            with LineClient(victim.client_address, timeout_s=30) as client:
                assert client.yaml(b"stats")["current-jobs-ready"] == str(puts)
            # Until it was stored: one line, however often the leader sent it. (The leader may
            # send it once more, from a request the follower made before: a run of its own.)
            log = victim.log_text()[first_life:]
            log = log[:log.index("stored after ")]
            told = [line for line in log.splitlines() if FAILED_STORE in line
                    and (" ERROR " in line or " WARNING " in line)]
            assert len(told) == 1 and "No space left on device" in told[0], told
            assert log.count(FAILED_STORE + " (attempt") >= 2, log
            assert not (victim.data_dir / ("raft.snapshot" + RECEIVING_SUFFIX)).exists()
            cluster.stop()
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        for node in cluster.nodes:
            if node.running:
                node.signal(signal.SIGCONT)
        cluster.stop()
