"""Runs ``beanraft`` whose leader answers a member's own removal as the earlier version did:
``python earlier_self_removal.py serve …``.

A stand-in for a node of the earlier version in a rolling upgrade. That version's leader
answered a member that asked for its own removal *before* proposing the removal (the member is
cut off as the leader appends it), and its answers carried no ``committed``. Here the leader
checks and proposes as this version does and, if it proposed, answers success at once without
``committed``; refusals pass as they are. Everything else is this version's code.
"""

from __future__ import annotations

import sys


def answer_first() -> None:
    from beanraft.replication import membership

    begin, to_wire = membership.Members._begin, membership._to_wire

    def begin_answering_first(self, reply, args, now, requester):
        action, address = args[0], args[1]
        if action != membership.REMOVE or requester != address:
            begin(self, reply, args, now, requester)
            return
        refused = []
        begin(self, refused.append, args, now, requester)
        if refused:  # checked and refused at once: nothing was proposed
            reply(refused[0])
            return
        reply(membership.Changed(action=action, address=address, elapsed_s=0.0,
                                 members=tuple(sorted(set(self.members) - {address}))))

    def to_wire_without_committed(done):
        doc = to_wire(done)
        doc.pop("committed", None)
        return doc

    membership.Members._begin = begin_answering_first
    membership._to_wire = to_wire_without_committed


if __name__ == "__main__":
    answer_first()
    from beanraft.node.cli import main

    sys.argv = ["beanraft", *sys.argv[1:]]
    main()
