"""A leadership transfer whose target loses its election goes on with another caught-up follower.

Seen in CI (tests/cluster/test_cluster_learner.py): the leader was asked to hand over right after
a fifth member joined; it picked that member, whose vote requests reached only the old leader (it
was not connected to the others yet), the old leader won the next election, and the transfer
waited out its whole timeout. Reproducing that race between processes is left to chance, so this
drives ``Transfers`` (replication/transfer.py) tick by tick with a stand-in for the pysyncobj
state it reads: the role, the term, the leader, each follower's match index, and
``transferLeadership``. The stand-in plays the elections the test describes.
"""

from __future__ import annotations

import asyncio

from beanraft.replication.transfer import TransferError, Transferred, Transfers


class Member:
    def __init__(self, address: str):
        self.address = address

    def __str__(self) -> str:
        return self.address


class StandIn:
    """What Transfers reads of a pysyncobj leader, and the TimeoutNows it sends."""

    def __init__(self, me: str, followers: list[str], last: int = 50):
        self.selfNode = Member(me)
        self.otherNodes = [Member(a) for a in followers]
        self.raftCurrentTerm = 2
        self.leading = True
        self._SyncObj__raftLeader = self.selfNode
        self._SyncObj__raftLog = [(b"", last, 2)]
        self.match = {a: last for a in followers}
        self.sent: list[str] = []

    def _isLeader(self) -> bool:
        return self.leading

    def getStatus(self) -> dict:
        status = {}
        for address, match in self.match.items():
            status["partner_node_status_server_" + address] = 2
            status["match_idx_server_" + address] = match
        return status

    def transferLeadership(self, target, callback) -> None:
        self.sent.append(str(target))
        callback(None, 0)

    # the elections of the scenarios
    def step_down(self, term: int) -> None:
        self.leading, self.raftCurrentTerm, self._SyncObj__raftLeader = False, term, None

    def win(self, term: int) -> None:
        self.leading, self.raftCurrentTerm, self._SyncObj__raftLeader = True, term, self.selfNode

    def follow(self, leader: str) -> None:
        self._SyncObj__raftLeader = next(n for n in self.otherNodes if str(n) == leader)


def _transfer(sync: StandIn, to: str | None = None, timeout_s: float = 10.0):
    transfers = Transfers(sync, asyncio.new_event_loop())
    outcome: list = []
    transfers._begin(outcome.append, (to, timeout_s), 0.0, None)
    return transfers, outcome


def test_a_target_that_loses_its_election_is_followed_by_another_caught_up_follower():
    sync = StandIn("a:1", ["b:1", "c:1", "d:1"])
    transfers, outcome = _transfer(sync)
    transfers._advance(0.1)
    assert sync.sent == ["b:1"]  # the first caught-up follower by address
    sync.step_down(3)  # b's vote request reached this node alone ...
    transfers._advance(0.2)
    sync.win(4)  # ... and this node won the next election
    transfers._advance(0.9)
    assert outcome == [] and transfers.holding  # not given up: asking again
    transfers._advance(1.0)
    assert sync.sent == ["b:1", "c:1"]  # another follower first
    sync.step_down(5)
    sync.follow("c:1")
    transfers._advance(1.2)
    assert len(outcome) == 1 and isinstance(outcome[0], Transferred)
    assert (outcome[0].previous, outcome[0].leader) == ("a:1", "c:1")
    assert not transfers.holding


def test_a_named_target_is_asked_again_and_the_transfer_still_ends_at_its_deadline():
    sync = StandIn("a:1", ["b:1", "c:1"])
    transfers, outcome = _transfer(sync, to="b:1", timeout_s=4.0)
    transfers._advance(0.1)
    sync.step_down(3)
    transfers._advance(0.2)
    sync.win(4)
    transfers._advance(0.9)
    transfers._advance(1.0)
    assert sync.sent == ["b:1", "b:1"]  # the one named, again
    transfers._advance(4.1)  # it never wins: the deadline ends the transfer, as before
    assert len(outcome) == 1 and isinstance(outcome[0], TransferError)
    assert outcome[0].code == "timeout" and "asked b:1 to take over" in str(outcome[0])


def test_a_target_that_never_campaigns_still_times_out_without_a_second_ask():
    # The leader keeps its term (the target was frozen, say): nothing says an election was
    # lost, so nobody is asked again (tests/cluster/test_cluster_leader_transfer.py, for real).
    sync = StandIn("a:1", ["b:1", "c:1"])
    transfers, outcome = _transfer(sync, timeout_s=2.0)
    transfers._advance(0.1)
    for now in (0.5, 1.0, 1.5):
        transfers._advance(now)
    assert sync.sent == ["b:1"] and outcome == []
    transfers._advance(2.1)
    assert isinstance(outcome[0], TransferError) and outcome[0].code == "timeout"
