"""Goal: what a node keeps for leader-run requests, and what a leader holds during a leadership
transfer, is bounded in count; what comes past a bound is refused at once with a clear answer,
and everything else carries on as if nothing had happened.

Method: three real BeanRaft ``RaftNode`` objects (pysyncobj over sealed peer links on loopback)
on one event loop. The bounds are lowered on the objects, so a handful of requests go past them
(in production: 64 waiting requests of a kind, 64 own proposals and 100,000 forwarded commands
held). The waiting requests are asked in one loop iteration, before any can be answered; the
held commands are proposed during a transfer to a stopped member, which can never catch up, so
the leader holds until the transfer gives up.
"""

from __future__ import annotations

import asyncio
import time

from raft_trio import until
from upstream import free_port

from pysyncobj.config import FAIL_REASON

from beanraft.replication import forwarding, membership, transfer
from beanraft.replication.bridge import CommitError
from beanraft.replication.codec import encode_entry
from beanraft.replication.raft import RaftConfig, RaftNode

STRANGER = "127.0.0.1:1"  # not a member of any cluster here
TICK = (17, 0, 0)  # the state machine's pulse: a command that needs no session


def entry() -> bytes:
    return encode_entry(time.time_ns(), [TICK])


class InProcessCluster:
    """Three RaftNodes on the running loop; ``leader`` and ``followers`` once one is elected."""

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.nodes = [RaftNode(RaftConfig(self_addr=a, peers=[b for b in addresses if b != a],
                                          secret="bounds-secret"), loop, lambda events: None)
                      for a in addresses]
        for node in self.nodes:
            node.start()
        await until("a leader that every node knows",
                    lambda: sum(n.is_leader() for n in self.nodes) == 1
                    and all(n.status.leader for n in self.nodes), 30, 0.02)
        self.leader = next(n for n in self.nodes if n.is_leader())
        self.followers = [n for n in self.nodes if n is not self.leader]
        return self

    async def __aexit__(self, *_exc):
        for node in self.nodes:
            node.stop()


async def answers(asks) -> list:
    """Every ask's outcome (a result or the exception), in order; all started in one iteration."""
    return await asyncio.wait_for(asyncio.gather(*asks, return_exceptions=True), 60)


def test_one_request_more_than_may_wait_is_refused_busy_and_the_others_are_answered():
    async def scenario():
        async with InProcessCluster() as cluster:
            asked_on = cluster.followers[0]  # a follower: the requests travel to the leader
            members, transfers = asked_on.members.forwarder, asked_on.transfers.forwarder
            assert members.max_waiting == transfers.max_waiting == forwarding.MAX_WAITING
            members.max_waiting = transfers.max_waiting = 2
            changes = await answers([asked_on.members.request(membership.REMOVE, STRANGER,
                                                              False, 20.0) for _ in range(3)])
            moves = await answers([asked_on.transfers.request(STRANGER, 20.0)
                                   for _ in range(3)])
            # Freed again: the next request is answered by the leader, not refused here.
            again = await answers([asked_on.members.request(membership.REMOVE, STRANGER,
                                                            False, 20.0),
                                   asked_on.transfers.request(STRANGER, 20.0)])
            return cluster.leader, changes, moves, again

    leader, changes, moves, again = asyncio.run(scenario())
    assert [type(a) for a in changes] == [membership.MembershipError] * 3
    assert [a.code for a in changes] == [membership.NOT_MEMBER, membership.NOT_MEMBER,
                                         membership.BUSY]
    assert "2 requests of this kind wait for the leader's answer on this node" in str(changes[2])
    assert [type(a) for a in moves] == [transfer.TransferError] * 3
    assert [a.code for a in moves] == [transfer.UNKNOWN_TARGET, transfer.UNKNOWN_TARGET,
                                       transfer.BUSY]
    assert "ask again later" in str(moves[2])
    assert [a.code for a in again] == [membership.NOT_MEMBER, transfer.UNKNOWN_TARGET]
    assert leader.is_leader()


def test_a_transfer_holds_no_more_commands_than_its_bounds_and_refuses_the_rest_as_queue_full():
    async def scenario():
        async with InProcessCluster() as cluster:
            leader, (follower, target) = cluster.leader, cluster.followers
            held = leader.transfers
            assert (held.max_held_proposals, held.max_held_forwards) == \
                (transfer.MAX_HELD_PROPOSALS, transfer.MAX_HELD_FORWARDS)
            held.max_held_proposals = held.max_held_forwards = 2
            target.stop()
            await asyncio.wait_for(leader.submit(entry()), 20)  # the target never gets this
            moving = asyncio.ensure_future(leader.transfers.request(str(target.config.self_addr),
                                                                    10.0))
            await until("the leader to hold new commands", lambda: held.holding, 30, 0.02)
            own = [leader.submit(entry()) for _ in range(3)]
            forwarded = [follower.submit(entry()) for _ in range(3)]
            refused = await answers([own[2], forwarded[2]])
            waiting_while_held = held.holding and not any(f.done() for f in own[:2] + forwarded[:2])
            failed = await answers([moving])
            released = await answers(own[:2] + forwarded[:2])
            after = await answers([leader.submit(entry()), follower.submit(entry())])
            return refused, waiting_while_held, failed[0], released, after

    refused, waiting_while_held, failed, released, after = asyncio.run(scenario())
    assert [type(r) for r in refused] == [CommitError, CommitError]
    assert [r.reason for r in refused] == [FAIL_REASON.QUEUE_FULL] * 2
    assert waiting_while_held, "the transfer ended before the refusals came back"
    assert isinstance(failed, transfer.TransferError) and failed.code == transfer.NOT_CAUGHT_UP
    assert all(isinstance(r, list) for r in released), released  # committed after the transfer
    assert all(isinstance(r, list) for r in after), after
