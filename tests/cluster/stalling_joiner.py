"""Runs ``beanraft`` whose joining node stops itself (SIGSTOP) the moment the entry that adds it
reaches its log, before it acknowledges that entry: ``python stalling_joiner.py serve …``.

A stand-in for a new node frozen at the worst moment (a paused process, a swap storm): its
leader has appended the addition, which now needs the new node's acknowledgement, or that of
every old member, to commit. The node stops itself once, where pysyncobj appends the entry and
before it answers the leader; the test resumes it with SIGCONT. Everything else is this
version's code.
"""

from __future__ import annotations

import os
import signal
import sys


def stall_on_own_addition() -> None:
    from beanraft.replication import membership

    after_change = membership.Members._after_change
    stalled: list[bool] = []

    def after_change_then_stall(self, kind, address, reverse, changed):
        after_change(self, kind, address, reverse, changed)
        if kind == "add" and not reverse and address == str(self._sync.selfNode) and not stalled:
            stalled.append(True)
            os.kill(os.getpid(), signal.SIGSTOP)

    membership.Members._after_change = after_change_then_stall


if __name__ == "__main__":
    stall_on_own_addition()
    from beanraft.node.cli import main

    sys.argv = ["beanraft", *sys.argv[1:]]
    main()
