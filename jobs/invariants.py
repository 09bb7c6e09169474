"""Consistency checks of the replicated state, for tests and for snapshots just read.

``problems(state)`` recounts everything the primitives of state.py maintain incrementally —
gauges, tube references, heaps, timers, waiting queues, epochs, session tokens, put keys — and
returns what disagrees.
It is O(size of the state), so ``apply_batch`` never calls it; tests call it after every step.
"""

from __future__ import annotations

import itertools
from collections import Counter

from .commands import URGENT_PRI
from .model import BURIED, DELAYED, READY, RESERVED
from .state import T_DELAY, T_DETACH, T_PAUSE, T_TTR, T_WAKE, State


def problems(state: State) -> list[str]:
    """Every broken invariant of ``state``, as sentences; empty when all hold."""
    found: list[str] = []
    _check_tubes(state, found)
    _check_jobs(state, found)
    _check_sessions(state, found)
    _check_timers(state, found)
    _check_served(state, found)
    return found


def _check_tubes(state: State, found: list[str]) -> None:
    if "default" not in state.tubes:
        found.append("tube default is missing")
    if sorted(state.tubes) != sorted(tube.name for tube in state.tube_list):
        found.append("tube list and tube table differ")
    for index, tube in enumerate(state.tube_list):
        if tube.index != index or state.tubes.get(tube.name) is not tube:
            found.append(f"tube {tube.name} misplaced in the tube list")
        if tube.name != "default" and not (tube.using_ct or tube.watching_ct or tube.job_count()):
            found.append(f"tube {tube.name} is unreferenced but alive")
        if bool(tube.pause_ns) != bool(tube.pause_gen):
            found.append(f"tube {tube.name} pause and pause timer disagree")


def _live(state: State, heap: list) -> list[int]:
    """Ids of the jobs with a live entry in a ``(key, id, gen)`` heap."""
    return [job_id for _, job_id, gen in heap
            if job_id in state.jobs and state.jobs[job_id].gen == gen]


def _check_jobs(state: State, found: list[str]) -> None:
    counts: Counter = Counter()
    ids = list(state.jobs)
    if ids != sorted(ids) or (ids and ids[-1] >= state.next_id):
        found.append("job ids out of order or not below next_id")
    for job in state.jobs.values():
        tube = job.tube
        if state.tubes.get(tube.name) is not tube:
            found.append(f"job {job.id} is in a dead tube")
        counts[tube.name, job.state] += 1
        counts[None, job.state] += 1
        if job.state is READY and job.pri < URGENT_PRI:
            counts[tube.name, "urgent"] += 1
            counts[None, "urgent"] += 1
        holder = job.holder
        if (job.state is RESERVED) != (holder is not None and job.id in holder.reserved
                                       and state.sessions.get(holder.sid) is holder):
            found.append(f"job {job.id} and its holder disagree")
        if job.state in (READY, BURIED) and job.deadline_ns:
            found.append(f"job {job.id} keeps a deadline it does not use")
    if state.body_bytes != sum(len(job.body) for job in state.jobs.values()):
        found.append("body_bytes is not the sum of the jobs' body sizes")
    gauges = {READY: "ready_ct", RESERVED: "reserved_ct", DELAYED: "delayed_ct",
              BURIED: "buried_ct", "urgent": "urgent_ct"}
    for name, attribute in gauges.items():
        if getattr(state, attribute) != counts[None, name]:
            found.append(f"global gauge {attribute} is wrong")
        for tube in state.tube_list:
            if getattr(tube, attribute) != counts[tube.name, name]:
                found.append(f"gauge {attribute} of tube {tube.name} is wrong")
    by_tube: dict = {}
    for job in state.jobs.values():
        by_tube.setdefault((job.tube.name, job.state), []).append(job.id)
    for tube in state.tube_list:
        if sorted(_live(state, tube.ready) + _live(state, tube.fresh)) \
                != by_tube.get((tube.name, READY), []):
            found.append(f"ready heap of tube {tube.name} is wrong")
        if any(a >= b for a, b in zip(tube.fresh, itertools.islice(tube.fresh, 1, None))):
            found.append(f"fresh queue of tube {tube.name} is out of order")
        if sorted(_live(state, tube.delayed)) != by_tube.get((tube.name, DELAYED), []):
            found.append(f"delayed heap of tube {tube.name} is wrong")
        if sorted(tube.buried) != by_tube.get((tube.name, BURIED), []):
            found.append(f"buried list of tube {tube.name} is wrong")


