"""A leader tells its followers that entries a follower's client waits for (a batch the follower
forwarded) are committed before it applies them itself, so the followers (and the clients waiting
on them) apply at the same time instead of after the leader.

Method: three real BeanRaft ``RaftNode`` objects (real pysyncobj, sealed peer links on loopback
ports, one Raft thread each) in this process. The leader's state machine is made to hold its
apply of one entry until a follower has applied that entry, for at most a few seconds: the
follower can only get there, under the same leader, if the commit index left the leader before
its apply began, since the leader's Raft thread, which sends everything the leader sends, is the
one held.
"""

from __future__ import annotations

import asyncio
import time

from raft_trio import leader_of, start_three

from beanraft.replication.codec import encode_entry

HOLD_S = 5.0  # how long the leader's apply waits for a follower before it gives up
ATTEMPTS = 4  # a loaded machine may elect another leader under a held one: try again


async def _hold_one_apply(nodes) -> str:
    """Hold the leader's apply of one new entry: "follower applied", "timeout", or "new term"
    (the followers lost patience with a leader that sent nothing and elected another: try
    again, this says nothing either way)."""
    leader = await leader_of(nodes, 20)
    followers = [n for n in nodes if n is not leader]
    # An entry of this term is committed and applied everywhere first.
    await asyncio.wait_for(leader.submit(encode_entry(time.time_ns(), [(17, 0, 0)])), 20)
    outcome: list[str] = []
    apply_batch = leader.machine.apply_batch

    def held_apply(now_ns, commands):  # runs in the leader's Raft thread
        if not outcome:
            index, term = leader._sync.raftLastApplied + 1, leader._sync.raftCurrentTerm
            until = time.monotonic() + HOLD_S
            while time.monotonic() < until:
                if any(f._sync.raftCurrentTerm != term for f in followers):
                    outcome.append("new term")
                    break
                if any(f.applied_index >= index for f in followers):
                    outcome.append("follower applied")
                    break
                time.sleep(0.005)
            else:
                outcome.append("timeout")
        return apply_batch(now_ns, commands)

    leader.machine.apply_batch = held_apply
    try:
        # Proposed on a follower: forwarded to the leader, whose client waits there.
        await asyncio.wait_for(followers[0].submit(encode_entry(time.time_ns(), [(17, 0, 0)])), 20)
    except Exception:  # the held leader was deposed: the entry's fate is the next leader's
        pass
    try:
        # The follower's client may have its answer before the leader's Raft thread, which told
        # the commit index, has even entered the held apply (a loaded machine can pause that
        # thread between the two): the hold stays in place until it has judged.
        for _ in range(int((HOLD_S + 5) / 0.01)):
            if outcome:
                break
            await asyncio.sleep(0.01)
    finally:
        leader.machine.apply_batch = apply_batch
    return outcome[0] if outcome else "new term"


async def _outcomes() -> list[str]:
    nodes = start_three(asyncio.get_running_loop())
    outcomes: list[str] = []
    try:
        while len(outcomes) < ATTEMPTS and "follower applied" not in outcomes:
            outcomes.append(await _hold_one_apply(nodes))
        return outcomes
    finally:
        for node in nodes:
            node.stop()


def test_a_follower_applies_an_entry_while_the_leader_is_still_applying_it():
    outcomes = asyncio.run(_outcomes())
    assert outcomes[-1] == "follower applied", outcomes
