"""The replicated state and its primitive transitions.

Theory of operation
-------------------
``State`` holds everything every replica must agree on: the clock, the id and epoch counters,
jobs, tubes (in ``list-tubes`` order), sessions, the global queue of waiting sessions, and the
session tokens and put keys of the extensions (extensions.py). The
command handlers (handlers.py, waiting.py, machine.py) never edit a job's state directly; they
call the ``make_*`` / ``reserve`` / ``expire`` / ``delete`` primitives here, which keep four things
in step: the job's fields, the per-tube and global gauges, the ordered structures, and the timers.

Ordered structures are binary heaps with lazy deletion:

* per tube, ready jobs as ``(pri, id, gen)`` and delayed jobs as ``((deadline_ns, order), id,
  gen)``, ``order`` as for timers below (what ``peek-delayed`` shows and ``kick`` takes first).
  A tube's ready jobs are split in two: ``fresh``, a FIFO that only ever grows at its tail with
  an entry above its last one, so it stays sorted, and the ``ready`` heap for the rest. Jobs put
  with one priority, the common case, have growing ids and all go to the FIFO, which takes and
  gives them in O(1); the most urgent ready job is the smaller of the two heads;
* per session, reserved jobs as ``(deadline_ns, id, gen)``;
* one machine-wide timer heap of ``(fire_ns, kind, order, key, gen)``.

Every placement of a job gets a fresh ``gen`` from a machine-wide counter, so a heap entry is
live exactly when its job still exists with the same ``gen``. Dead entries are dropped when they
reach the top, and a heap is filtered whenever it holds more than twice its live entries plus a
constant, so memory stays linear and each operation is O(log n) amortized. ``gen`` values are
never observable and never written to a snapshot: every ordering that matters compares the
observable prefix — (pri, id), (deadline, order, id), (deadline, id) for a session's
reservations, or (fire time, kind, order, key) for timers —
and a valid entry is unique for that prefix.

Timers fire at ``fire_ns <= now``: a delayed job at its deadline, a reservation one nanosecond
after its deadline (TTR expiry is strict, §5), a pause at its end, a waiting session at its wake
time, a detached session at the end of its grace. Equal times break ties by kind in that order,
then by ``order``, then by job id, tube name, wait ticket or sid.

``order`` is where a delay, a TTR deadline or a pause stands in the order they were set: under
rules version 3 (machine.py) every ``make_delayed``, ``make_reserved``, ``touch`` and ``pause``
takes the next value of the replicated counter ``timers_set``, so timers that a batch sets with
equal durations — they share the batch's time, so they end at the same nanosecond — end in the
order they were set, as beanstalkd 1.12's nanosecond clock makes them end. A timer moved with
its deadline unchanged (a delayed job moved to another tube, a reservation a resumed session
takes over, a snapshot read back) keeps its order. Under rules 1 and 2 every order is 0, so ties
break by key alone, as they always did; timers set before the switch to 3 keep their 0 and so
end, at equal times, before every timer set after it, among themselves by key. A wait's wake-up
and a detached session's grace keep order 0: they are no beanstalkd timers.

Tubes live while anything refers to them: sessions using or watching them, jobs in them, and
(for "default") the server itself. ``release_tube`` destroys an unreferenced tube at once,
swap-removing it from ``tube_list`` as beanstalkd does (§3.2).
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush

from .commands import URGENT_PRI
from .model import BURIED, DELAYED, READY, RESERVED, Job, Session, Tube

# Timer kinds, in the order they fire when due at the same nanosecond.
T_DELAY, T_TTR, T_PAUSE, T_WAKE, T_DETACH = 0, 1, 2, 3, 4

_SLACK = 32  # dead heap entries tolerated on top of the 2x bound, so small heaps never filter


def _append(heap: list, entry: tuple) -> None:
    heap.append(entry)


def _compact(heap: list, live: int, is_live) -> None:
    """Filter dead entries out of ``heap`` once they outnumber the live ones."""
    if len(heap) > 2 * live + _SLACK:
        heap[:] = [entry for entry in heap if is_live(entry)]
        heapify(heap)


class State:
    """All replicated state of one BeanRaft cluster and its primitive, invariant-keeping edits."""

    def __init__(self, max_job_size: int = 65535) -> None:
        self.max_job_size = max_job_size
        self.now_ns = 0
        self.next_id = 1
        self.next_epoch = 1
        self.next_ticket = 1
        self.rules = 1  # the rules version applied (machine.py); every log starts at 1
        self.rules_needed = 0  # a version this code cannot apply, once the log asked for one
        self.timers_set = 0  # delays, TTRs and pauses set under rules 3: the last one's order
        self.job_timeouts = 0
        self.total_jobs = 0
        self.body_bytes = 0  # sum of the live jobs' body sizes (sizes the next snapshot)
        self.epochs: dict[int, str] = {}  # live epoch -> its node's name
        self.node_epoch: dict[str, int] = {}  # node name -> its live epoch
        self.jobs: dict[int, Job] = {}  # in id order: ids only grow, restore inserts sorted
        self.tubes: dict[str, Tube] = {}
        self.tube_list: list[Tube] = []
        self.sessions: dict[int, Session] = {}
        self.waiting: dict[int, Session] = {}  # wait ticket -> session, oldest first
        self.tokens: dict[str, int] = {}  # session token -> sid (extensions.py)
        self.dedup: dict[str, tuple[int, int]] = {}  # put key -> (job id, expiry), oldest first
        self.detached: dict[int, int] = {}  # sid -> end of its grace (machine.py)
        self.timers: list[tuple] = []
        self.candidates: dict[str, Tube] = {}  # tubes that may now match a waiter (waiting.py)
        self.events: list[tuple[int, tuple]] = []  # replies owed to waiters, this batch only
        self.ready_ct = self.urgent_ct = self.reserved_ct = self.delayed_ct = self.buried_ct = 0
        self._gen = 0
        self._push = heappush  # list.append while bulk loading (see begin_bulk)
        self.ref_tube("default")

    # ----------------------------------------------------------------- tubes

    def ref_tube(self, name: str) -> Tube:
        """Return the tube called ``name``, creating it at the end of the tube list if needed."""
        tube = self.tubes.get(name)
        if tube is None:
            tube = Tube(name, len(self.tube_list))
            self.tubes[name] = tube
            self.tube_list.append(tube)
        return tube

    def release_tube(self, tube: Tube) -> None:
        """Destroy ``tube`` if nothing refers to it any more (its counters and pause go too)."""
        if tube.name == "default" or tube.using_ct or tube.watching_ct or tube.job_count():
            return
        last = self.tube_list.pop()
        if last is not tube:
            self.tube_list[tube.index] = last
            last.index = tube.index
        del self.tubes[tube.name]
        self.candidates.pop(tube.name, None)

    def pause(self, tube: Tube, delay_ns: int) -> None:
        """Pause ``tube`` for ``delay_ns`` (at least 1 ns) from now."""
        tube.cmd_pause += 1
        self.arm_pause(tube, delay_ns, self.now_ns + delay_ns)

    def arm_pause(self, tube: Tube, pause_ns: int, unpause_at_ns: int,
                  order: int | None = None) -> None:
        """Set ``tube``'s pause and the timer that ends it, the next one set unless ``order``
        says where it stands (see the module docstring)."""
        tube.pause_ns = pause_ns
        tube.unpause_at_ns = unpause_at_ns
        tube.pause_gen = self._next_gen()
        tube.pause_order = self._next_order() if order is None else order
        self._push_timer((unpause_at_ns, T_PAUSE, tube.pause_order, tube.name, tube.pause_gen))

    def unpause(self, tube: Tube) -> None:
        """End ``tube``'s pause; its waiting sessions may now be served."""
        tube.pause_ns = tube.unpause_at_ns = tube.pause_gen = tube.pause_order = 0
        if tube.waiters:
            self.candidates[tube.name] = tube

    # ------------------------------------------------------------ job lookup

    def _live_job_entry(self, entry: tuple) -> bool:
        job = self.jobs.get(entry[1])
        return job is not None and job.gen == entry[2]

    def _top_job(self, heap: list) -> Job | None:
        """The job of the first live ``(key, id, gen)`` entry of ``heap``, dropping dead ones."""
        jobs = self.jobs
        while heap:
            _, job_id, gen = heap[0]
            job = jobs.get(job_id)
            if job is not None and job.gen == gen:
                return job
            heappop(heap)
        return None

    def min_ready(self, tube: Tube) -> Job | None:
        """The most urgent ready job of ``tube``: minimum (pri, id), pause ignored."""
        fresh, jobs = tube.fresh, self.jobs
        while fresh:
            entry = fresh[0]
            job = jobs.get(entry[1])
            if job is not None and job.gen == entry[2]:
                ready = tube.ready
                other = self._top_job(ready)
                return other if other is not None and ready[0] < entry else job
            fresh.popleft()
        return self._top_job(tube.ready)

    def min_delayed(self, tube: Tube) -> Job | None:
        """The delayed job of ``tube`` that becomes ready first: minimum (deadline, order, id)."""
        return self._top_job(tube.delayed)

    def oldest_buried(self, tube: Tube) -> Job | None:
        """The job buried longest ago in ``tube``."""
        return self.jobs[next(iter(tube.buried))] if tube.buried else None

    def soonest_reserved(self, session: Session) -> Job | None:
        """The job held by ``session`` whose TTR ends first: minimum (deadline, id)."""
        return self._top_job(session.deadlines)

    # ------------------------------------------------------------- job edits

    def _next_gen(self) -> int:
        self._gen += 1
        return self._gen

    def _next_order(self) -> int:
        """The order of a timer set now: the next one under rules 3, else 0 (module doc)."""
        if self.rules < 3:
            return 0
        self.timers_set += 1
        return self.timers_set

    def _leave(self, job: Job) -> None:
        """Take ``job`` out of its current state's gauges and structures (heaps go lazily)."""
        tube, state = job.tube, job.state
        if state is READY:
            tube.ready_ct -= 1
            self.ready_ct -= 1
            if job.pri < URGENT_PRI:
                tube.urgent_ct -= 1
                self.urgent_ct -= 1
        elif state is DELAYED:
            tube.delayed_ct -= 1
            self.delayed_ct -= 1
        elif state is RESERVED:
            tube.reserved_ct -= 1
            self.reserved_ct -= 1
            del job.holder.reserved[job.id]
            job.holder = None
        elif state is BURIED:
            del tube.buried[job.id]
            self.buried_ct -= 1
        job.state = None
        job.gen = self._next_gen()  # every heap entry of the old placement is now dead

    def add_job(self, job: Job) -> None:
        """Register a new job; the caller places it with ``make_ready`` or ``make_delayed``."""
        self.jobs[job.id] = job
        self.body_bytes += len(job.body)

    def make_ready(self, job: Job) -> None:
        """Put ``job`` in its tube's ready heap; waiting sessions may be served from it."""
        self._leave(job)
        tube = job.tube
        job.state, job.deadline_ns = READY, 0
        tube.ready_ct += 1
        self.ready_ct += 1
        if job.pri < URGENT_PRI:
            tube.urgent_ct += 1
            self.urgent_ct += 1
        entry = (job.pri, job.id, job.gen)
        fresh = tube.fresh
        if not fresh or fresh[-1] < entry:
            fresh.append(entry)  # still sorted: see the module docstring
            if len(fresh) > 2 * tube.ready_ct + _SLACK:
                live = self._live_job_entry
                tube.fresh = deque(item for item in fresh if live(item))
        else:
            ready = tube.ready
            self._push(ready, entry)
            if len(ready) > 2 * tube.ready_ct + _SLACK:  # _compact's own test, without its call
                _compact(ready, tube.ready_ct, self._live_job_entry)
        if tube.waiters:  # without a waiter it cannot match until one comes (waiting.py)
            self.candidates[tube.name] = tube

    def make_delayed(self, job: Job, deadline_ns: int, order: int | None = None) -> None:
        """Delay ``job`` until ``deadline_ns``, the next timer set unless ``order`` says where
        it stands (see the module docstring)."""
        self._leave(job)
        tube = job.tube
        job.state, job.deadline_ns = DELAYED, deadline_ns
        job.timer_order = order = self._next_order() if order is None else order
        tube.delayed_ct += 1
        self.delayed_ct += 1
        self._push(tube.delayed, ((deadline_ns, order), job.id, job.gen))
        _compact(tube.delayed, tube.delayed_ct, self._live_job_entry)
        self._push_timer((deadline_ns, T_DELAY, order, job.id, job.gen))

    def make_reserved(self, job: Job, session: Session, deadline_ns: int,
                      order: int | None = None) -> None:
        """Hand ``job`` to ``session`` until ``deadline_ns`` (no counters change); its TTR is
        the next timer set unless ``order`` says where it stands."""
        self._leave(job)
        tube = job.tube
        job.state, job.holder = RESERVED, session
        tube.reserved_ct += 1
        self.reserved_ct += 1
        session.reserved[job.id] = None
        self._arm_ttr(job, deadline_ns, order)

    def _arm_ttr(self, job: Job, deadline_ns: int, order: int | None) -> None:
        """Set reserved ``job``'s deadline: its holder's heap entry and its TTR timer."""
        job.deadline_ns = deadline_ns
        job.timer_order = order = self._next_order() if order is None else order
        session = job.holder
        self._push(session.deadlines, (deadline_ns, job.id, job.gen))
        _compact(session.deadlines, len(session.reserved), self._live_job_entry)
        self._push_timer((deadline_ns + 1, T_TTR, order, job.id, job.gen))

    def make_buried(self, job: Job) -> None:
        """Append ``job`` to the tail of its tube's buried FIFO."""
        self._leave(job)
        job.state, job.deadline_ns = BURIED, 0
        job.tube.buried[job.id] = None
        self.buried_ct += 1

    def reserve(self, job: Job, session: Session) -> None:
        """Reserve ``job`` for ``session`` for one TTR from now and count the reservation."""
        job.reserves += 1
        self.make_reserved(job, session, self.now_ns + job.ttr_ns)

    def touch(self, job: Job) -> None:
        """Give the holder of reserved ``job`` a full TTR from now.

        The job keeps its place in ``holder.reserved``, the order a close hands jobs back in
        (rules version 2): beanstalkd 1.12 changes only the deadline of a touched job. Its TTR
        is set again, so under rules 3 it ends after every TTR set before the touch.
        """
        job.gen = self._next_gen()  # the old deadline's heap entry and timer are now dead
        self._arm_ttr(job, self.now_ns + job.ttr_ns, None)

    def expire(self, job: Job) -> None:
        """TTR of reserved ``job`` ran out: back to ready, counted as a timeout."""
        job.timeouts += 1
        self.job_timeouts += 1
        self.make_ready(job)

    def move(self, job: Job, tube: Tube) -> None:
        """Put unreserved ``job`` into ``tube`` in the state it had: a ready job is ready there,
        a delayed one keeps its deadline, a buried one goes to the tail of the buried list.
        The old tube may be destroyed with it; counters of the job and of the tubes stay."""
        old, state, deadline_ns = job.tube, job.state, job.deadline_ns
        self._leave(job)
        job.tube = tube
        if state is READY:
            self.make_ready(job)
        elif state is DELAYED:
            self.make_delayed(job, deadline_ns, job.timer_order)  # the same timer, moved
        else:
            self.make_buried(job)
        self.release_tube(old)

    def delete(self, job: Job) -> None:
        """Remove ``job`` for good; its tube may be destroyed with it."""
        self._leave(job)
        del self.jobs[job.id]
        self.body_bytes -= len(job.body)
        job.tube.cmd_delete += 1
        self.release_tube(job.tube)

    # ----------------------------------------------------------------- timers

    def _live_timer(self, entry: tuple) -> bool:
        _, kind, _, key, gen = entry
        if kind == T_DELAY or kind == T_TTR:
            job = self.jobs.get(key)
            return job is not None and job.gen == gen
        if kind == T_PAUSE:
            tube = self.tubes.get(key)
            return tube is not None and tube.pause_gen == gen
        if kind == T_DETACH:
            return self.detached.get(key) == entry[0]
        return key in self.waiting

    def _push_timer(self, entry: tuple) -> None:
        self._push(self.timers, entry)
        live_bound = (self.delayed_ct + self.reserved_ct + len(self.tubes) + len(self.waiting)
                      + len(self.detached))
        _compact(self.timers, live_bound, self._live_timer)

    def push_wake(self, wake_ns: int, ticket: int, sid: int) -> None:
        """Arm the wake-up of the session waiting with ``ticket``."""
        self._push_timer((wake_ns, T_WAKE, 0, ticket, sid))

    def detach(self, sid: int, until_ns: int) -> None:
        """Keep session ``sid``, which no connection carries any more, until ``until_ns``."""
        self.detached[sid] = until_ns
        self._push_timer((until_ns, T_DETACH, 0, sid, 0))

    def next_timer(self) -> tuple | None:
        """The earliest live timer ``(fire_ns, kind, order, key, gen)``, or None."""
        heap = self.timers
        while heap:
            if self._live_timer(heap[0]):
                return heap[0]
            heappop(heap)
        return None

    def pop_timer(self) -> None:
        """Drop the timer ``next_timer`` just returned."""
        heappop(self.timers)

    # ------------------------------------------------------------ bulk loading

    def begin_bulk(self) -> None:
        """Start loading many jobs at once: heap entries are appended, heapified at the end."""
        self._push = _append

    def end_bulk(self) -> None:
        """Turn every list appended to since ``begin_bulk`` back into a heap."""
        for tube in self.tube_list:
            heapify(tube.ready)
            heapify(tube.delayed)
        for session in self.sessions.values():
            heapify(session.deadlines)
        heapify(self.timers)
        self._push = heappush
