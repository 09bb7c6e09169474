"""Snapshot codec: all replicated state as canonical bytes, and back.

Format: one version byte (5; 4 for a state under rules version 2, 3 for one still under rules
version 1), then one msgpack array::

    [max_job_size, now_ns, next_id, next_epoch, job_timeouts, total_jobs,
     epochs,    # [[epoch, node_name], ...]                          live ones, by epoch
     tubes,     # [[name, total_jobs, cmd_delete, cmd_pause, pause_ns, unpause_at_ns,
                #   [buried job ids, oldest first]], ...]            in list-tubes order
     sessions,  # [[sid, used, [watched names],
                #   wait_wake_ns, wait_until_ns, wait_seq, seq_floor,
                #   [[seq, reply], ...], token], ...]                by sid, replies by seq
     waiting,   # [sid, ...]                                        oldest waiter first
     jobs,      # [[id, tube, state, pri, delay_ns, ttr_ns, body, created_ns, deadline_ns,
                #   holder_sid, reserves, timeouts, releases, buries, kicks], ...]   by id
     dedup,     # [[put key, job id, expiry_ns], ...]                oldest key first
     detached,  # [[sid, until_ns], ...]                              by sid
     rules,     # the rules version (machine.py)                     from version 4
     reserved,  # [[sid, [job ids, first reserved first]], ...]      from version 4, by sid
     timers_set,    # the order of the last timer set (state.py)     version 5 only
     job_orders,    # [[job id, order], ...]   delayed and reserved, order not 0, by id; v5
     pause_orders]  # [[tube name, order], ...]  paused, order not 0, list-tubes order; v5

``token`` is None for a session never given one. Version 3 is the first 13 fields, for rules
version 1: a cluster whose nodes do not all read version 4 yet never leaves rules version 1, so
its snapshots stay readable by every node. Version 2 (read only) is the same without
``detached``; version 1 also without the session tokens and without ``dedup``. ``reserved``
keeps the order a session reserved its jobs in, which rules version 2 hands them back in when
it closes (handlers.py); version 3 restores that order as the job ids' order. Version 5, for
rules version 3 and above, adds where each delay, TTR and pause stands in the order timers were
set (state.py); an order left out is 0, as every order is in versions 1 to 4. Each format is
written only once the cluster's rules need it, so a node of the version before reads every
snapshot until the cluster switches, which waits for every member to run this code.

``state`` is 0 ready, 1 reserved, 2 delayed, 3 buried; ``holder_sid`` is 0 unless reserved;
``deadline_ns`` is 0 for ready and buried jobs; absent waits are None, None, 0.

Only observable state is written — never heaps, ``gen`` values or wait tickets, which restore
rebuilds — so two machines with equal observable state give equal bytes whatever garbage their
heaps hold. Never pickle: a code change must not change how an old snapshot reads.

Restore places every job through the same ``State`` primitives as live commands (in bulk mode,
heapifying once at the end) and then checks what a damaged snapshot could get wrong cheaply:
every job placed, every tube referenced, every session of a live epoch. The full O(n log n)
``invariants.problems`` stays in the tests. Both directions pause the cyclic garbage collector,
which would otherwise rescan the growing object graph again and again (3x slower at 100k jobs).
"""

from __future__ import annotations

import gc
import hashlib
from contextlib import contextmanager
from collections.abc import Callable, Iterator

import msgpack

from .commands import MAX_RULES, RULES_SUPPORTED
from .model import BURIED, DELAYED, READY, RESERVED, STATES, Job, Session
from .state import State
from .waiting import enqueue

class NewerRules(ValueError):
    """A state that follows a rules version this code cannot apply: not damage, the work of a
    newer BeanRaft."""

    def __init__(self, rules: int) -> None:
        super().__init__(f"the state follows rules version {rules}, above {RULES_SUPPORTED}, "
                         "the highest this BeanRaft applies: run a newer version")
        self.rules = rules


