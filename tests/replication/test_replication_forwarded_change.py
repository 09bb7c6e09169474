"""A leader appends only the membership changes it runs itself, and none before the first entry
of its term is committed.

pysyncobj forwards whatever sits in the command queue of a node that is not the leader to the
leader it knows of, a membership change included, and its leader appends a forwarded change as
its own. A leader deposed after it proposed a change, before its next tick appended it, thus
handed the change to the next leader, which appended it past every check of
``member_change.py``, one change at a time above all (pysyncobj's own guard of the previous
change reads an index it never sets). With two changes uncommitted, an entry commits on a
majority of a member list that is not a majority of the list before.

Method: three pysyncobj nodes ticked by hand (``hand_ticked.Replicated``), with BeanRaft's
``Changes`` on the old leader. The two others elect one of them and commit its first entry; the
new leader then appends an addition of its own, which stays uncommitted while the third node (the
bystander) is not ticked. The old leader is asked to remove the bystander, and given an ordinary
command, in the very poll that brings it the new leader's first append_entries (the vote request
is lost), so its next tick forwards both. Then three BeanRaft ``RaftNode`` objects, where a
follower queues a membership change with pysyncobj's own call: the leader refuses it, and a
batch the same follower forwards still commits.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time

from hand_ticked import Replicated
from pysyncobj.config import FAIL_REASON
from raft_trio import run_three
from upstream import free_port

from beanraft.jobs.commands import Op
from beanraft.replication import seam
from beanraft.replication.codec import encode_entry
from beanraft.replication.member_change import DENIED, REMOVE, Changes
from beanraft.replication.membership import MembershipError, refuse_forwarded_changes


def _tick(nodes, done, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        for node in nodes:
            node.doTick(0.0)


def _after(node, index: int) -> list[tuple[int, str]]:
    """The entries of ``node``'s log after ``index``: (index, "add ADDR", "rem ADDR" or "cmd")."""
    found = []
    for command, at, _term in seam.journal(node):
        if at <= index:
            continue
        if command[:1] == seam.MEMBERSHIP_COMMAND:
            kind, address = pickle.loads(command[1:])[:2]
            found.append((at, f"{kind} {address}"))
        elif command[:1] == seam.REGULAR_COMMAND:
            found.append((at, "cmd"))
    return found


def _elect_among_others(cluster: Replicated, commit_first: bool):
    """The two nodes besides the leader elect one of them, which commits its first entry if
    ``commit_first``; the old leader, not ticked meanwhile, still takes itself for the leader.
    Answers (new leader, bystander)."""
    old = cluster.leader
    others = [n for n in cluster.nodes if n is not old]
    deadline = time.monotonic() + 20
    while not any(n._isLeader() for n in others):
        assert time.monotonic() < deadline, "the two others elected no leader in 20 s"
        for node in others:
            node.doTick(0.0)
            if node._isLeader():
                break  # its first entry is not acknowledged yet
    new = next(n for n in others if n._isLeader())
    first = seam.journal(new)[-1][1]  # its no-op
    if commit_first:
        _tick(others, lambda: new.raftLastApplied >= first, "the new leader commits its first entry")
    assert old._isLeader()
    return new, next(n for n in others if n is not new)


def _ask_as_deposed(old, changes: Changes, address: str, asked: list) -> list[bool]:
    """Ask ``old`` to remove ``address``, and give it an ordinary command, as the first
    append_entries of a higher term arrives: proposed while it leads, and deposed before its
    next tick appends them. Vote requests of that term are lost (else one of them might depose
    it in an earlier poll, and with no leader known it would forward nothing)."""
    handler = seam.message_handler(old)
    proposed: list[bool] = []

    def on_message(node, message):
        if isinstance(message, dict) and message.get("term", 0) > old.raftCurrentTerm:
            if message.get("type") == "request_vote":
                return
            if message.get("type") == "append_entries" and not proposed:
                assert old._isLeader()
                changes.begin(asked.append, (REMOVE, address, True, 60.0), time.monotonic(), None)
                old.inc(1, callback=lambda result, err: asked.append(("inc", result, err)))
                proposed.append(True)
        handler(node, message)

    seam.transport(old).setOnMessageReceivedCallback(on_message)
    return proposed


