"""A deliberately dumb model of the job state machine, for the rule-based test to compare against.

Jobs are a list of dicts, tubes a list of names, and every question is a linear scan: reserve is
"minimum (pri, id) over ready jobs in watched, unpaused tubes"; a tube is alive while a scan finds
a session or job that refers to it; the next timer is the minimum over every job, tube and
waiter. It shares no code with ``beanraft.jobs`` except the opcodes.
"""

from __future__ import annotations

from beanraft.jobs.commands import Op

S = 1_000_000_000
TIMED_OUT, DEADLINE_SOON, WAITING, NOT_FOUND = ("TIMED_OUT",), ("DEADLINE_SOON",), \
    ("WAITING",), ("NOT_FOUND",)


class Model:
    """The whole cluster state as plain lists and dicts (one node, restartable)."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.next_id = 1
        self.jobs: list[dict] = []
        self.tubes = ["default"]
        self.tube_info = {"default": self._fresh_tube()}
        self.sessions: dict[int, dict] = {}
        self.tickets = 0
        self.burials = 0
        self.job_timeouts = 0
        self.rules = 1
        self.reservations = 0  # counts reserves: a job's "reserved_no" orders a close (rules 2)
        self.total_jobs = 0
        self.events: list = []

    @staticmethod
    def _fresh_tube() -> dict:
        return {"total": 0, "deletes": 0, "pauses": 0, "pause": 0, "until": None}

    # ---------------------------------------------------------------- tubes

    def alive(self, name: str) -> bool:
        return (name == "default" or any(j["tube"] == name for j in self.jobs)
                or any(s["used"] == name or name in s["watch"] for s in self.sessions.values()))

    def ref(self, name: str) -> None:
        if name not in self.tubes:
            self.tubes.append(name)
            self.tube_info[name] = self._fresh_tube()

    def unref(self, name: str) -> None:
        if name in self.tubes and not self.alive(name):
            index = self.tubes.index(name)
            self.tubes[index] = self.tubes[-1]
            self.tubes.pop()
            del self.tube_info[name]

    def paused(self, name: str) -> bool:
        return self.tube_info[name]["until"] is not None

    # ---------------------------------------------------------------- jobs

    def job(self, job_id: int) -> dict | None:
        return next((j for j in self.jobs if j["id"] == job_id), None)

    def to_ready(self, job: dict) -> None:
        job.update(state="ready", deadline=0, holder=None)

    def give(self, job: dict, sid: int) -> None:
        self.reservations += 1
        job.update(state="reserved", holder=sid, deadline=self.now + job["ttr"],
                   reserved_no=self.reservations)
        job["reserves"] += 1

    def expire(self, job: dict) -> None:
        job["timeouts"] += 1
        self.job_timeouts += 1
        self.to_ready(job)

    def held(self, sid: int) -> list[dict]:
        return [j for j in self.jobs if j["state"] == "reserved" and j["holder"] == sid]

    def soonest(self, sid: int) -> int | None:
        return min((j["deadline"] for j in self.held(sid)), default=None)

    def deadline_soon(self, sid: int) -> bool:
        soonest = self.soonest(sid)
        return soonest is not None and self.now >= soonest - S

    def first(self, tube: str, state: str, key) -> dict | None:
        return min((j for j in self.jobs if j["tube"] == tube and j["state"] == state),
                   key=key, default=None)

    # ---------------------------------------------------------------- waiting

    def resolve(self, sid: int, reply: tuple) -> None:
        session = self.sessions[sid]
        if session["wait"]["seq"] in session["cache"]:
            session["cache"][session["wait"]["seq"]] = reply
        session["wait"] = None
        self.events.append((sid, reply))

    def serve(self) -> None:
        while True:
            options = [j for j in self.jobs if j["state"] == "ready" and not self.paused(j["tube"])
                       and self.waiters(j["tube"])]
            if not options:
                return
            job = min(options, key=lambda j: (j["pri"], j["id"]))
            sid = min(self.waiters(job["tube"]),
                      key=lambda s: self.sessions[s]["wait"]["ticket"])
            self.give(job, sid)
            self.resolve(sid, ("RESERVED", job["id"], job["body"]))

    def waiters(self, tube: str) -> list[int]:
        return [sid for sid, s in self.sessions.items() if s["wait"] and tube in s["watch"]]

    # ---------------------------------------------------------------- timers

    def timers(self) -> list[tuple]:
        found = []
        for j in self.jobs:
            if j["state"] == "delayed":
                found.append((j["deadline"], 0, j["id"]))
            elif j["state"] == "reserved":
                found.append((j["deadline"] + 1, 1, j["id"]))
        for name in self.tubes:
            if self.paused(name):
                found.append((self.tube_info[name]["until"], 2, name))
        for s in self.sessions.values():
            if s["wait"] and s["wait"]["wake"] is not None:
                found.append((s["wait"]["wake"], 3, s["wait"]["ticket"]))
        return found

    def next_deadline(self) -> int | None:
        return min(self.timers(), default=(None,))[0]

    def fire(self, until: int) -> None:
        """Fire the timers due by ``until`` one by one, the clock standing at each one's time."""
        while True:
            due = [t for t in self.timers() if t[0] <= until]
            if not due:
                return
            when, kind, key = min(due)
            self.now = max(self.now, when)
            if kind == 0:
                self.to_ready(self.job(key))
            elif kind == 1:
                self.expire(self.job(key))
            elif kind == 2:
                self.tube_info[key].update(pause=0, until=None)
            else:
                self.wake(next(s for s, v in self.sessions.items()
                               if v["wait"] and v["wait"]["ticket"] == key))
            self.serve()

    def wake(self, sid: int) -> None:
        soon = self.deadline_soon(sid)
        for job in self.held(sid):
            if job["deadline"] < self.now:
                self.expire(job)
        wait = self.sessions[sid]["wait"]
        if soon:
            self.resolve(sid, DEADLINE_SOON)
        elif wait["until"] is not None and wait["until"] <= self.now:
            self.resolve(sid, TIMED_OUT)
        else:
            raise AssertionError("a wake-up with neither deadline soon nor a timeout")

    # ---------------------------------------------------------------- applying

    def batch(self, now: int, commands: list) -> tuple[list, list]:
        self.events = []
        self.fire(max(self.now, now))
        self.now = max(self.now, now)
        replies = []
        for op, sid, seq, *args in commands:
            replies.append(self.apply(op, sid, seq, args))
            self.serve()
        return replies, self.events

    def apply(self, op: Op, sid: int, seq: int, args: list) -> tuple:
        if op == Op.TICK:
            return ("OK",)
        if op == Op.RULES:
            if self.rules == 1 and args[0] >= 2:
                # Every session's jobs count as reserved in id order from the switch on.
                for job in sorted(self.jobs, key=lambda j: j["id"]):
                    if job["state"] == "reserved":
                        self.reservations += 1
                        job["reserved_no"] = self.reservations
            self.rules = max(self.rules, args[0])
            return ("RULES", self.rules)
        if op == Op.NODE_START:
            for old in self.sessions.values():
                old["wait"] = None  # closed by this command: no job may go to one of them
            for old in sorted(self.sessions):
                self.close(old)
            return ("EPOCH", None)  # the caller checks the epoch itself
        session = self.sessions.get(sid)
        if op == Op.OPEN and session is None:
            self.ref("default")
            self.sessions[sid] = {"used": "default", "watch": ["default"], "wait": None,
                                  "cache": {seq: ("OK",)} if seq else {}, "floor": 0}
            return ("OK",)
        if session is None:
            return ("GONE",)
        if seq and seq in session["cache"]:
            return session["cache"][seq]
        if (seq and seq <= session["floor"]) or op == Op.OPEN:
            return ("ERROR",)
        if session["wait"] and op != Op.CLOSE:
            return ("ERROR",)
        reply = getattr(self, "do_" + op.name.lower())(sid, *args)
        if op != Op.CLOSE and seq:
            session["cache"][seq] = reply
            if reply == WAITING:
                session["wait"]["seq"] = seq
            if len(session["cache"]) > 64:
                oldest = min(session["cache"])
                del session["cache"][oldest]
                session["floor"] = max(session["floor"], oldest)
        return reply

    def close(self, sid: int) -> tuple:
        session = self.sessions[sid]
        waited = session["wait"] is not None
        session["wait"] = None
        for job in sorted(self.held(sid), key=lambda j: j["reserved_no"]):
            self.to_ready(job)
            if self.rules >= 2:
                self.serve()  # 1.12 serves waiters after each job it makes ready
        watch = session["watch"]
        while watch:
            name = watch[0]
            watch[0] = watch[-1]
            watch.pop()
            self.unref(name)
        used, session["used"] = session["used"], None
        self.unref(used)
        del self.sessions[sid]
        return TIMED_OUT if waited else ("OK",)

    do_close = close

    # ---------------------------------------------------------------- commands

    def do_put(self, sid: int, pri: int, delay: int, ttr: int, body: bytes) -> tuple:
        tube = self.sessions[sid]["used"]
        job = {"id": self.next_id, "tube": tube, "pri": pri, "delay": delay,
               "ttr": max(ttr, S), "body": body, "created": self.now, "holder": None,
               "reserves": 0, "timeouts": 0, "releases": 0, "buries": 0, "kicks": 0}
        self.next_id += 1
        if delay:
            job.update(state="delayed", deadline=self.now + delay)
        else:
            job.update(state="ready", deadline=0)
        self.jobs.append(job)
        self.tube_info[tube]["total"] += 1
        self.total_jobs += 1
        return ("INSERTED", job["id"])

    def do_burn_id(self, sid: int) -> tuple:
        self.next_id += 1
        return ("OK",)

    def do_use(self, sid: int, name: str) -> tuple:
        self.ref(name)
        old, self.sessions[sid]["used"] = self.sessions[sid]["used"], name
        self.unref(old)
        return ("USING", name)

    def do_watch(self, sid: int, name: str) -> tuple:
        watch = self.sessions[sid]["watch"]
        if name not in watch:
            self.ref(name)
            watch.append(name)
        return ("WATCHING", len(watch))

    def do_ignore(self, sid: int, name: str) -> tuple:
        watch = self.sessions[sid]["watch"]
        if name in watch:
            if len(watch) == 1:
                return ("NOT_IGNORED",)
            index = watch.index(name)
            watch[index] = watch[-1]
            watch.pop()
            self.unref(name)
        return ("WATCHING", len(watch))

    def do_reserve(self, sid: int, timeout: int) -> tuple:
        watch = self.sessions[sid]["watch"]
        if self.deadline_soon(sid) and not any(
                j["state"] == "ready" and j["tube"] in watch for j in self.jobs):
            return DEADLINE_SOON
        options = [j for j in self.jobs if j["state"] == "ready" and j["tube"] in watch
                   and not self.paused(j["tube"])]
        if options:
            job = min(options, key=lambda j: (j["pri"], j["id"]))
            self.give(job, sid)
            return ("RESERVED", job["id"], job["body"])
        if timeout == 0:
            return DEADLINE_SOON if self.rules >= 2 and self.deadline_soon(sid) else TIMED_OUT
        until = None if timeout < 0 else self.now + timeout
        soonest = self.soonest(sid)
        wake = min([t for t in (until, soonest and soonest - S) if t is not None], default=None)
        if wake is not None and wake <= self.now:
            return DEADLINE_SOON
        self.tickets += 1
        self.sessions[sid]["wait"] = {"ticket": self.tickets, "until": until, "wake": wake,
                                      "seq": 0}
        return WAITING

    def do_reserve_job(self, sid: int, job_id: int) -> tuple:
        job = self.job(job_id)
        if job is None or job["state"] == "reserved":
            return NOT_FOUND
        self.give(job, sid)
        return ("RESERVED", job["id"], job["body"])

    def mine(self, sid: int, job_id: int) -> dict | None:
        job = self.job(job_id)
        return job if job and job["state"] == "reserved" and job["holder"] == sid else None

    def do_delete(self, sid: int, job_id: int) -> tuple:
        job = self.job(job_id)
        if job is None or (job["state"] == "reserved" and job["holder"] != sid):
            return NOT_FOUND
        self.jobs.remove(job)
        self.tube_info[job["tube"]]["deletes"] += 1
        self.unref(job["tube"])
        return ("DELETED",)

    def do_release(self, sid: int, job_id: int, pri: int, delay: int) -> tuple:
        job = self.mine(sid, job_id)
        if job is None:
            return NOT_FOUND
        job.update(pri=pri, delay=delay, releases=job["releases"] + 1, holder=None)
        if delay:
            job.update(state="delayed", deadline=self.now + delay)
        else:
            self.to_ready(job)
        return ("RELEASED",)

    def do_bury(self, sid: int, job_id: int, pri: int) -> tuple:
        job = self.mine(sid, job_id)
        if job is None:
            return NOT_FOUND
        self.burials += 1
        job.update(pri=pri, buries=job["buries"] + 1, state="buried", holder=None, deadline=0,
                   buried_at=self.burials)
        return ("BURIED",)

    def do_touch(self, sid: int, job_id: int) -> tuple:
        job = self.mine(sid, job_id)
        if job is None:
            return NOT_FOUND
        job["deadline"] = self.now + job["ttr"]
        return ("TOUCHED",)

    def kick_one(self, job: dict) -> None:
        job["kicks"] += 1
        self.to_ready(job)

    def do_kick(self, sid: int, bound: int) -> tuple:
        tube = self.sessions[sid]["used"]
        count = 0
        state, key = ("buried", lambda j: j["buried_at"])
        if self.first(tube, "buried", key) is None:
            state, key = ("delayed", lambda j: (j["deadline"], j["id"]))
        while count < bound and (job := self.first(tube, state, key)) is not None:
            self.kick_one(job)
            count += 1
            if self.rules >= 2:
                self.serve()
        return ("KICKED", count)

    def do_kick_job(self, sid: int, job_id: int) -> tuple:
        job = self.job(job_id)
        if job is None or job["state"] not in ("buried", "delayed"):
            return NOT_FOUND
        self.kick_one(job)
        return ("KICKED",)

    def do_pause_tube(self, sid: int, name: str, delay: int) -> tuple:
        if name not in self.tubes:
            return NOT_FOUND
        info = self.tube_info[name]
        if delay == 0:  # unpauses at once (beanstalkd's 1 ns pause is over by its next command)
            info.update(pause=0, until=None, pauses=info["pauses"] + 1)
        else:
            info.update(pause=delay, until=self.now + delay, pauses=info["pauses"] + 1)
        return ("PAUSED",)
