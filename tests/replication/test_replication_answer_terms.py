"""A leader takes a follower's answer only from its own term.

Method: three pysyncobj nodes ticked by hand replicate ten entries (``hand_ticked``). The leader
is then handed a ``next_node_idx`` answer that left in an earlier term. Upstream pysyncobj's
answers carry no term, so the leader takes it: a success raises its match index for the follower
to whatever the old answer said (here, past the end of the leader's own log) and a reset moves
the next index. With BeanRaft's ``answers_carry_their_term`` a follower's answers say their
term and the leader ignores those of another term, while answers of its own term still count.
"""

from __future__ import annotations

from hand_ticked import Replicated

from beanraft.replication import seam
from beanraft.replication.raft import answers_carry_their_term


def _follower_as_leader_knows(cluster: Replicated):
    match = cluster.leader._SyncObj__raftMatchIndex
    return next(n for n in match if n.address == cluster.follower.selfNode.address)


def _answer(cluster: Replicated, **fields) -> None:
    message = {"type": "next_node_idx", "reset": False, "success": True, **fields}
    seam.transport(cluster.leader)._onMessageReceived(_follower_as_leader_knows(cluster), message)


def test_upstream_an_answer_from_an_earlier_term_moves_the_leaders_indices():
    with Replicated(harden=False) as cluster:
        last = cluster.log(cluster.leader)[-1][1]
        term = cluster.leader.raftCurrentTerm
        _answer(cluster, next_node_idx=last + 6, term=term - 1)
        assert cluster.match_index_of_follower() == last + 5  # entries the leader never had
        _answer(cluster, next_node_idx=3, reset=True, success=False, term=term - 1)
        assert seam.next_index(cluster.leader)[_follower_as_leader_knows(cluster)] == 3


def test_beanraft_ignores_answers_of_another_term_and_takes_its_own_terms():
    with Replicated(harden=False) as cluster:
        answers_carry_their_term(cluster.leader)
        last = cluster.log(cluster.leader)[-1][1]
        term = cluster.leader.raftCurrentTerm
        match = cluster.match_index_of_follower()
        next_index = seam.next_index(cluster.leader)[_follower_as_leader_knows(cluster)]
        _answer(cluster, next_node_idx=last + 6, term=term - 1)
        _answer(cluster, next_node_idx=3, reset=True, success=False, term=term - 1)
        _answer(cluster, next_node_idx=last + 6, term=term + 1)
        assert cluster.match_index_of_follower() == match
        assert seam.next_index(cluster.leader)[_follower_as_leader_knows(cluster)] == next_index
        _answer(cluster, next_node_idx=3, reset=True, success=False, term=term)
        assert seam.next_index(cluster.leader)[_follower_as_leader_knows(cluster)] == 3
        # No term: the answer of a node of an earlier BeanRaft, taken as before.
        _answer(cluster, next_node_idx=last + 1, reset=True, success=False)
        assert seam.next_index(cluster.leader)[_follower_as_leader_knows(cluster)] == last + 1


def test_beanraft_followers_say_the_term_of_their_answer():
    with Replicated(harden=False) as cluster:
        answers_carry_their_term(cluster.follower)  # over the recorder of what it sends
        last = cluster.log(cluster.follower)[-1][1]
        cluster.deliver(last, [])
        assert cluster.sent and all(m["term"] == cluster.leader.raftCurrentTerm
                                    for m in cluster.sent if m["type"] == "next_node_idx")
