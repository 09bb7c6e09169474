"""The records of the job state machine: job, tube, session.

These are plain slotted records with no behaviour beyond a few derived values; every change to
them goes through ``State`` (state.py), which keeps gauges, heaps and timers in step.
"""

from __future__ import annotations

from collections import OrderedDict, deque

# Job states, spelled as ``stats-job`` shows them.
READY = "ready"
RESERVED = "reserved"
DELAYED = "delayed"
BURIED = "buried"
STATES = (READY, RESERVED, DELAYED, BURIED)


class Job:
    """One job. ``gen`` identifies its current placement (see state.py); it is never observable."""

    __slots__ = (
        "id", "tube", "state", "pri", "delay_ns", "ttr_ns", "body", "created_ns", "deadline_ns",
        "holder", "reserves", "timeouts", "releases", "buries", "kicks", "gen", "timer_order",
    )

    def __init__(self, job_id: int, tube: Tube, pri: int, delay_ns: int, ttr_ns: int,
                 body: bytes, created_ns: int) -> None:
        self.id = job_id
        self.tube = tube
        self.state: str | None = None
        self.pri = pri
        self.delay_ns = delay_ns  # as last set by put or release; kept after the job is ready
        self.ttr_ns = ttr_ns
        self.body = body
        self.created_ns = created_ns
        self.deadline_ns = 0  # delay end (delayed) or TTR end (reserved); 0 in other states
        self.holder: Session | None = None  # the session that reserved it
        self.reserves = 0
        self.timeouts = 0
        self.releases = 0
        self.buries = 0
        self.kicks = 0
        self.gen = 0
        self.timer_order = 0  # where its delay or TTR stands in the order timers were set


class Tube:
    """A tube: its ordered jobs, its waiting sessions, its gauges, counters and pause."""

    __slots__ = (
        "name", "index", "ready", "fresh", "delayed", "buried", "waiters",
        "ready_ct", "urgent_ct", "reserved_ct", "delayed_ct", "using_ct", "watching_ct",
        "total_jobs", "cmd_delete", "cmd_pause", "pause_ns", "unpause_at_ns", "pause_gen",
        "pause_order",
    )

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index  # position in State.tube_list, for swap-remove
        self.ready: list[tuple[int, int, int]] = []  # heap of (pri, id, gen)
        self.fresh: deque[tuple[int, int, int]] = deque()  # new jobs' (pri, id, gen), sorted
        self.delayed: list[tuple[tuple[int, int], int, int]] = []  # ((deadline_ns, order), id, gen)
        self.buried: OrderedDict[int, None] = OrderedDict()  # job ids, oldest burial first
        self.waiters: dict[int, Session] = {}  # wait ticket -> session; oldest ticket first
        self.ready_ct = 0
        self.urgent_ct = 0
        self.reserved_ct = 0
        self.delayed_ct = 0
        self.using_ct = 0
        self.watching_ct = 0
        self.total_jobs = 0
        self.cmd_delete = 0
        self.cmd_pause = 0
        self.pause_ns = 0  # pause duration while paused, else 0
        self.unpause_at_ns = 0
        self.pause_gen = 0  # identifies the live pause timer; 0 when not paused
        self.pause_order = 0  # where the pause stands in the order timers were set (state.py)

    @property
    def buried_ct(self) -> int:
        return len(self.buried)

    def job_count(self) -> int:
        """Jobs in this tube, in any state; each of them holds the tube alive."""
        return self.ready_ct + self.reserved_ct + self.delayed_ct + len(self.buried)


class Session:
    """One client connection somewhere in the cluster, identified by ``sid``."""

    __slots__ = (
        "sid", "used", "watch", "reserved", "deadlines",
        "wait_ticket", "wait_wake_ns", "wait_until_ns", "wait_seq", "replies", "seq_floor",
        "token",
    )

    def __init__(self, sid: int, default: Tube) -> None:
        self.sid = sid
        self.used = default
        self.watch: list[Tube] = [default]  # watch-list order, swap-remove on ignore
        self.reserved: dict[int, None] = {}  # ids of jobs this session holds
        self.deadlines: list[tuple[int, int, int]] = []  # heap of (deadline_ns, id, gen)
        self.wait_ticket = 0  # nonzero while waiting in reserve: its place in the global queue
        self.wait_wake_ns: int | None = None  # when the wait must be reconsidered
        self.wait_until_ns: int | None = None  # when the wait times out; None = forever
        self.wait_seq = 0  # seq of the waiting RESERVE, to cache its final reply
        self.replies: dict[int, tuple] = {}  # seq -> reply, for exactly-once retries
        self.seq_floor = 0  # every applied seq at or below this has been forgotten
        self.token: str | None = None  # the id that resumes this session (extensions.py)
