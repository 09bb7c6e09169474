"""A node's read-index tokens start at a random point in each process.

A follower asks its leader for a read index under a token and dies; restarted within the
leader's fallback, it asks again. Had the two processes counted their tokens from 1, the answer
to the dead process's request (an older, lower index) could settle the new one, and the read
could miss a write acknowledged in between. Method: the tokens of two ``ReadIndex`` objects, as
two processes of one node would make them.
"""

from __future__ import annotations

from beanraft.replication.read_index import ReadIndex


def test_two_processes_of_a_node_never_draw_the_same_tokens():
    first, second = (ReadIndex(None, lambda token, index: None) for _ in range(2))
    drawn = [{reads.new_token() for _ in range(1_000)} for reads in (first, second)]
    assert not drawn[0] & drawn[1]
    assert all(token > 0 for tokens in drawn for token in tokens)
