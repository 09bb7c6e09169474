"""A member cut off from the others cannot depose a healthy leader when it comes back (pre-vote).

Method: three pysyncobj nodes ticked by hand on loopback ports (``hand_ticked.Replicated``); a
cut drops every message to or from one follower at the senders, while the TCP connections stay
up, as a silent partition does. Upstream pysyncobj lets the cut-off follower raise its term at
every election timeout, and its first vote request after the cut heals makes the leader step
down. With BeanRaft's ``PreVote`` on every node the follower only asks (the others, in their
leader's lease, refuse), keeps its term and follows the same leader again. The same stage shows
that a real failure of the leader still elects a new one, that a member stuck at a term above
its leader's is heard (``br_term``) instead of being left out for good, that a transfer's target
campaigns without asking, that in a rolling upgrade a member without pre-vote (it never
answers one) does not keep the upgraded member with the longest log from being elected, and that
a member refused by one at a higher term takes that term (else two members whose terms and logs
disagree would refuse each other for ever).
"""

from __future__ import annotations

import time

from hand_ticked import Replicated

from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _RAFT_STATE

from beanraft.replication import prevote, seam
from beanraft.replication.prevote import PreVote


class Stage:
    """The hand-ticked trio, a cut around some nodes, and the pre-vote of each node (if any)."""

    def __init__(self, cluster: Replicated, with_prevote: bool, only=None, may_vote=None):
        self.cluster = cluster
        self.cut: set[str] = set()  # addresses whose messages are dropped both ways
        self.prevotes = {}
        for node in cluster.nodes:
            seam.wrap_send(node, self._dropper(node))
            if with_prevote and (only is None or node is only):
                votes = (may_vote or {}).get(node, lambda: True)
                self.prevotes[node] = PreVote(node, may_vote=votes)
                self.prevotes[node].install()

    def _dropper(self, node):
        me = node.selfNode.address

        def send(send, to, message):
            if me in self.cut or to.address in self.cut:
                return False
            return send(to, message)
        return send

    def run(self, seconds: float, until=lambda: False, skip=()) -> bool:
        """Tick every node (but ``skip``) for ``seconds`` or until ``until()``; its last value."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            for node in self.cluster.nodes:
                if node in skip:
                    continue
                if node in self.prevotes:
                    self.prevotes[node].before_tick()
                node.doTick(0.0)
            time.sleep(0.002)
        return until()

    def others(self, node) -> list:
        return [n for n in self.cluster.nodes if n is not node]


def _cut_off_follower_comes_back(cluster: Replicated, with_prevote: bool) -> tuple[Stage, int]:
    """Cut a follower off for four maximum election timeouts, heal, tick until the leader's term
    moves (or 3 s). Returns the stage and the term before the cut."""
    stage = Stage(cluster, with_prevote)
    leader, cut_off = cluster.leader, cluster.follower
    term = leader.raftCurrentTerm
    stage.cut.add(cut_off.selfNode.address)
    stage.run(2.4)
    stage.term_while_cut = cut_off.raftCurrentTerm
    stage.cut.clear()
    stage.run(3.0, until=lambda: leader.raftCurrentTerm != term or not leader._isLeader())
    return stage, term


def test_upstream_a_member_back_from_a_partition_deposes_the_healthy_leader():
    with Replicated(harden=False) as cluster:
        stage, term = _cut_off_follower_comes_back(cluster, with_prevote=False)
        assert stage.term_while_cut >= term + 2  # it campaigned alone, again and again
        assert cluster.leader.raftCurrentTerm > term  # its vote request reached the leader


def test_beanraft_a_member_back_from_a_partition_follows_the_same_leader_at_the_same_term():
    with Replicated(harden=False) as cluster:
        stage, term = _cut_off_follower_comes_back(cluster, with_prevote=True)
        leader, cut_off = cluster.leader, cluster.follower
        assert stage.term_while_cut == term  # it asked, and nobody answered
        assert stage.prevotes[cut_off].rounds >= 2
        assert stage.run(3.0, until=lambda: seam.leader_node(cut_off) is not None
                         and seam.leader_node(cut_off).address == leader.selfNode.address)
        assert leader._isLeader() and all(n.raftCurrentTerm == term for n in cluster.nodes)
        leader.inc(5)
        assert stage.run(3.0, until=lambda: all(n.value == leader.value for n in cluster.nodes))
        assert all(n.raftCurrentTerm == term for n in cluster.nodes)


def test_beanraft_still_elects_a_new_leader_when_the_leader_is_cut_off():
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        old, term = cluster.leader, cluster.leader.raftCurrentTerm
        stage.cut.add(old.selfNode.address)
        assert stage.run(5.0, skip=(old,), until=lambda: any(n._isLeader() for n in stage.others(old)))
        new = next(n for n in stage.others(old) if n._isLeader())
        assert new.raftCurrentTerm > term
        new.inc(7)
        assert stage.run(3.0, skip=(old,),
                         until=lambda: all(n.value == new.value for n in stage.others(old)))


def test_beanraft_a_member_stuck_above_its_leaders_term_is_heard_and_the_cluster_moves_above_it():
    # As if its vote requests were lost after a pre-vote: a term the others never saw.
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        stuck, term = cluster.follower, cluster.leader.raftCurrentTerm
        seam.adopt_term(stuck, term + 3)
        assert stage.run(5.0, until=lambda: any(n._isLeader() for n in cluster.nodes)
                         and len({n.raftCurrentTerm for n in cluster.nodes}) == 1
                         and all(seam.leader_node(n) is not None or n._isLeader()
                                 for n in cluster.nodes)
                         and cluster.nodes[0].raftCurrentTerm > term + 3)
        leader = next(n for n in cluster.nodes if n._isLeader())
        leader.inc(3)
        assert stage.run(3.0, until=lambda: all(n.value == leader.value for n in cluster.nodes))


def _asked(stage: Stage, asker, asked, **fields) -> bool:
    """Deliver a pre-vote request from ``asker`` to ``asked``; whether ``asked`` granted it."""
    answers = []

    def record(send, to, message):
        if isinstance(message, dict) and message.get("type") == prevote.ANSWER:
            answers.append(message)
            return True
        return send(to, message)

    seam.wrap_send(asked, record)
    index, term = prevote._last_entry(asker)
    message = {"type": prevote.ASK, "term": asker.raftCurrentTerm + 1, "round": 1,
               "last_log_index": index, "last_log_term": term, **fields}
    node = next(n for n in asked.otherNodes if n.address == asker.selfNode.address)
    seam.transport(asked)._onMessageReceived(node, message)
    assert len(answers) == 1 and answers[0]["round"] == 1
    return answers[0]["granted"]


def test_a_member_refuses_a_pre_vote_while_it_hears_from_its_leader_and_grants_it_after():
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        asker, asked = stage.others(cluster.leader)
        stage.run(0.3)  # heartbeats: both followers are in the leader's lease
        assert not _asked(stage, asker, asked)
        assert not _asked(stage, asker, cluster.leader)  # a leader never grants
        # Unless the asker's log ends in a term above the lease's (a restored node's log).
        above = asked.raftCurrentTerm + 1
        assert _asked(stage, asker, asked, term=above + 1, last_log_term=above)
        assert asker.raftCurrentTerm == asked.raftCurrentTerm == cluster.leader.raftCurrentTerm
        time.sleep(cluster.nodes[0].conf.raftMinTimeout + 0.05)  # the lease runs out
        assert _asked(stage, asker, asked)
        assert asked.raftCurrentTerm == asker.raftCurrentTerm  # granting changed no term
        assert seam.leader_node(asked) is not None  # nor its leader


def test_a_member_refuses_a_pre_vote_for_a_shorter_log_an_old_term_or_a_malformed_request():
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        asker, asked = stage.others(cluster.leader)
        time.sleep(cluster.nodes[0].conf.raftMinTimeout + 0.05)  # out of the lease, untouched
        index, term = prevote._last_entry(asked)
        assert not _asked(stage, asker, asked, last_log_index=index - 1)
        assert not _asked(stage, asker, asked, last_log_term=term - 1, last_log_index=index + 5)
        assert not _asked(stage, asker, asked, term=asked.raftCurrentTerm)
        assert not _asked(stage, asker, asked, term="7")
        assert not _asked(stage, asker, asked, last_log_index=None)
        assert _asked(stage, asker, asked, last_log_index=index + 5)


def test_a_transfer_target_campaigns_at_once_though_its_old_leader_goes_on_sending_heartbeats():
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        old, target = cluster.leader, cluster.follower
        term = old.raftCurrentTerm
        leader_as_known = seam.leader_node(target)
        seam.transport(target)._onMessageReceived(leader_as_known, {"type": "timeout_now",
                                                                     "term": term})
        cluster.deliver(cluster.log(old)[-1][1], [])  # a heartbeat lands before the next tick
        assert stage.run(3.0, until=target._isLeader)
        assert target.raftCurrentTerm == term + 1 and stage.prevotes[target].rounds == 0


def test_an_upgraded_member_with_the_longest_log_is_elected_beside_a_member_without_pre_vote():
    # A rolling upgrade: only the follower ``upgraded`` runs pre-vote; ``old`` never answers one.
    with Replicated(harden=False) as cluster:
        leader, upgraded = cluster.leader, cluster.follower
        stage = Stage(cluster, with_prevote=True, only=upgraded)
        old = next(n for n in stage.others(leader) if n is not upgraded)
        stage.cut.add(old.selfNode.address)
        target = leader.value + 3
        for _ in range(3):
            leader.inc(1)
        assert stage.run(3.0, until=lambda: upgraded.value == target)
        assert old.value < target
        stage.cut = {leader.selfNode.address}  # the leader is lost; ``old`` is back, behind
        assert stage.run(10.0, skip=(leader,), until=lambda: upgraded._isLeader())
        assert stage.prevotes[upgraded].rounds >= 2
        upgraded.inc(2)
        assert stage.run(3.0, skip=(leader,), until=lambda: old.value == upgraded.value)


def test_an_answer_from_a_node_that_is_not_a_member_neither_counts_nor_voids_the_round():
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        asker = cluster.follower
        peer = next(n for n in stage.others(asker) if n is not cluster.leader)
        stage.cut = {n.selfNode.address for n in stage.others(asker)}  # nobody answers it
        round_of = stage.prevotes[asker]
        assert stage.run(3.0, skip=stage.others(asker), until=lambda: round_of.rounds >= 1)
        term = asker.raftCurrentTerm + 1
        answer = {"type": prevote.ANSWER, "term": term, "round": round_of.rounds, "granted": True}
        receive = seam.transport(asker)._onMessageReceived
        receive(TCPNode("127.0.0.1:9"), dict(answer))  # a stranger grants: not a vote
        assert round_of._licence is None
        receive(next(n for n in asker.otherNodes if n.address == peer.selfNode.address), dict(answer))
        assert round_of._licence == term  # one member's grant and its own: a majority of three


def test_two_members_whose_terms_and_logs_disagree_elect_the_longer_log_without_the_third():
    # Y leads at term T and appends an entry nobody else gets; cut off, it restarts as a
    # follower. Meanwhile X and Z pre-vote and one of them (H) campaigns, but its vote requests
    # are lost: H is at T + 1 with the shorter log. Then the other one goes down for good. H
    # refuses Y (T + 1 is not above its term), Y refuses H (a shorter log): unless Y takes H's
    # term from the refusal, neither is ever elected.
    with Replicated(harden=False) as cluster:
        stage = Stage(cluster, with_prevote=True)
        y = cluster.leader
        term = y.raftCurrentTerm
        lost = {"on": True}

        def drop_votes(send, to, message):
            if lost["on"] and isinstance(message, dict) and message.get("type") == "request_vote":
                return False
            return send(to, message)

        for node in stage.others(y):
            seam.wrap_send(node, drop_votes)
        stage.cut = {y.selfNode.address}
        y.inc(1)
        stage.run(0.05, skip=stage.others(y))
        assert stage.run(5.0, skip=(y,), until=lambda: any(
            n.raftCurrentTerm > term for n in stage.others(y)))
        h = max(stage.others(y), key=lambda n: n.raftCurrentTerm)
        gone = next(n for n in stage.others(y) if n is not h)
        assert prevote._last_entry(y) > prevote._last_entry(h) and h.raftCurrentTerm > term
        lost["on"] = False
        y._SyncObj__setState(_RAFT_STATE.FOLLOWER)  # restarted: same term and log, no leader
        seam.forget_leader(y)
        stage.cut = {gone.selfNode.address}
        assert stage.run(10.0, skip=(gone,), until=lambda: y._isLeader() or h._isLeader())
        assert y._isLeader()  # the longer log wins, at a term above both
        y.inc(1)
        assert stage.run(3.0, skip=(gone,), until=lambda: h.value == y.value)


def test_a_node_that_may_not_vote_neither_grants_a_pre_vote_nor_answers_a_vote_request():
    # A member back under its address with an empty data directory (``--join``) is joining
    # until it has caught up: its empty log's vote must not elect a leader that lacks entries.
    with Replicated(harden=False) as cluster:
        leader = cluster.leader
        joining, other = (n for n in cluster.nodes if n is not leader)
        allowed = {"vote": False}
        stage = Stage(cluster, with_prevote=True, may_vote={joining: lambda: allowed["vote"]})
        joining.conf.raftMinTimeout = joining.conf.raftMaxTimeout = 1000.0  # holds elections
        seam.set_election_deadline(joining, time.monotonic() + 1000.0)
        stage.cut = {leader.selfNode.address}
        assert not stage.run(3.0, skip=(leader,), until=other._isLeader)
        assert stage.prevotes[other].rounds >= 2
        allowed["vote"] = True  # caught up: a member again
        assert stage.run(5.0, skip=(leader,), until=other._isLeader)