def _forwarded(guarded: bool):
    """The stage of the module docstring, up to the new leader's tick that takes in what the old
    one forwarded. Answers (cluster, old, new, bystander, the new leader's commit index before its
    addition, what the old leader's asker and command were answered, the addition's entry)."""
    cluster = Replicated(harden=False)
    for node in cluster.nodes:
        node.conf.dynamicMembershipChange = True
        if guarded:
            refuse_forwarded_changes(node)
    old = cluster.leader
    new, bystander = _elect_among_others(cluster, commit_first=True)
    committed = new.raftCommitIndex
    # The new leader's own change, as member_change proposes an addition once its learner has
    # caught up; with the bystander no longer ticked it stays uncommitted (2 of 4 members).
    new.addNodeToCluster(f"127.0.0.1:{free_port()}")
    new.doTick(0.0)
    [(added, change)] = _after(new, committed)
    assert change.startswith("add "), change
    asked: list = []
    proposed = _ask_as_deposed(old, Changes(old, shared_secret=True), bystander.selfNode.address,
                               asked)
    _tick([old], lambda: not old._isLeader(), "the old leader hears of the new one")
    assert proposed and str(seam.leader_node(old)) == str(new.selfNode)
    # The old leader's next tick forwards the change and the command; the new leader's next
    # tick appends what it takes of them.
    _tick([old, new], lambda: [c for _i, c in _after(new, committed)][-1] == "cmd",
          "the new leader appends the forwarded command")
    return cluster, old, new, bystander, committed, asked, added


def test_upstream_a_new_leader_appends_a_deposed_leader_s_change_over_its_own_uncommitted_one():
    cluster, old, new, _bystander, committed, _asked, added = _forwarded(guarded=False)
    with cluster:
        entries = _after(new, committed)
        assert [c.split()[0] for _i, c in entries] == ["add", "rem", "cmd"], entries
        assert new.raftCommitIndex < added, "two changes uncommitted at once"
        # The old and the new leader are a majority of the list the removal makes, so their two
        # acknowledgements commit the addition, whose own list (4 members) needs 3.
        _tick([old, new], lambda: new.raftCommitIndex >= added, "the addition commits")


def test_beanraft_a_new_leader_refuses_a_forwarded_change_and_takes_the_forwarded_command(caplog):
    caplog.set_level(logging.WARNING, logger="beanraft.membership")
    cluster, old, new, bystander, committed, asked, added = _forwarded(guarded=True)
    with cluster:
        entries = _after(new, committed)
        assert [c.split()[0] for _i, c in entries] == ["add", "cmd"], entries
        refused = [r.getMessage() for r in caplog.records if "forwarded by" in r.getMessage()]
        assert len(refused) == 1 and f"rem {bystander.selfNode.address}" in refused[0], refused
        # The addition commits only once the bystander acknowledges it (3 of its 4 members),
        # and the command with it; the removal is nowhere.
        _tick([old, new], lambda: any(isinstance(a, MembershipError) for a in asked),
              "the old leader's asker is answered")
        assert new.raftCommitIndex < added
        _tick(cluster.nodes, lambda: ("inc", 11, FAIL_REASON.SUCCESS) in asked,
              "the forwarded command commits")
        assert [a.code for a in asked if isinstance(a, MembershipError)] == [DENIED], asked
        for node in cluster.nodes:
            assert not any(c.startswith("rem ") for _i, c in _after(node, 0)), _after(node, 0)
        assert bystander.selfNode.address in {str(n) for n in new.otherNodes}


def test_a_new_leader_proposes_no_change_before_the_first_entry_of_its_term_commits():
    with Replicated(harden=False) as cluster:
        for node in cluster.nodes:
            node.conf.dynamicMembershipChange = True
        new, bystander = _elect_among_others(cluster, commit_first=False)
        first = seam.journal(new)[-1][1]
        assert new.raftCommitIndex < first
        answers: list = []
        Changes(new, shared_secret=True).begin(
            answers.append, (REMOVE, bystander.selfNode.address, True, 60.0), time.monotonic(),
            None)
        new.doTick(0.0)
        assert [a.code for a in answers if isinstance(a, MembershipError)] == [DENIED], answers
        assert _after(new, first) == []


def test_a_raft_node_refuses_a_change_a_follower_forwards_and_commits_its_batches(caplog):
    caplog.set_level(logging.WARNING, logger="beanraft.membership")

    async def body(nodes, leader) -> None:
        follower, other = [n for n in nodes if n is not leader]
        loop = asyncio.get_running_loop()
        answered: asyncio.Future = loop.create_future()

        def on_answer(_result, err) -> None:
            loop.call_soon_threadsafe(lambda: answered.done() or answered.set_result(err))

        # What a deposed leader's queue holds: a change pysyncobj forwards to the leader.
        follower._sync.removeNodeFromCluster(other.config.self_addr, on_answer)
        assert await asyncio.wait_for(answered, 20) == FAIL_REASON.REQUEST_DENIED
        await asyncio.wait_for(follower.submit(encode_entry(time.time_ns(), [(Op.TICK, 0, 0)])), 20)
        assert len(leader._sync.otherNodes) == 2
        assert other.config.self_addr in {str(n) for n in leader._sync.otherNodes}

    run_three(body)
    refused = [r.getMessage() for r in caplog.records if "forwarded by" in r.getMessage()]
    assert len(refused) == 1, refused