VERSION = 5
_READABLE = (1, 2, 3, 4, 5)
_FIELDS = {4: 15, 5: 18}  # fields of the formats that carry a rules version
_STATE_CODE = {state: code for code, state in enumerate(STATES)}


def _session_record(session: Session) -> list:
    return [
        session.sid, session.used.name, [tube.name for tube in session.watch],
        session.wait_wake_ns, session.wait_until_ns, session.wait_seq, session.seq_floor,
        [[seq, session.replies[seq]] for seq in sorted(session.replies)], session.token,
    ]


@contextmanager
def _collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def dump(state: State) -> bytes:
    """Encode ``state`` canonically (see the module docstring)."""
    with _collector_paused():
        return _dump(state)


def _dump(state: State) -> bytes:
    code = _STATE_CODE
    jobs = [
        [job.id, job.tube.name, code[job.state], job.pri, job.delay_ns, job.ttr_ns, job.body,
         job.created_ns, job.deadline_ns, job.holder.sid if job.holder else 0,
         job.reserves, job.timeouts, job.releases, job.buries, job.kicks]
        for job in state.jobs.values()
    ]
    body = [
        state.max_job_size, state.now_ns, state.next_id, state.next_epoch,
        state.job_timeouts, state.total_jobs,
        [[epoch, state.epochs[epoch]] for epoch in sorted(state.epochs)],
        [[tube.name, tube.total_jobs, tube.cmd_delete, tube.cmd_pause, tube.pause_ns,
          tube.unpause_at_ns, list(tube.buried)] for tube in state.tube_list],
        [_session_record(state.sessions[sid]) for sid in sorted(state.sessions)],
        [session.sid for session in state.waiting.values()],
        jobs,
        [[key, job_id, expiry_ns] for key, (job_id, expiry_ns) in state.dedup.items()],
        [[sid, state.detached[sid]] for sid in sorted(state.detached)],
    ]
    if state.rules < 2:
        return bytes([3]) + msgpack.packb(body, use_bin_type=True)
    body.append(state.rules)
    body.append([[sid, list(state.sessions[sid].reserved)] for sid in sorted(state.sessions)
                 if state.sessions[sid].reserved])
    if state.rules < 3:
        return bytes([4]) + msgpack.packb(body, use_bin_type=True)
    body.append(state.timers_set)
    body.append([[job.id, job.timer_order] for job in state.jobs.values()
                 if job.timer_order and (job.state is DELAYED or job.state is RESERVED)])
    body.append([[tube.name, tube.pause_order] for tube in state.tube_list
                 if tube.pause_order])
    return bytes([VERSION]) + msgpack.packb(body, use_bin_type=True)


def digest(state: State) -> str:
    """sha256 hex digest of ``dump(state)``."""
    return hashlib.sha256(dump(state)).hexdigest()


def load(data: bytes, make: Callable[[int], State]) -> State:
    """Decode a snapshot into ``make(max_job_size)``; ValueError for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 1:
        raise ValueError("a snapshot is a non-empty bytes object")
    version = data[0]
    if version not in _READABLE:
        raise ValueError(f"unknown snapshot version {version}")
    try:
        with _collector_paused():
            body = msgpack.unpackb(bytes(data[1:]), raw=False, use_list=False)
            rules, reserved, timers = 1, (), (0, (), ())
            if version >= 4:
                if len(body) != _FIELDS[version]:
                    raise ValueError(f"a version {version} snapshot has {_FIELDS[version]} fields")
                body, (rules, reserved), timers = body[:13], body[13:15], body[15:] or timers
                _check_rules(rules, version)
                version = 3
            orders = _timer_orders(*timers)
            state = _build(_upgrade(version, body), make, orders)
            state.rules = rules
            state.timers_set = timers[0]
            _order_reservations(state, reserved)
            _check_orders(state, orders)
    except NewerRules:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError,
            msgpack.UnpackException) as exc:
        raise ValueError(f"corrupt snapshot: {exc!r}") from exc
    _check_references(state)
    return state


def _check_rules(rules: object, version: int) -> None:
    if type(rules) is not int or not 1 <= rules <= MAX_RULES:
        raise ValueError(f"rules version {rules!r} is not one")
    if rules > RULES_SUPPORTED:
        # Not damage: the state was made by a newer BeanRaft, whose rules this one cannot apply.
        raise NewerRules(rules)
    if (rules >= 3) != (version >= 5):
        raise ValueError(f"a version {version} snapshot cannot hold rules version {rules}")


def _timer_orders(timers_set: object, jobs: tuple, tubes: tuple) -> tuple[dict, dict]:
    """The orders of a version 5 snapshot's timers, by job id and by tube name (state.py)."""
    if type(timers_set) is not int or timers_set < 0:
        raise ValueError(f"timers_set {timers_set!r} is not a count")
    orders = dict(jobs), dict(tubes)
    for records, found in zip((jobs, tubes), orders, strict=True):
        if len(found) != len(records) or not all(type(order) is int and 0 < order <= timers_set
                                                  for order in found.values()):
            raise ValueError("a timer's order is repeated, not a number or after the last set")
    return orders