def _check_sessions(state: State, found: list[str]) -> None:
    using: Counter = Counter()
    watching: Counter = Counter()
    holds: dict = {}
    for job in state.jobs.values():
        if job.holder is not None:
            holds.setdefault(job.holder.sid, []).append(job.id)
    for sid, session in state.sessions.items():
        if ((sid >> 32) in state.epochs) == (sid in state.detached):
            found.append(f"session {sid} is detached with a live epoch or has no live epoch")
        if sid in state.detached and session.wait_ticket:
            found.append(f"detached session {sid} waits")
        using[session.used.name] += 1
        names = [tube.name for tube in session.watch]
        watching.update(names)
        if not names or len(set(names)) != len(names):
            found.append(f"watch list of session {sid} is empty or repeats a tube")
        held = holds.get(sid, [])
        if sorted(session.reserved) != held or sorted(_live(state, session.deadlines)) != held:
            found.append(f"reservations of session {sid} are wrong")
        seqs = list(session.replies)
        if len(seqs) > 64 or any(seq <= session.seq_floor for seq in seqs) or seqs != sorted(seqs):
            found.append(f"reply cache of session {sid} is wrong")
        ticket = session.wait_ticket
        if ticket and (state.waiting.get(ticket) is not session
                       or any(tube.waiters.get(ticket) is not session for tube in session.watch)):
            found.append(f"session {sid} is not queued where it waits")
    for tube in state.tube_list:
        if tube.using_ct != using[tube.name] or tube.watching_ct != watching[tube.name]:
            found.append(f"use/watch counts of tube {tube.name} are wrong")
        if any(s.wait_ticket != t or tube not in s.watch for t, s in tube.waiters.items()):
            found.append(f"waiters of tube {tube.name} are wrong")
    if any(s.wait_ticket != t for t, s in state.waiting.items()) or \
            list(state.waiting) != sorted(state.waiting):
        found.append("global waiting queue is wrong")
    tokens = {s.token: sid for sid, s in state.sessions.items() if s.token is not None}
    if tokens != state.tokens:
        found.append("session tokens and the token table differ")
    for key, (job_id, _expiry_ns) in state.dedup.items():
        if job_id >= state.next_id:
            found.append(f"put key {key} names a job id not yet given")
    for node, epoch in state.node_epoch.items():
        if state.epochs.get(epoch) != node:
            found.append(f"epoch of node {node} is wrong")
    if len(state.node_epoch) != len(state.epochs):
        found.append("epochs and nodes differ")


def _check_timers(state: State, found: list[str]) -> None:
    live_entries = [entry for entry in state.timers if state._live_timer(entry)]
    live = Counter((entry[1], entry[3]) for entry in live_entries)
    highest = max((entry[2] for entry in live_entries), default=0)
    if highest > (state.timers_set if state.rules >= 3 else 0):
        found.append("a timer stands after the last one set, or has an order below rules 3")
    for job in state.jobs.values():
        if job.state is DELAYED and live[T_DELAY, job.id] != 1:
            found.append(f"delayed job {job.id} has no single timer")
        if job.state is RESERVED and live[T_TTR, job.id] != 1:
            found.append(f"reserved job {job.id} has no single timer")
    for tube in state.tube_list:
        if tube.pause_ns and live[T_PAUSE, tube.name] != 1:
            found.append(f"paused tube {tube.name} has no single timer")
    for sid in state.detached:
        if sid not in state.sessions or live[T_DETACH, sid] != 1:
            found.append(f"detached session {sid} is unknown or has no single timer")
    for ticket, session in state.waiting.items():
        if live[T_WAKE, ticket] != (session.wait_wake_ns is not None):
            found.append(f"waiting session {session.sid} has a wrong wake timer")


def _check_served(state: State, found: list[str]) -> None:
    for tube in state.tube_list:
        if tube.waiters and not tube.pause_ns and tube.ready_ct:
            found.append(f"tube {tube.name} has a ready job and an unserved waiter")
