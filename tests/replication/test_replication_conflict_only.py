"""A follower deletes log entries only where the leader's log differs from its own.

Method: three pysyncobj nodes ticked by hand on loopback ports replicate ten entries. Then one
follower is handed an append_entries from its leader that arrives late: its entries are ones the
follower already holds, and its log goes further. Upstream pysyncobj deletes everything after
the message's last entry (it logs CRITICAL "truncating already-applied log entries") while the
leader still counts the follower for those entries. With BeanRaft's ``truncate_only_on_conflict``
the follower keeps its log, acknowledges what the message vouched for, still replaces entries
whose term differs and still adds new ones.
"""

from __future__ import annotations

from hand_ticked import Replicated

from beanraft.replication import seam

TRUNCATING = "truncating already-applied log entries"


def _late(cluster: Replicated) -> tuple[list, int]:
    """The late message: prev six entries before the follower's last, two entries it holds."""
    log = cluster.log(cluster.leader)
    last = log[-1][1]
    prev = last - 6
    held = [entry for entry in log if prev < entry[1] <= prev + 2]
    return held, prev


def test_upstream_a_late_append_cuts_acknowledged_entries_the_leader_still_counts():
    with Replicated(harden=False) as cluster:
        before = cluster.log(cluster.follower)
        entries, prev = _late(cluster)
        cluster.deliver(prev, entries)
        after = cluster.log(cluster.follower)
        assert after == before[:len(before) - 4]  # the last four entries are gone
        assert any(TRUNCATING in m for m in cluster.critical.messages)
        # The leader goes on counting the follower for the four entries it no longer holds.
        assert cluster.match_index_of_follower() == before[-1][1]


def test_beanraft_keeps_the_log_and_acknowledges_what_the_late_append_vouched_for():
    with Replicated(harden=True) as cluster:
        before = cluster.log(cluster.follower)
        applied = cluster.follower.raftLastApplied
        entries, prev = _late(cluster)
        cluster.deliver(prev, entries)
        assert cluster.log(cluster.follower) == before
        assert cluster.critical.messages == []
        assert cluster.sent == [{"type": "next_node_idx", "next_node_idx": prev + 3,
                                 "reset": False, "success": True}]
        assert cluster.follower.raftLastApplied == applied
        assert seam.leader_node(cluster.follower) is not None  # the leader was heard
        # An empty late heartbeat is kept from cutting the log as well.
        cluster.deliver(prev, [])
        assert cluster.log(cluster.follower) == before and cluster.critical.messages == []
        assert cluster.sent[-1]["next_node_idx"] == prev + 1


def test_beanraft_still_replaces_entries_whose_term_differs_and_adds_new_ones():
    with Replicated(harden=True) as cluster:
        before = cluster.log(cluster.follower)
        last, term = before[-1][1], before[-1][2]
        # Entries it holds, then one more: only the new one is added, nothing is cut.
        extra = (before[-1][0], last + 1, term)
        cluster.deliver(last - 3, [*before[-3:], extra])
        assert cluster.log(cluster.follower) == [*before, extra]
        assert cluster.critical.messages == []
        assert cluster.sent[-1]["next_node_idx"] == last + 2
        # An entry whose term differs replaces the follower's from there on (Raft 5.3).
        other = (before[-1][0], last, term + 1)
        cluster.deliver(last - 1, [other])
        assert cluster.log(cluster.follower) == [*before[:-1], other]
        assert any(TRUNCATING in m for m in cluster.critical.messages)  # it had applied it
