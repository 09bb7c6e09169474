"""Helpers that drive plain pysyncobj 0.3.17 (no BeanRaft code) to reproduce its defects.

A single-node ``Counter`` ticked by hand (``autoTick=False``) on a loopback port: enough to show
what pysyncobj's own journal, snapshots and apply loop do, with nothing of ours in the way.
"""

from __future__ import annotations

import socket
import time

import pysyncobj.journal as pso_journal
import pysyncobj.syncobj as pso_syncobj
from pysyncobj import SyncObj, SyncObjConf, replicated

# BeanRaft replaces pysyncobj's journal factory when beanraft.replication.raft is imported; the
# upstream reproductions must run against the original one.
UPSTREAM_CREATE_JOURNAL = pso_journal.createJournal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counter(SyncObj):
    """The smallest replicated object: an integer and an increment."""

    def __init__(self, address, conf, fail_on=None, peers=()):
        self.fail_on = fail_on  # set before SyncObj.__init__: not part of the replicated state
        self.calls = 0
        super().__init__(address, list(peers), conf)
        self.value = 0

    @replicated
    def inc(self, amount):
        self.calls += 1
        if self.fail_on is not None and self.value + amount == self.fail_on:
            raise RuntimeError("the state machine raised")
        self.value += amount
        return self.value


def upstream_counter(port: int, journal=None, dump=None, fail_on=None, **extra) -> Counter:
    """A pysyncobj Counter built with pysyncobj's own journal (not BeanRaft's)."""
    saved = pso_syncobj.createJournal
    pso_syncobj.createJournal = UPSTREAM_CREATE_JOURNAL
    try:
        conf = SyncObjConf(autoTick=False, journalFile=journal, fullDumpFile=dump, useFork=False,
                           logCompactionMinEntries=extra.pop("compact", 10**9),
                           logCompactionMinTime=10**9, raftMinTimeout=0.04, raftMaxTimeout=0.08,
                           appendEntriesPeriod=0.01, **extra)
        return Counter(f"127.0.0.1:{port}", conf, fail_on)
    finally:
        pso_syncobj.createJournal = saved


def tick_until(obj: SyncObj, predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            obj.doTick(0.005)
        except Exception:
            pass  # what pysyncobj's own tick thread does since 0.3.14: log and tick again
        if predicate():
            return True
    return predicate()


def wait_leader(obj: SyncObj) -> None:
    assert tick_until(obj, lambda: obj._isLeader() and obj.isReady()), "no leader"


def apply_increments(obj: Counter, count: int, timeout: float = 5.0) -> list:
    """Apply ``count`` increments one at a time; return the (result, error) of each."""
    results = []
    for _ in range(count):
        box = []
        obj.inc(1, callback=lambda res, err: box.append((res, err)))
        tick_until(obj, lambda: bool(box), timeout=timeout)
        results.append(box[0] if box else (None, "timeout"))
    return results


def destroy(obj: SyncObj) -> None:
    obj.destroy()  # with autoTick=False this closes the transport and the journal at once
