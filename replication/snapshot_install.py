"""A follower installs a snapshot from its leader only when the snapshot is ahead of what it holds.

Theory of operation. pysyncobj's leader sends a follower its snapshot whenever its next index for
that follower is at or below the first entry of its journal, and pysyncobj's follower loads every
snapshot that arrives whole: it replaces the state machine and empties its journal down to the
snapshot's two anchoring entries. A follower that was behind refuses each append_entries it cannot
match (``next_node_idx`` with ``reset``); a refusal that reaches the leader after the snapshot was
installed puts the leader's next index back below its journal, and the leader sends the same
snapshot again. Loaded over a journal that has grown since, it drops entries the follower
acknowledged, which the leader goes on counting (its match index never goes down), and it puts
the state machine back to the snapshot's index. If the leader then fails before it sends those
entries again, a majority may no longer hold an entry it committed.

The rules here (Raft §7, InstallSnapshot receiver rule 6; etcd's raft does the same):

* A snapshot is installed only if its last entry lies beyond every entry this node has committed
  or applied, and its journal does not hold that entry (the same index and term). Otherwise it is
  declined as soon as its header arrives (``SnapshotReceiver``): nothing is written or loaded, and
  the state, the journal and the member list stay. The entries the follower holds up to the
  snapshot's last are the leader's (Log Matching), so the leader's next append_entries, whose
  previous entry is that last one, finds it matched and the follower acknowledges as usual.
* A message carrying a chunk of a snapshot (or saying that the leader's snapshot is not ready:
  ``serialized`` None, while the leader writes one) vouches for no entry of the follower's
  journal, yet pysyncobj raises the follower's commit index with it to the leader's commit index
  or the end of the journal, whichever is lower: over entries never checked against the leader's
  log. A deposed leader's own entries, never committed, were then applied, and its clients told
  they had succeeded. Here such a message may raise the commit index only as far as the snapshot
  it installed; the entries that follow are committed by the append_entries that checks them.

Both rules matter together: the first trusts the commit index, which the second keeps honest.
"""

from __future__ import annotations

from typing import Callable

from . import seam
from .snapshot_file import SnapshotAnchor, SnapshotReceiver


def install_only_ahead(sync, path: str, before_replace: Callable[[], None]) -> SnapshotReceiver:
    """Make ``sync`` take its leader's snapshots into ``path`` by the rules above (call it before
    the first tick); the receiver it installed."""
    receiver = SnapshotReceiver(path, before_replace, wanted=lambda anchor: is_ahead(sync, anchor))
    seam.replace_snapshot_receiver(sync, receiver.receive)
    _commit_only_what_a_snapshot_installs(sync)
    return receiver


def is_ahead(sync, anchor: SnapshotAnchor) -> bool:
    """Would installing the snapshot ending at ``anchor.last`` take this node forward, without
    dropping entries its journal holds in common with the leader? (tick thread)"""
    _command, index, term = anchor.last
    if index <= max(sync.raftCommitIndex, sync.raftLastApplied):
        return False  # committed here already: the snapshot holds nothing this node lacks
    journal = seam.journal(sync)
    if not len(journal):
        return True
    first, last = journal[0][1], journal[-1][1]
    return not (first <= index <= last and journal[index - first][2] == term)


def _commit_only_what_a_snapshot_installs(sync) -> None:
    """After pysyncobj handled a message carrying a snapshot chunk, its commit index is at most
    what it was before, or the index of the snapshot that message installed."""
    handler = seam.message_handler(sync)

    def on_message(node, message):
        if not (isinstance(message, dict) and message.get("type") == "append_entries"
                and "serialized" in message and "prevLogIdx" not in message):
            handler(node, message)
            return
        before = sync.raftCommitIndex
        handler(node, message)
        # A snapshot installed by this message set the last applied index to its last entry.
        allowed = max(before, sync.raftLastApplied)
        if sync.raftCommitIndex > allowed:
            seam.hold_commit_index(sync, allowed)

    seam.transport(sync).setOnMessageReceivedCallback(on_message)
