"""The state machine agrees with a deliberately dumb model on every reply, event and observable.

Method: rules drive several sessions through put, reserve (every kind of timeout), reserve-job,
delete, release, bury, touch, kick, kick-job, pause, use, watch, ignore, close, retried seqs,
node restarts, snapshot round trips and time steps that land on and next to timer boundaries.
After each step the machine is compared with ``jobs_model.Model`` (lists and linear scans) and
its internal invariants are checked. Hypothesis explores short programs and shrinks failures;
seeded random walks over the same rules reach the deep states short programs rarely do.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from jobs_model import Model

from beanraft.jobs.commands import Op
from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine

S = 1_000_000_000
T0 = 1_700_000_000 * S
TUBE_NAMES = ["default", "default", "a", "a", "b", "c"]
PRI_VALUES = [0, 1, 5, 1023, 1024, 2**32 - 1]
DELAY_VALUES = [0, 0, S, 2 * S]
TTR_VALUES = [0, S, 2 * S, 3 * S]
TIMEOUT_VALUES = [-1, 0, 0, S, 2 * S]
STEP_VALUES = [0, 1, S // 2, S - 1, S, S + 1, 2 * S, 5 * S]
TUBE_OPS = [Op.USE, Op.WATCH, Op.WATCH, Op.IGNORE, Op.PAUSE_TUBE]
JOB_OPS = [Op.RESERVE_JOB, Op.DELETE, Op.KICK_JOB, Op.TOUCH, Op.RELEASE, Op.BURY, Op.BURN_ID]
WORK_OPS = [Op.BURY, Op.RELEASE, Op.DELETE, Op.TOUCH, None]
WHO = st.integers(0, 9)  # 0-7 pick an open session, 8-9 a closed one
JOB = st.integers(0, 29)  # 0-24 pick an existing job, 25-29 stand for themselves
RARELY = st.integers(0, 15)  # disruptive rules act only when this draws 0


class MachineVersusModel(RuleBasedStateMachine):
    """Applies each step to both and compares (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = Machine()
        self.model = Model(T0)
        self.now = T0
        self.epoch = self.machine.apply_batch(T0, [(Op.NODE_START, 0, 0, "n")])[0][0][1]
        self.counter = 0
        self.closed: list[int] = []
        self.seqs: dict[int, int] = {}
        self.last: dict[int, tuple] = {}

    # ------------------------------------------------------------ plumbing

    def run(self, commands: list) -> list:
        got_replies, got_events = self.machine.apply_batch(self.now, commands)
        want_replies, want_events = self.model.batch(self.now, commands)
        for got, want in zip(got_replies, want_replies, strict=True):
            if want[0] in ("ERROR", "EPOCH"):
                assert got[0] == want[0], (got, want)
            else:
                assert got == want
        assert got_events == want_events
        return got_replies

    def pick(self, who: int) -> int | None:
        choices = sorted(self.model.sessions) if who < 8 else self.closed[-2:]
        return choices[who % len(choices)] if choices else None

    def job_id(self, n: int, sid: int | None) -> int:
        """Job ``n``: preferably one ``sid`` holds, else any job, else ``n`` itself."""
        held = self.model.held(sid) if sid is not None else []
        jobs = held if held and n < 20 else self.model.jobs
        return jobs[n % len(jobs)]["id"] if jobs and n < 25 else n

    def command(self, sid: int | None, op: Op, *args) -> tuple | None:
        if sid is None:
            return None
        self.seqs[sid] = self.seqs.get(sid, 0) + 1
        self.last[sid] = (op, sid, self.seqs[sid], *args)
        (reply,) = self.run([self.last[sid]])
        if op == Op.CLOSE and sid not in self.model.sessions and sid not in self.closed:
            self.closed.append(sid)
        return reply

    # ------------------------------------------------------------ sessions

    @initialize()
    def open_three_sessions(self) -> None:
        for _ in range(3):
            self.open_session()

    @precondition(lambda self: len(self.model.sessions) < 4)
    @rule()
    def open_session(self) -> None:
        self.counter += 1
        sid = (self.epoch << 32) | self.counter
        self.seqs[sid] = 1
        self.run([(Op.OPEN, sid, 1)])

    @rule(who=WHO, coin=st.integers(0, 3))
    def close(self, who, coin):
        if coin == 0:
            self.command(self.pick(who), Op.CLOSE)

    @rule(coin=RARELY)
    def restart_node(self, coin) -> None:
        if coin == 0:
            self.closed += sorted(self.model.sessions)
            self.epoch = self.run([(Op.NODE_START, 0, 0, "n")])[0][1]

    @rule(coin=RARELY)
    def switch_rules(self, coin) -> None:
        if coin == 0:
            self.run([(Op.RULES, 0, 0, 2)])

    @rule(who=WHO)
    def retry_last_command(self, who):
        sid = self.pick(who)
        if sid in self.last:
            self.run([self.last[sid]])

    # ------------------------------------------------------------ commands

    @rule(who=WHO, jobs=st.lists(st.tuples(st.sampled_from(PRI_VALUES),
                                           st.sampled_from(DELAY_VALUES),
                                           st.sampled_from(TTR_VALUES)), min_size=1, max_size=3))
    def put(self, who, jobs):
        """One put with a seq, or several in one batch without (seq 0)."""
        sid = self.pick(who)
        if sid is not None and len(jobs) == 1:
            self.command(sid, Op.PUT, *jobs[0], b"j")
        elif sid is not None:
            self.run([(Op.PUT, sid, 0, pri, delay, ttr, b"b") for pri, delay, ttr in jobs])

    @rule(who=WHO, op=st.sampled_from(TUBE_OPS), tube=st.sampled_from(TUBE_NAMES),
          delay=st.sampled_from([0, S, 3 * S]))
    def tube_command(self, who, op, tube, delay):
        self.command(self.pick(who), op, tube, *((delay,) if op == Op.PAUSE_TUBE else ()))

    @rule(who=WHO, timeout=st.sampled_from(TIMEOUT_VALUES))
    def reserve(self, who, timeout):
        self.command(self.pick(who), Op.RESERVE, timeout)

    @rule(who=WHO, action=st.sampled_from(WORK_OPS), pri=st.sampled_from(PRI_VALUES),
          delay=st.sampled_from(DELAY_VALUES))
    def reserve_and_work(self, who, action, pri, delay):
        """A worker's usual cycle: reserve at once, then bury, release, delete or touch."""
        sid = self.pick(who)
        reply = self.command(sid, Op.RESERVE, 0)
        if action is not None and reply is not None and reply[0] == "RESERVED":
            args = {Op.BURY: (pri,), Op.RELEASE: (pri, delay)}.get(action, ())
            self.command(sid, action, reply[1], *args)

    @rule(who=WHO, op=st.sampled_from(JOB_OPS), job=JOB, pri=st.sampled_from(PRI_VALUES),
          delay=st.sampled_from(DELAY_VALUES))
    def job_command(self, who, op, job, pri, delay):
        sid = self.pick(who)
        args = {Op.BURY: (pri,), Op.RELEASE: (pri, delay), Op.BURN_ID: ()}.get(op, ())
        self.command(sid, op, *(() if op == Op.BURN_ID else (self.job_id(job, sid),)), *args)

    @rule(who=WHO, bound=st.sampled_from([0, 1, 2, 100]))
    def kick(self, who, bound):
        self.command(self.pick(who), Op.KICK, bound)

    # ------------------------------------------------------------ time and snapshots

    @rule(step=st.sampled_from(STEP_VALUES))
    def advance(self, step):
        self.now += step
        self.run([(Op.TICK, 0, 0)])

    @rule(offset=st.sampled_from([-1, 0]))
    def advance_to_next_timer(self, offset):
        deadline = self.model.next_deadline()
        if deadline is not None:
            self.now = max(self.now, deadline + offset)
            self.run([])

    @rule()
    def snapshot_round_trip(self):
        data = self.machine.snapshot()
        self.machine = Machine.restore(data)
        assert self.machine.snapshot() == data

    # ------------------------------------------------------------ comparison

    @invariant()
    def machine_is_consistent(self):
        assert problems(self.machine) == []

    @invariant()
    def jobs_agree(self):
        m, model = self.machine, self.model
        assert list(m.jobs) == [j["id"] for j in model.jobs]
        for j in model.jobs:
            stats = dict(m.stats_job(j["id"], self.now))
            left = (j["deadline"] - self.now) if j["state"] in ("reserved", "delayed") else 0
            assert stats == {
                "id": j["id"], "tube": j["tube"], "state": j["state"], "pri": j["pri"],
                "age": (self.now - j["created"]) // S, "delay": j["delay"] // S,
                "ttr": j["ttr"] // S, "time-left": int(left / S), "file": 0,
                "reserves": j["reserves"], "timeouts": j["timeouts"],
                "releases": j["releases"], "buries": j["buries"], "kicks": j["kicks"]}
        counts = {state: sum(j["state"] == state for j in model.jobs)
                  for state in ("ready", "reserved", "delayed", "buried")}
        assert m.job_counts() == counts
        assert m.next_deadline_ns() == model.next_deadline()
        assert m.stats_global()["job-timeouts"] == model.job_timeouts
        assert m.stats_global()["total-jobs"] == model.total_jobs

    @invariant()
    def tubes_and_sessions_agree(self):
        m, model = self.machine, self.model
        assert m.list_tubes() == model.tubes
        for name in model.tubes:
            info, stats = model.tube_info[name], dict(m.stats_tube(name, self.now))
            assert (stats["total-jobs"], stats["cmd-delete"], stats["cmd-pause-tube"],
                    stats["pause"]) == (info["total"], info["deletes"], info["pauses"],
                                        info["pause"] // S)
            assert stats["current-waiting"] == len(model.waiters(name))
        assert sorted(m.sessions) == sorted(model.sessions)
        for sid, session in model.sessions.items():
            assert m.list_tube_used(sid) == session["used"]
            assert m.list_tubes_watched(sid) == session["watch"]
            assert m.is_waiting(sid) == (session["wait"] is not None)
            self.peeks_agree(sid, session["used"])

    def peeks_agree(self, sid: int, tube: str) -> None:
        model = self.model
        for peek, state, key in [
                (self.machine.peek_ready, "ready", lambda j: (j["pri"], j["id"])),
                (self.machine.peek_delayed, "delayed", lambda j: (j["deadline"], j["id"])),
                (self.machine.peek_buried, "buried", lambda j: j["buried_at"])]:
            job = model.first(tube, state, key)
            assert peek(sid) == (("NOT_FOUND",) if job is None else
                                 ("FOUND", job["id"], job["body"]))

    def check_all(self) -> None:
        self.machine_is_consistent()
        self.jobs_agree()
        self.tubes_and_sessions_agree()


MachineVersusModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None)
test_machine_agrees_with_the_dumb_model = MachineVersusModel.TestCase

# Rule name -> (weight, argument choosers) for the random walks.
_WALK = {
    "open_session": (3, {}),
    "close": (2, {"coin": [0]}),
    "restart_node": (1, {"coin": [0]}),
    "switch_rules": (1, {"coin": [0]}),
    "retry_last_command": (3, {}),
    "put": (7, {"jobs": lambda r: [(r.choice(PRI_VALUES), r.choice(DELAY_VALUES),
                                     r.choice(TTR_VALUES)) for _ in range(r.randint(1, 3))]}),
    "tube_command": (8, {"op": TUBE_OPS, "tube": TUBE_NAMES, "delay": [0, S, 3 * S]}),
    "reserve": (10, {"timeout": TIMEOUT_VALUES}),
    "reserve_and_work": (12, {"action": WORK_OPS, "pri": PRI_VALUES, "delay": DELAY_VALUES}),
    "job_command": (10, {"op": JOB_OPS, "job": range(30), "pri": PRI_VALUES,
                         "delay": DELAY_VALUES}),
    "kick": (4, {"bound": [0, 1, 2, 100]}),
    "advance": (12, {"step": STEP_VALUES}),
    "advance_to_next_timer": (8, {"offset": [-1, 0]}),
    "snapshot_round_trip": (1, {}),
}


def test_long_random_walks_agree_with_the_dumb_model():
    for seed in range(60):
        rng = random.Random(seed)
        walk = MachineVersusModel()
        walk.open_three_sessions()
        names = list(_WALK)
        weights = [_WALK[name][0] for name in names]
        for step in range(500):
            name = rng.choices(names, weights)[0]
            if len(walk.model.sessions) < 2:
                name = "open_session"
            if name == "open_session" and len(walk.model.sessions) >= 4:
                continue
            args = {key: (chooser(rng) if callable(chooser) else rng.choice(chooser))
                    for key, chooser in _WALK[name][1].items()}
            if name not in ("restart_node", "switch_rules", "advance", "advance_to_next_timer",
                            "snapshot_round_trip", "open_session"):
                args["who"] = rng.randrange(10)
            getattr(walk, name)(**args)
            if step % 10 == 0:
                walk.check_all()
        walk.check_all()
