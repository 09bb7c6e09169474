"""Runs ``beanraft`` whose joining node falls silent the moment the entry that adds it reaches
its log, before it acknowledges that entry, until it gets SIGUSR1: ``python stalling_joiner.py
serve …``.

A stand-in for a new node cut off at the worst moment (its link to the others down one way): its
leader has appended the addition, which now needs the new node's acknowledgement, or that of
every old member, to commit. From the moment pysyncobj appends the entry on this node, before
it answers the leader, every message the node would send over its Raft port is dropped: its
acknowledgements (``next_node_idx``), so the leader never counts it however loaded the machine
is, and its votes and pre-votes too, so that the old members it hears cannot elect a leader
with it while another member is frozen. The node keeps running and keeps hearing the leader.
SIGUSR1 ends the silence for good; it falls silent only once. Everything else is this
version's code.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

log = logging.getLogger("beanraft.stalling_joiner")


def fall_silent_on_own_addition() -> None:
    """Patch, in this process only, the class methods that the node binds as it is built."""
    from pysyncobj.transport import TCPTransport

    from beanraft.replication import membership

    after_change = membership.Members._after_change
    send = TCPTransport.send
    silent = threading.Event()  # the addition reached this node's log
    released = threading.Event()  # SIGUSR1 arrived
    told = threading.Event()  # the log said the silence ended

    def after_change_then_fall_silent(self, kind, address, reverse, changed):
        after_change(self, kind, address, reverse, changed)
        if kind == "add" and not reverse and address == str(self._sync.selfNode) \
                and not silent.is_set() and not released.is_set():
            silent.set()
            log.warning("stand-in: the entry that adds this node is in its log; nothing it "
                        "sends over the raft port leaves until SIGUSR1")

    def send_unless_silent(self, node, message):
        # Below every wrapper BeanRaft puts on the transport's send: they bind the class's.
        if silent.is_set():
            if not released.is_set():
                return False
            if not told.is_set():
                told.set()
                log.warning("stand-in: SIGUSR1 arrived; this node's raft messages leave again")
        return send(self, node, message)

    membership.Members._after_change = after_change_then_fall_silent
    TCPTransport.send = send_unless_silent
    # Only sets an event: the handler runs on the main thread between two of its bytecodes.
    signal.signal(signal.SIGUSR1, lambda signum, frame: released.set())


if __name__ == "__main__":
    fall_silent_on_own_addition()
    from beanraft.node.cli import main

    sys.argv = ["beanraft", *sys.argv[1:]]
    main()
