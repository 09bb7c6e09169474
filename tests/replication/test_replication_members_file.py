"""Goal: the members file decides a restarted node's peers, and a node told of its removal stays
out of the cluster after a restart (it keeps every other member as a peer, not itself alone).

Method: real files in a temporary directory, written and read by the functions the node uses.
"""

from __future__ import annotations

from beanraft.replication.membership import (load_members, save_members, start_peers,
                                             was_removed)

A, B, C = "127.0.0.1:21301", "127.0.0.1:21302", "127.0.0.1:21303"


def test_a_member_restarts_with_the_other_members_as_peers_whatever_its_seed(tmp_path):
    save_members(str(tmp_path), [C, A, B])
    assert load_members(str(tmp_path)) == [A, B, C]
    assert not was_removed(str(tmp_path))
    assert start_peers(str(tmp_path), A, ["127.0.0.1:1"]) == ([B, C], True)


def test_a_removed_node_keeps_the_members_as_peers_even_when_one_is_left(tmp_path):
    # A two-node cluster lost B: B's file names A alone. Read as an ordinary file of one member
    # it would make B a single-node cluster of its own, elected by itself.
    save_members(str(tmp_path), [A], removed=True)
    assert was_removed(str(tmp_path))
    assert load_members(str(tmp_path)) == [A]
    assert start_peers(str(tmp_path), B, []) == ([A], True)


def test_a_new_node_has_no_members_file_and_takes_its_seed(tmp_path):
    assert load_members(str(tmp_path)) is None and not was_removed(str(tmp_path))
    assert start_peers(str(tmp_path), A, [B, C]) == ([B, C], False)