def _check_orders(state: State, orders: tuple[dict, dict]) -> None:
    """Every order read belongs to a timer: a delayed or reserved job, a paused tube."""
    jobs, tubes = orders
    for job_id in jobs:
        job = state.jobs.get(job_id)
        if job is None or not (job.state is DELAYED or job.state is RESERVED):
            raise ValueError(f"job {job_id} has a timer's order but no timer")
    for name in tubes:
        if name not in state.tubes or not state.tubes[name].pause_ns:
            raise ValueError(f"tube {name!r} has a pause's order but no pause")


def _order_reservations(state: State, records: tuple) -> None:
    """Put each session's reserved jobs back in the order it reserved them (version 4)."""
    for sid, order in records:
        session = state.sessions[sid]
        if len(order) != len(session.reserved) or set(order) != set(session.reserved):
            raise ValueError(f"session {sid}'s reservation order names other jobs")
        session.reserved = dict.fromkeys(order)


def _check_references(state: State) -> None:
    """The cheap consistency checks of a restored state (see the module docstring)."""
    placed = state.ready_ct + state.reserved_ct + state.delayed_ct + state.buried_ct
    if placed != len(state.jobs):
        raise ValueError(f"inconsistent snapshot: {len(state.jobs) - placed} job(s) unplaced")
    for tube in state.tube_list:
        if tube.name != "default" and not (tube.using_ct or tube.watching_ct
                                           or tube.job_count()):
            raise ValueError(f"inconsistent snapshot: tube {tube.name} is unreferenced")
    if "default" not in state.tubes or len(state.node_epoch) != len(state.epochs):
        raise ValueError("inconsistent snapshot: default tube or epochs")
    if any(sid >> 32 not in state.epochs and sid not in state.detached
           for sid in state.sessions):
        raise ValueError("inconsistent snapshot: a session of a dead epoch")


def _upgrade(version: int, body: tuple) -> tuple:
    """An older body in version 3's shape: version 1 has no session token and no key
    remembered, versions 1 and 2 no detached session."""
    if version == 1:
        if len(body) != 11:
            raise ValueError("a version 1 snapshot has 11 fields")
        sessions = tuple(tuple(record) + (None,) for record in body[8])
        body = body[:8] + (sessions,) + body[9:] + ((),)
        version = 2
    if version == 2:
        if len(body) != 12:
            raise ValueError("a version 2 snapshot has 12 fields")
        body = body + ((),)
    return body


