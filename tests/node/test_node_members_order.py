"""A follower writes its members file before it acknowledges the entry that changes the members.

A restarted node takes its member list from ``members.json``, not from its log. Written a tick
after the acknowledgement, a follower killed in between would come back counting a removed
member while the others (and its own log) do not: two lists, two majorities.

Method: three real nodes run in this process (client and raft ports on 127.0.0.1, data
directories on disk). Every write of a members file and every acknowledgement one follower sends
its leader are recorded, in order, from the tick thread that does both; the other follower is
removed through the leader; the follower's file must hold the new list before any of its
acknowledgements covers the removal's index, and the leader's only once its own journal holds
the removal, synced.
"""

from __future__ import annotations

import asyncio
import pickle

from cluster.cluster_harness import free_ports
from polling import until

from beanraft.node.app import Node
from beanraft.node.config import NodeConfig
from beanraft.replication import membership, seam

MEMBERSHIP_ENTRY = b"\x02"  # pysyncobj's command type of a membership change


def test_a_follower_writes_the_new_members_before_it_acknowledges_the_removal(tmp_path,
                                                                               monkeypatch):
    events: list[tuple] = []
    save = membership.save_members

    journals: dict[str, object] = {}  # data directory -> that node's journal

    def recorded_save(directory, members, removed=False):
        journal = journals.get(directory)
        logged = journal is not None and any(_is_removal(entry) for entry in list(journal))
        events.append(("saved", directory, frozenset(members), logged,
                       journal is not None and not journal._dirty))
        save(directory, members, removed=removed)

    monkeypatch.setattr(membership, "save_members", recorded_save)

    async def scenario():
        ports = free_ports(6)
        raft = [f"127.0.0.1:{port}" for port in ports[3:]]
        nodes = [Node(NodeConfig(listen="127.0.0.1", port=ports[i], raft=raft[i],
                                 peers=[a for a in raft if a != raft[i]], insecure=True,
                                 data_dir=str(tmp_path / f"data{i}"))) for i in range(3)]
        try:
            await asyncio.wait_for(asyncio.gather(*(node.start() for node in nodes)), 60)
            await until("every node to be ready", lambda: all(n.is_ready() for n in nodes), 30)
            leader = next(n for n in nodes if n.raft.is_leader())
            journals.update({n.config.data_dir: seam.journal(n.raft._sync) for n in nodes})
            follower, removed = (n for n in nodes if n is not leader)
            watched = follower.config.data_dir

            def recorded_send(send, node, message):
                if isinstance(message, dict) and message.get("type") == "next_node_idx" \
                        and message.get("success"):
                    events.append(("ack", message.get("next_node_idx")))
                return send(node, message)

            seam.wrap_send(follower.raft._sync, recorded_send)
            gone = removed.config.raft
            await leader.raft.members.request("remove", gone, False, 20.0)
            journal = seam.journal(follower.raft._sync)
            await until("the follower to hold the removal",
                        lambda: any(_is_removal(entry) for entry in list(journal)), 10)
            index = next(entry[1] for entry in list(journal) if _is_removal(entry))
            saved_at = next(i for i, e in enumerate(events) if e[0] == "saved"
                            and e[1] == watched and gone not in e[2])
            acked_at = next(i for i, e in enumerate(events) if e[0] == "ack" and e[1] > index)
            assert saved_at < acked_at, events[min(saved_at, acked_at):max(saved_at, acked_at) + 1]
            # The leader writes its file only once its own journal holds the entry, synced
            # (its change hook runs before pysyncobj appends the entry).
            await until("the leader to write its file", lambda: any(
                e[0] == "saved" and e[1] == leader.config.data_dir and gone not in e[2]
                for e in events), 10)
            leader_saved = next(e for e in events if e[0] == "saved"
                                and e[1] == leader.config.data_dir and gone not in e[2])
            assert leader_saved[3:] == (True, True), leader_saved
        finally:
            for node in nodes:
                node._stopped.set()
            await asyncio.gather(*(node.shutdown() for node in nodes), return_exceptions=True)

    asyncio.run(scenario())


def _is_removal(entry) -> bool:
    return entry[0][:1] == MEMBERSHIP_ENTRY and pickle.loads(entry[0][1:])[0] == "rem"
