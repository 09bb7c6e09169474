"""When a node takes a snapshot, and how pysyncobj writes and loads one.

Theory of operation. pysyncobj compacts its log when its journal holds more than
``compact_entries`` entries (its time trigger is set out of reach) and when told to
(``forceLogCompaction``): it hands ``_serialize`` the anchor of the last applied entry, and loads a
snapshot, its own at start or one its leader sent, through ``_deserialize``.

* When (``_compact_when_due``, after every tick). A node asks when its journal crosses a
  threshold, and again each time the journal grows by another threshold: the journal only
  shrinks once the snapshot is written, and what a snapshot cannot drop (its anchor, often the
  big job just applied) may alone exceed the threshold. A leader of a cluster waits for a larger
  journal than its followers do, so the nodes rarely snapshot (fork, and share the CPUs with the
  writer) at the same moment. A big state waits for a journal of a share of its size
  (``SNAPSHOT_GROWTH``), so snapshots write a bounded multiple of the commands' bytes. While the
  data volume is tight (``disk.py``) a snapshot is taken to reclaim journal space, and the
  journal drops the prefix the snapshot covers as soon as there is room to rewrite it.
* Writing: our own codec (``jobs`` snapshot bytes inside ``snapshot_file``), never pickle, in a
  forked child (``snapshot_writer.py``): the tick thread only forks, after checking there is
  room for the snapshot's estimate.
* Loading: the state is restored whole, then swapped in under the node's lock. The member list
  comes from the members file at start (never older than our own snapshot) and from the
  snapshot when a leader sent it.

Everything here runs on the tick thread, the only one that changes the state machine.
"""

from __future__ import annotations

import logging
import os

from beanraft.jobs.machine import Machine
from beanraft.jobs.snapshot import NewerRules

from .config import SNAPSHOT_GROWTH
from .disk import snapshot_estimate
from .rules import stop_for_newer_rules
from .snapshot_file import (DamagedSnapshot, SnapshotAnchor, SnapshotError, read_snapshot,
                            verify_snapshot)
from .snapshot_writer import SnapshotWriter

log = logging.getLogger("beanraft.raft")


class Snapshots:
    """A node's snapshots (a mixin of RaftNode: it uses the node's attributes)."""

    def _open_snapshots(self, path: str) -> None:
        """At start, before pysyncobj is built: the writer of our snapshots at ``path``, and
        the check of the one found there, which pysyncobj loads on its first tick (any later
        one was sent by a leader)."""
        self._snapshots = SnapshotWriter(path)
        self._own_snapshot = os.path.isfile(path)
        if self._own_snapshot:
            # pysyncobj would log a snapshot it cannot load and run on without it: with the
            # journal emptied down to the snapshot's anchor, such a node applies nothing, ever.
            try:
                verify_snapshot(path)
            except SnapshotError as exc:
                raise DamagedSnapshot(
                    f"{exc}: this node cannot start on it. Restore it from a backup (beanraft "
                    f"restore), or in a cluster move -b aside and add the node again (the "
                    f"leader sends it a snapshot)") from exc

    def _compact_when_due(self) -> None:
        """After a tick: ask pysyncobj for a snapshot when the journal has grown enough, or
        when the data volume is tight; drop the journal's stale prefix when there is room."""
        journal = self._journal
        base, share = self.config.compact_bytes, SNAPSHOT_GROWTH
        if not self._single and self._status.role == "leader":
            base, share = base * 4, share * 1.5
        limit = max(base, int(snapshot_estimate(self.machine) * share))
        size = journal.size_bytes
        if size <= limit:
            self._compaction_asked_at = None
        elif self._status.role != "candidate" and (
                self._compaction_asked_at is None or size - self._compaction_asked_at > limit):
            self._sync.forceLogCompaction()
            self._compaction_asked_at = size
        if self._disk.check(self.machine, journal.size_bytes) and self._status.role != "candidate":
            log.info("data volume tight: writing a snapshot to reclaim journal space")
            self._sync.forceLogCompaction()
        journal.tight = self._disk.tight
        if self._disk.tight and self._disk.room_to_rewrite(journal.stale_prefix_bytes,
                                                           journal.size_bytes):
            log.info("data volume tight: dropping %d bytes the snapshot covers from the journal",
                     journal.stale_prefix_bytes)
            journal.drop_stale_prefix()

    def _serialize(self, filename: str, data) -> None:
        """Start writing a snapshot of the state at the last applied entry (in a child)."""
        last, prev, cluster = data
        anchor = SnapshotAnchor(last=tuple(last), prev=tuple(prev),
                                cluster=tuple(sorted(str(n) for n in cluster)))
        try:
            # O(1) estimate: the parent does not encode the state (the child does).
            self._disk.check_room(snapshot_estimate(self.machine))
        except OSError as exc:
            log.warning("snapshot not written: %s", exc)
            self._snapshots.refuse()
            return
        # We run on the tick thread, the only one that changes the machine: the fork freezes it
        # at the last applied entry, which is what the anchor names.
        self._snapshots.start(anchor, self.machine.snapshot, filename)

    def _deserialize(self, filename: str):
        own, self._own_snapshot = self._own_snapshot, False
        anchor, state = read_snapshot(filename)
        try:
            machine = Machine.restore(state)
        except NewerRules as exc:
            stop_for_newer_rules(f"the snapshot at index {anchor.last[1]} follows rules version "
                                 f"{exc.rules}")
        with self.lock:
            self.machine = machine
            self.applied_index = anchor.last[1]
        log.info("state restored from snapshot at index %d", anchor.last[1])
        self._post(("notify", None))
        cluster = set(anchor.cluster)
        if own:
            # At start the members file (or, in a data directory without one, the --peer seed)
            # decides: it is never older than our own snapshot (pysyncobj issue #133). A
            # snapshot the leader sends later carries the leader's list, and that one counts.
            cluster = set(self._peers) | {self.config.self_addr}
        else:
            self.members.standing.snapshot_lists(cluster)
        # pysyncobj leaves out its own node by comparing Node objects: leave our address out.
        return anchor.last, anchor.prev, {c for c in cluster if c != self.config.self_addr}
