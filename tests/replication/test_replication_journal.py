"""The durable journal keeps what it acknowledged and notices what a crash tore.

Method: real files in tmp_path, reopened the way a restarted node opens them; damage is made by
hand (truncating, flipping bytes) and the loader's answer is checked entry by entry.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest

from beanraft.replication.journal import MAGIC, DurableJournal, JournalWriteError
from beanraft.replication.snapshot_file import SnapshotAnchor, write_snapshot


@pytest.fixture(autouse=True)
def _journals_closed():
    """Every journal a test opens is closed after it (most are dropped without ``_destroy``,
    and a journal's descriptors outlive the object). A patch of its own: a test's
    ``monkeypatch.undo()`` leaves it in place."""
    opened: list[DurableJournal] = []
    init = DurableJournal.__init__

    def tracked_init(self, *args, **kwargs):
        opened.append(self)
        init(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DurableJournal, "__init__", tracked_init)
        yield
    for journal in opened:
        try:
            journal._close_files()
        except AttributeError:
            pass  # its __init__ raised before it opened anything


def entries(count: int, start: int = 1, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(b"cmd-%d" % i, i, term) for i in range(start, start + count)]


def fill(path, items) -> DurableJournal:
    journal = DurableJournal(str(path))
    for entry in items:
        journal.add(*entry)
    journal.sync()
    return journal


def data_end(path) -> int:
    """Where the records end (the rest of the file is reserved space full of zeros)."""
    data = open(path, "rb").read()
    return len(data.rstrip(b"\0"))


def test_entries_survive_reopening(tmp_path):
    path = tmp_path / "j"
    fill(path, entries(50))._destroy()
    again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == entries(50)


def test_reserved_space_is_not_reported_as_damage(tmp_path, caplog):
    path = tmp_path / "j"
    fill(path, entries(3))._destroy()
    assert os.path.getsize(path) > data_end(path)  # space is reserved ahead
    with caplog.at_level(logging.WARNING):
        DurableJournal(str(path))
    assert "torn" not in caplog.text


def test_a_torn_last_record_is_dropped_and_logged(tmp_path, caplog):
    path = tmp_path / "j"
    fill(path, entries(10))._destroy()
    end = data_end(path)
    with open(path, "r+b") as f:
        f.truncate(end - 3)  # the crash cut the last record short
    with caplog.at_level(logging.WARNING):
        again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == entries(9)
    assert "torn or damaged tail" in caplog.text


def test_a_damaged_record_ends_the_journal_there(tmp_path):
    path = tmp_path / "j"
    fill(path, entries(10))._destroy()
    data = bytearray(open(path, "rb").read())
    damaged_at = data.find(b"cmd-6")
    data[damaged_at] ^= 0xFF
    open(path, "wb").write(bytes(data))
    again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == entries(5)
    again.add(b"cmd-6b", 6, 2)  # and it appends cleanly after the cut
    again._destroy()
    third = DurableJournal(str(path))
    assert third[5] == (b"cmd-6b", 6, 2)


def test_truncating_the_tail_removes_entries_on_disk(tmp_path):
    path = tmp_path / "j"
    journal = fill(path, entries(10))
    journal.deleteEntriesFrom(4)
    journal.add(b"other", 5, 2)
    journal._destroy()
    again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == entries(4) + [(b"other", 5, 2)]


def test_dropping_a_prefix_rewrites_the_file(tmp_path):
    path = tmp_path / "j"
    journal = fill(path, entries(10))
    journal.deleteEntriesTo(7)
    journal._destroy()
    again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == entries(3, start=8)


def test_a_big_kept_entry_stays_in_place_until_the_dropped_prefix_outweighs_it(tmp_path):
    from beanraft.replication.journal import REWRITE_KEEP_BYTES

    path = tmp_path / "j"
    big = (b"\x01" + os.urandom(REWRITE_KEEP_BYTES)), 5, 1
    journal = fill(path, entries(4) + [big])
    journal.deleteEntriesTo(4)  # keeps only the big entry, the prefix is small: not copied
    assert [journal[i] for i in range(len(journal))] == [big]
    assert data_end(path) > len(MAGIC) + len(big[0]) + 4 * 10  # the prefix is still on disk
    for index in range(6, 8):
        journal.add(b"\x01" + os.urandom(REWRITE_KEEP_BYTES), index, 1)
    journal.sync()
    journal.deleteEntriesTo(2)  # drops two big entries, keeps one: now the file is rewritten
    assert [journal[i][1] for i in range(len(journal))] == [7]
    assert data_end(path) < len(MAGIC) + 2 * REWRITE_KEEP_BYTES
    journal.add(b"after", 8, 1)
    journal._destroy()
    again = DurableJournal(str(path))
    assert [again[i][1] for i in range(len(again))] == [7, 8]


def test_a_failed_rewrite_keeps_every_entry_in_the_file_and_drops_them_in_memory(
        tmp_path, monkeypatch):
    """The file is left whole (the prefix goes at the next load or once there is room), but the
    journal pysyncobj reads starts at the snapshot's anchor: one that did not would be taken for
    a stale journal and cleared, every entry after the snapshot with it (an acknowledged put
    lost after a restart on a full volume: tests/hardening/test_hardening_disk_full.py)."""
    path = tmp_path / "j"
    items = entries(10)
    journal = fill(path, items)

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    journal.deleteEntriesTo(7)
    monkeypatch.undo()
    assert len(journal) == 3 and journal[0] == items[7]
    assert journal.stale_prefix_bytes > 0
    journal._destroy()
    assert len(DurableJournal(str(path))) == 10


def test_a_rewrite_whose_directory_fsync_fails_after_the_rename_writes_on_in_the_new_file(
        tmp_path, monkeypatch):
    """Once the copy is renamed into place, the old file has no name: a record appended to it
    would be gone at the next load. The journal goes on in the file under the name, and, the
    disk having failed an fsync, acknowledges nothing more."""
    from beanraft.replication import journal as journal_module

    path = tmp_path / "j"
    items = entries(10)
    journal = fill(path, items)
    calls = []

    def fails_after_the_rename(directory):
        calls.append(directory)
        if len(calls) == 2:  # the first makes the snapshot durable, the second the rename
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal_module, "fsync_dir", fails_after_the_rename)
    journal.deleteEntriesTo(7)
    assert len(calls) == 2 and len(journal) == 3 and journal[0] == items[7]
    accepted = []
    try:
        journal.add(b"after", 11, 1)
        accepted.append(11)
        journal.sync()
    except JournalWriteError:
        pass
    assert journal.failed is not None
    again = DurableJournal(str(path))
    assert [again[i][1] for i in range(len(again))] == [8, 9, 10] + accepted


def test_a_cut_the_file_system_refuses_stops_the_journal(tmp_path, monkeypatch):
    """The records past the cut stay in the file: one appended behind them would load after
    entries with the same indices."""
    journal = fill(tmp_path / "j", entries(5))
    journal.deleteEntriesFrom(3)  # lazy: the cut happens at the next differing entry

    def refused(_fd, _length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", refused)
    with pytest.raises(JournalWriteError):
        journal.add(b"other", 4, 2)
    monkeypatch.undo()
    assert journal.failed is not None
    with pytest.raises(JournalWriteError):
        journal.add(b"other", 4, 2)
    with pytest.raises(JournalWriteError):
        journal.sync_for_ack()


def test_entries_older_than_the_snapshot_on_disk_are_dropped_at_load(tmp_path):
    path, snapshot = tmp_path / "j", tmp_path / "snap"
    fill(path, entries(20))._destroy()
    items = entries(20)
    write_snapshot(str(snapshot), SnapshotAnchor(last=items[11], prev=items[10], cluster=()), b"s")
    again = DurableJournal(str(path), str(snapshot))
    assert again[0] == items[10] and again[1] == items[11] and len(again) == 10


def test_term_and_vote_are_stored_durably_and_reloaded(tmp_path):
    path = tmp_path / "j"
    journal = DurableJournal(str(path))
    journal.setCurrentTerm(7, "127.0.0.1:20001")
    journal.setRaftCommitIndex(5)
    journal._destroy()
    again = DurableJournal(str(path))
    assert (again.getCurrentTerm(), again.getVotedForNodeId(), again.getRaftCommitIndex()) == (
        7, "127.0.0.1:20001", 5)


def test_a_file_that_is_not_a_journal_is_refused_and_nothing_stays_open(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b"hello world, not a journal")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(JournalWriteError):
            DurableJournal(str(path))
    assert len(os.listdir("/proc/self/fd")) == before  # neither the journal nor its vote file


def test_sync_policies_decide_when_fsync_runs(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    journal = DurableJournal(str(tmp_path / "j"))
    journal.policy.mode = "never"
    journal.add(b"a", 1, 1)
    journal.sync_for_ack()
    assert calls == []
    journal.policy.mode = "always"
    journal.sync_for_ack()
    assert len(calls) == 1
    journal.sync_for_ack()  # nothing new written: nothing to sync
    assert len(calls) == 1


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_after_a_failed_fsync_the_journal_refuses_every_sync_and_write_and_still_closes(
        tmp_path, monkeypatch, policy):
    """The fsync after a failed one succeeds on Linux over pages that were lost: the journal
    must not take that success for durability, under any policy."""
    real = os.fdatasync
    outcomes = [OSError(errno.EIO, "Input/output error")]

    def fdatasync(fd):
        if outcomes:
            raise outcomes.pop()
        real(fd)

    journal = DurableJournal(str(tmp_path / "j"))
    journal.add(b"a", 1, 1)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(JournalWriteError):
        journal.sync()
    assert journal.failed is not None and not outcomes
    journal.policy.mode = policy
    for step in (journal.sync, journal.sync_for_ack, journal.flush,
                 lambda: journal.add(b"b", 2, 1)):
        with pytest.raises(JournalWriteError):
            step()
    fd = journal._fd
    journal._destroy()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_the_journal_starts_with_its_magic(tmp_path):
    path = tmp_path / "j"
    DurableJournal(str(path))._destroy()
    assert open(path, "rb").read(len(MAGIC)) == MAGIC


def test_entries_dropped_and_added_again_unchanged_never_leave_the_disk(tmp_path, monkeypatch):
    path = tmp_path / "j"
    journal = fill(path, entries(10))
    truncations = []
    real = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: (truncations.append(size), real(fd, size)))
    journal.deleteEntriesFrom(4)  # a follower told to replace entries 5..10 ...
    for entry in entries(6, start=5):  # ... by the same entries
        journal.add(*entry)
    assert truncations == []
    assert [journal[i] for i in range(len(journal))] == entries(10)


def test_a_differing_entry_after_a_drop_truncates_there(tmp_path):
    path = tmp_path / "j"
    journal = fill(path, entries(10))
    journal.deleteEntriesFrom(4)
    journal.add(*entries(1, start=5)[0])  # entry 5 unchanged
    journal.add(b"new", 6, 2)  # entry 6 differs: 6..10 go
    assert [journal[i] for i in range(len(journal))] == entries(5) + [(b"new", 6, 2)]
    journal._destroy()
    again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == entries(5) + [(b"new", 6, 2)]


def test_a_drop_with_nothing_added_again_is_carried_out_before_any_read(tmp_path):
    journal = fill(tmp_path / "j", entries(10))
    journal.deleteEntriesFrom(4)
    assert len(journal) == 4 and journal[-1] == entries(4)[-1]


def test_a_prefix_kept_on_disk_after_a_big_compaction_is_dropped_when_asked(tmp_path):
    path = tmp_path / "j"
    big = [(bytes([i]) * (1 << 20), i, 1) for i in range(1, 9)]  # 8 MiB of 1 MiB entries
    journal = fill(path, big)
    journal.deleteEntriesTo(2)  # 6 MiB remain: more than a compaction copies on the Raft thread
    assert journal.stale_prefix_bytes > 2 << 20, "the prefix should still be on disk"
    before = data_end(path)
    assert journal.drop_stale_prefix()
    assert journal.stale_prefix_bytes == 0
    assert data_end(path) <= before - (2 << 20)
    journal._destroy()
    again = DurableJournal(str(path))
    assert [again[i] for i in range(len(again))] == big[2:]