def _build(body: tuple, make: Callable[[int], State], orders: tuple[dict, dict]) -> State:
    (max_job_size, now_ns, next_id, next_epoch, job_timeouts, total_jobs,
     epochs, tubes, sessions, waiting, jobs, dedup, detached) = body
    if not all(type(v) is int for v in body[:6]):
        raise ValueError("counters must be integers")
    state = make(max_job_size)
    state.now_ns, state.next_id, state.next_epoch = now_ns, next_id, next_epoch
    state.job_timeouts, state.total_jobs = job_timeouts, total_jobs
    for epoch, node in epochs:
        state.epochs[epoch] = node
        state.node_epoch[node] = epoch
    state.tubes, state.tube_list = {}, []
    for name, total, cmd_delete, cmd_pause, pause_ns, unpause_at_ns, _ in tubes:
        if name in state.tubes:
            raise ValueError(f"tube {name!r} twice")
        tube = state.ref_tube(name)
        tube.total_jobs, tube.cmd_delete, tube.cmd_pause = total, cmd_delete, cmd_pause
        if pause_ns:
            state.arm_pause(tube, pause_ns, unpause_at_ns, orders[1].get(name, 0))
    for record in sessions:
        _build_session(state, record)
    for sid in waiting:
        session = state.sessions[sid]
        if session.wait_ticket:
            raise ValueError(f"session {sid} waits twice")
        enqueue(state, session, session.wait_wake_ns, session.wait_until_ns)
    state.begin_bulk()
    _build_jobs(state, jobs, orders[0])
    for tube_record in tubes:
        tube = state.tubes[tube_record[0]]
        for job_id in tube_record[6]:
            job = state.jobs[job_id]
            if job.tube is not tube or job.state is not None:
                raise ValueError(f"buried job {job_id} misplaced")
            state.make_buried(job)
    state.end_bulk()
    state.candidates.clear()  # a snapshot is taken between batches, when nothing can match
    for key, job_id, expiry_ns in dedup:
        if key in state.dedup or type(job_id) is not int or type(expiry_ns) is not int:
            raise ValueError(f"put key {key!r} twice or malformed")
        state.dedup[key] = (job_id, expiry_ns)
    for sid, until_ns in detached:
        if sid not in state.sessions or sid in state.detached or type(until_ns) is not int:
            raise ValueError(f"detached session {sid} unknown, twice or malformed")
        state.detach(sid, until_ns)
    return state


def _build_session(state: State, record: tuple) -> None:
    sid, used, watch, wake_ns, until_ns, wait_seq, seq_floor, replies, token = record
    if sid in state.sessions:
        raise ValueError(f"session {sid} twice")
    session = Session(sid, state.tubes[used])
    session.used.using_ct += 1
    session.watch = [state.tubes[name] for name in watch]
    for tube in session.watch:
        tube.watching_ct += 1
    session.wait_wake_ns, session.wait_until_ns = wake_ns, until_ns
    session.wait_seq, session.seq_floor = wait_seq, seq_floor
    session.replies = {seq: tuple(reply) for seq, reply in replies}
    if token is not None:
        if not isinstance(token, str) or token in state.tokens:
            raise ValueError(f"session {sid} has a bad or repeated token")
        session.token = token
        state.tokens[token] = sid
    state.sessions[sid] = session


def _build_jobs(state: State, records: tuple, orders: dict) -> None:
    tubes, sessions, previous_id = state.tubes, state.sessions, 0
    for (job_id, tube_name, code, pri, delay_ns, ttr_ns, body, created_ns, deadline_ns,
         holder, reserves, timeouts, releases, buries, kicks) in records:
        if not previous_id < job_id < state.next_id:
            raise ValueError(f"job id {job_id} out of order")
        previous_id = job_id
        job = Job(job_id, tubes[tube_name], pri, delay_ns, ttr_ns, body, created_ns)
        job.reserves, job.timeouts, job.releases = reserves, timeouts, releases
        job.buries, job.kicks = buries, kicks
        state.add_job(job)
        if not 0 <= code < len(STATES):
            raise ValueError(f"job {job_id} has state code {code}")
        job_state = STATES[code]
        if job_state is READY:
            state.make_ready(job)
        elif job_state is DELAYED:
            state.make_delayed(job, deadline_ns, orders.get(job_id, 0))
        elif job_state is RESERVED:
            state.make_reserved(job, sessions[holder], deadline_ns, orders.get(job_id, 0))
        elif job_state is not BURIED:
            raise ValueError(f"job {job_id} has no state")
